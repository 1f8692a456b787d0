"""One call from Python, as users of fer (``detect_emotions``) and DeepFace (``analyze``) expect it.

``analyze(image)`` and :class:`Analyzer` are ``run``'s pipeline in photo mode (the detector, alignment and
macro model that ``run --source photo.jpg`` uses, every image on its own: no tracks, smoothing or windows
carried from one call to the next), not a second pipeline, so a face gets the same box and probabilities
here as in ``run``'s JSONL. Example (the bundled astronaut photo)::

    >>> import emonas_edge as ee
    >>> from emonas_edge.pipeline.analyze import ASTRONAUT
    >>> faces = ee.analyze(ASTRONAUT)
    >>> len(faces), faces[0]["label"] in faces[0]["macro"], len(faces[0]["box"])
    (1, True, 4)
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import UserError
from .loop import PipelineSettings
from .runner import LoadedPipeline, build_pipeline
from .sources import Frame

COLORS = ("bgr", "rgb")
ASTRONAUT = Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"  # the bundled public-domain photo


class Analyzer:
    """Models and detector loaded once for many calls (``with Analyzer() as a: a(img1); a(img2)``).

    Images: a path, a NumPy array (H×W×3 uint8 in ``color`` order, BGR by default as OpenCV reads them,
    or H×W gray), or a PIL image. Each face: ``box`` [x1, y1, x2, y2] in pixels, ``score``,
    ``landmarks`` (eye keypoints found), ``macro`` (class → probability), ``label`` (the most likely class),
    and ``file`` when the image came from a path.
    """

    def __init__(
        self,
        macro: str | os.PathLike = "emonas-macro",
        *,
        detector: str = "auto",
        min_confidence: float = 0.4,
        min_face: int = 24,
        max_faces: int = 8,  # as run's default
        threads: int | None = 1,
        allow_untrained: bool = False,
        color: str = "bgr",
    ):
        if color not in COLORS:
            raise UserError(f"color must be one of {', '.join(COLORS)}, got {color!r}")
        self.color = color
        settings = PipelineSettings(max_faces=max_faces, track=False)
        self._built: LoadedPipeline = build_pipeline(
            macro,
            None,
            detector=detector,
            min_confidence=min_confidence,
            min_face=min_face,
            allow_untrained=allow_untrained,
            threads=threads,
            settings=settings,
            photos=True,
        )
        self.notes = self._built.notes

    def __call__(self, image, color: str | None = None) -> list[dict]:
        frame = Frame(0, 0.0, *_as_bgr(image, color or self.color))
        row = self._built.pipeline.process(frame).to_json()
        faces = []
        for f in row["faces"]:
            face = {k: f[k] for k in ("box", "score", "landmarks", "macro")}
            face["label"] = max(f["macro"], key=f["macro"].get) if f["macro"] else None
            if "untrained" in f:
                face["untrained"] = f["untrained"]
            if frame.file is not None:
                face["file"] = frame.file
            faces.append(face)
        return faces

    def batch(self, images, color: str | None = None) -> list[list[dict]]:
        """One list of faces per image, in order."""
        return [self(image, color) for image in images]

    def close(self) -> None:
        self._built.pipeline.detector.close()

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def analyze(image, **settings) -> list[dict] | list[list[dict]]:
    """The faces of one image (a list of dicts, see :class:`Analyzer`), or of each image of a list or tuple.

    Loads the models for this call: for many images keep an :class:`Analyzer`."""
    with Analyzer(**settings) as a:
        return a.batch(image) if isinstance(image, list | tuple) else a(image)


def _as_bgr(image, color: str) -> tuple[np.ndarray, str | None]:
    """``(BGR uint8 image, its file or None)``."""
    if isinstance(image, str | os.PathLike):
        from ..data.preprocess import read_image

        path = Path(image)
        if not path.is_file():
            raise UserError(f"{path}: no such image file")
        img = read_image(path)
        if img is None:
            raise UserError(f"{path}: not a readable image")
        return (cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img), str(path)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image, without importing PIL
        image, color = np.asarray(image.convert("RGB")), "rgb"
    if not isinstance(image, np.ndarray):
        raise UserError(f"expected an image path, a NumPy array or a PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise UserError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), None
    if image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"expected an H×W×3 or H×W image, got shape {image.shape}")
    return (cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if color == "rgb" else np.ascontiguousarray(image)), None
