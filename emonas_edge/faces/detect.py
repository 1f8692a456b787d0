"""Face detection: MediaPipe BlazeFace (default) with an OpenCV Haar-cascade fallback.

BlazeFace gives eye keypoints, which alignment needs for a rotation-corrected crop; Haar gives
only a box. Two BlazeFace models are bundled: short-range (128x128 input, the default) is made
for faces within ~2 m of a webcam and is about twice as fast; full-range (192x192, sparse) keeps
finding faces half that size and places boxes and eyes of small faces correctly (group photos,
robots looking across a room), where short-range misses them or misplaces their eyes. All return
the same :class:`Detection` so nothing downstream cares which ran. Detectors take the BGR frame
as read and allocate nothing per frame beyond the detector's own.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import MissingDependency, UserError

_ASSETS = Path(__file__).resolve().parents[1] / "assets"
BLAZEFACE_MODEL = _ASSETS / "face_detection_short_range.tflite"
BLAZEFACE_FULL_MODEL = _ASSETS / "face_detection_full_range_sparse.tflite"


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what native code (LiteRT, glog) writes straight to file descriptor 2.

    MediaPipe logs a dozen INFO lines when a detector starts and stops, which would bury our
    one-line messages; Python-level errors still surface as exceptions.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def aligned_empty(shape: tuple[int, ...], align: int = 64) -> np.ndarray:
    """uint8 array on an ``align``-byte boundary: LiteRT copies any input that is not."""
    n = int(np.prod(shape))
    raw = np.empty(n + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off : off + n].reshape(shape)


@dataclass
class Detection:
    box: np.ndarray  # float32 [x1, y1, x2, y2] in frame pixels
    score: float
    # float32 (2, 2): the subject's right eye then left eye (image left, then image right for a
    # frontal face), in frame pixels; None when the detector gives no landmarks
    eyes: np.ndarray | None = None

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box.tolist()
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


class FaceDetector:
    name = "base"

    def __init__(self, min_confidence: float = 0.4, min_size: int = 24):
        if not 0.0 <= min_confidence <= 1.0:
            raise UserError(f"--min-confidence must be in [0, 1], got {min_confidence}")
        if min_size < 1:
            raise UserError(f"--min-face must be at least 1 pixel, got {min_size}")
        self.min_confidence = min_confidence
        self.min_size = min_size

    def detect(self, frame: np.ndarray) -> list[Detection]:  # pragma: no cover - interface
        raise NotImplementedError

    def _keep(self, dets: list[Detection]) -> list[Detection]:
        return [d for d in dets if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= self.min_size]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def plausible_face(box: np.ndarray, kp: np.ndarray, max_roll: float = 45.0) -> bool:
    """Do BlazeFace's keypoints sit like a face's? Rejects skin-coloured textures and lettering.

    Measured in units of the box width along the face's own axes: real faces in our media
    (frontal, roll up to 35 degrees) have eye distance 0.32-0.49, nose 0.17-0.27 below the eyes,
    mouth 0.12-0.25 below the nose, roll within 35 degrees; BlazeFace's false positives on sky
    and lettering (scores up to 0.61) had eye distances under 0.25 or rolls of 50-70 degrees.
    The bounds leave a margin on the real-face side; heads rolled past ``max_roll`` are dropped.
    """
    w = float(box[2] - box[0])
    if w <= 1:
        return False
    re, le, nose, mouth = kp[0], kp[1], kp[2], kp[3]
    axis = le - re
    ed = float(np.hypot(*axis))
    if not 0.25 * w <= ed <= 0.65 * w:
        return False
    if abs(np.degrees(np.arctan2(axis[1], axis[0]))) > max_roll:
        return False
    ex = axis / ed
    ey = np.array([-ex[1], ex[0]])  # points down the face
    mid = (re + le) / 2
    nose_down = float(np.dot(nose - mid, ey)) / w
    mouth_down = float(np.dot(mouth - nose, ey)) / w
    return nose_down >= 0.10 and mouth_down >= 0.08


class MediaPipeDetector(FaceDetector):
    """BlazeFace through the MediaPipe Tasks API (image mode: frames need no timestamps).

    ``full_range`` picks the bundled full-range model (named ``mediapipe-full``); ``model_path``
    loads any other BlazeFace ``.tflite``.
    """

    name = "mediapipe"

    def __init__(
        self,
        min_confidence: float = 0.4,
        min_size: int = 24,
        model_path: str | Path | None = None,
        landmark_check: bool = True,
        full_range: bool = False,
    ):
        super().__init__(min_confidence, min_size)
        if full_range:
            self.name = "mediapipe-full"
        self.landmark_check = landmark_check
        self.rejected = 0
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as e:
            raise MissingDependency("mediapipe", "the MediaPipe face detector", "mediapipe") from e
        path = Path(model_path or (BLAZEFACE_FULL_MODEL if full_range else BLAZEFACE_MODEL))
        if not path.is_file():
            raise UserError(f"{path}: face detector model not found")
        opts = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=float(min_confidence),
        )
        try:
            with quiet_native_stderr():
                self._det = vision.FaceDetector.create_from_options(opts)
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{path}: not a usable face detector model ({' '.join(str(e).split())[:200]})") from e
        self._mp = mp
        self._rgb: np.ndarray | None = None
        self._quiet_calls = 3
        # mediapipe closes through a thread pool that is shut down at interpreter exit, and its own
        # __del__ then prints a traceback; close before that pool goes (threading's exit hooks run
        # newest first, so this one runs before concurrent.futures' shutdown)
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            detector = ref()
            if detector is not None:
                detector.close()

        register = getattr(threading, "_register_atexit", atexit.register)
        register(close_at_exit)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        if self._rgb is None or self._rgb.shape[:2] != (h, w):
            self._rgb = aligned_empty((h, w, 3))
        if frame.ndim == 2:
            cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB, dst=self._rgb)
        else:
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=self._rgb)
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=self._rgb)
        if self._quiet_calls:  # LiteRT logs its set-up around the first inferences
            self._quiet_calls -= 1
            with quiet_native_stderr():
                result = self._det.detect(image)
        else:
            result = self._det.detect(image)
        out = []
        for d in result.detections:
            b = d.bounding_box
            box = np.array([b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height], np.float32)
            eyes = None
            if len(d.keypoints) >= 4:
                kp = np.array([[k.x * w, k.y * h] for k in d.keypoints[:4]], np.float32)
                if self.landmark_check and not plausible_face(box, kp):
                    self.rejected += 1
                    continue
                eyes = kp[:2].copy()
            out.append(Detection(box, float(d.categories[0].score) if d.categories else 1.0, eyes))
        return self._keep(out)

    def close(self) -> None:
        det, self._det = getattr(self, "_det", None), None
        if det is not None:
            with quiet_native_stderr():
                det.close()


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face cascade: no landmarks and no real confidence, but no extra dependency."""

    name = "haar"

    def __init__(self, min_confidence: float = 0.4, min_size: int = 24, scale: float = 1.1, neighbors: int = 5):
        super().__init__(min_confidence, min_size)
        if not hasattr(cv2, "CascadeClassifier"):
            raise UserError(
                f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 dropped it); "
                "install opencv-python-headless<5"
            )
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]  # not in cv2's stubs
        self._casc = cv2.CascadeClassifier(str(path))
        if self._casc.empty():
            raise UserError(f"{path}: OpenCV Haar cascade could not be loaded")
        self.scale, self.neighbors = scale, neighbors
        self._gray: np.ndarray | None = None

    def detect(self, frame: np.ndarray) -> list[Detection]:
        if frame.ndim == 2:
            gray = frame
        else:
            if self._gray is None or self._gray.shape != frame.shape[:2]:
                self._gray = np.empty(frame.shape[:2], np.uint8)
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY, dst=self._gray)
        rects, _, weights = self._casc.detectMultiScale3(
            gray, self.scale, self.neighbors, minSize=(self.min_size, self.min_size), outputRejectLevels=True
        )
        out = []
        for (x, y, w, h), wt in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True):
            # the cascade's level weight is not a probability; squash it to (0, 1) for display only
            score = float(1.0 / (1.0 + np.exp(-float(wt))))
            out.append(Detection(np.array([x, y, x + w, y + h], np.float32), score, None))
        return self._keep(out)


DETECTORS = ("auto", "mediapipe", "mediapipe-full", "haar")


def mediapipe_available() -> bool:
    try:
        import mediapipe  # noqa: F401
        from mediapipe.tasks.python import vision  # noqa: F401
    except ImportError:
        return False
    return True


def create_detector(
    name: str = "auto",
    min_confidence: float = 0.4,
    min_size: int = 24,
    landmark_check: bool = True,
    auto_full_range: bool = False,
) -> FaceDetector:
    """``auto``: MediaPipe when installed (short-range, or full-range with ``auto_full_range``:
    offline work that prefers finding small faces to speed), else the Haar cascade;
    ``mediapipe-full``: the full-range BlazeFace, for small or distant faces."""
    name = name.lower()
    if name not in DETECTORS:
        raise UserError(f"unknown face detector {name!r} (choose from: {', '.join(DETECTORS)})")
    if name == "auto" and mediapipe_available():
        name = "mediapipe-full" if auto_full_range else "mediapipe"
    if name in ("mediapipe", "mediapipe-full"):
        return MediaPipeDetector(
            min_confidence, min_size, landmark_check=landmark_check, full_range=name == "mediapipe-full"
        )
    return HaarDetector(min_confidence, min_size)
