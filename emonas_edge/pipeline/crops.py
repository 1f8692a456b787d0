"""Training crops made by the runtime's own face detector and aligner.

A network meets faces framed by the pipeline (BlazeFace, eye-template alignment). Datasets of
whole photos (RAF-DB originals, CK+ frames, one's own recordings) cropped some other way teach
it a framing it never sees at run time; cropping them here removes that mismatch. The output
mirrors the input tree (class folders stay class folders), so it loads like any dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import cv2

from .. import __version__
from ..config import ModelConfig
from ..data.preprocess import IMAGE_SUFFIXES, read_image
from ..errors import UserError
from ..faces.align import Aligner
from ..faces.detect import create_detector
from ..fileio import atomic_folder

REPORT = "crops.json"


def _images_under(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def crop_faces(
    source: str | os.PathLike,
    output: str | os.PathLike,
    config: ModelConfig,
    *,
    size: int | None = None,
    detector: str = "auto",
    min_confidence: float = 0.4,
    min_face: int = 24,
    margin: float = 0.0,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Crop the largest face of every image under ``source`` into ``output`` (same tree, .png).

    Crops have the model's input size (or ``size``) and colour mode. ``auto`` uses the full-range
    BlazeFace here: photos hold faces of any size, and speed matters less than finding them and
    placing their eyes right. Images without a face, unreadable ones and those with several faces
    (the largest is kept) are counted and listed in ``output/crops.json``. Nothing is left behind
    unless it finishes: the tree is built in a hidden folder and renamed into place.
    """
    src, out = Path(source), Path(output)
    if not src.is_dir():
        raise UserError(f"image folder not found: {src}")
    if size is not None and not 16 <= size <= 1024:
        raise UserError(f"--size must be from 16 to 1024, got {size}")
    out_abs, src_abs = out.resolve(), src.resolve()
    if out_abs == src_abs or src_abs in out_abs.parents or out_abs in src_abs.parents:
        raise UserError(f"--out {out} must be outside the source folder {src} (and not contain it)")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    files = _images_under(src)
    if not files:
        raise UserError(f"{src} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")

    aligner = Aligner(config, margin=margin, max_faces=1, size=size)
    no_face: list[str] = []
    unreadable: list[str] = []
    several: list[str] = []
    written = 0
    with (
        create_detector(detector, min_confidence, min_face, auto_full_range=True) as det,
        atomic_folder(out, replace=overwrite) as tmp,
    ):
        for i, f in enumerate(files):
            rel = f.relative_to(src)
            img = read_image(f)
            if img is None:
                unreadable.append(str(rel))
            else:
                dets = det.detect(img)
                if not dets:
                    no_face.append(str(rel))
                else:
                    if len(dets) > 1:
                        several.append(str(rel))
                    crop = aligner.align_one(img, max(dets, key=lambda d: d.area))
                    target = (tmp / rel).with_suffix(".png")
                    if target.exists():  # face.jpg beside face.png: keep both
                        target = (tmp / rel).with_name(rel.name + ".png")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    pixels = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
                    if not cv2.imwrite(str(target), pixels):
                        raise UserError(f"could not write {target}")
                    written += 1
            if progress:
                progress(i + 1, len(files))
        if written == 0:
            raise UserError(f"{src}: no face found in any of {len(files)} images ({len(unreadable)} unreadable)")
        report = {
            "format": "emonas-crops/1",
            "source": str(src),
            "images": len(files),
            "written": written,
            "no_face": len(no_face),
            "unreadable": len(unreadable),
            "several_faces": len(several),
            "per_folder": _per_folder(tmp),
            "settings": {
                "model": config.name,
                "size": aligner.size,
                "gray": aligner.gray,
                "detector": det.name,
                "min_confidence": min_confidence,
                "min_face": min_face,
                "margin": margin,
            },
            "files": {"no_face": no_face, "unreadable": unreadable, "several_faces": several},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "emonas_edge": __version__,
        }
        (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _per_folder(root: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in root.rglob("*.png"):
        key = str(p.parent.relative_to(root)) or "."
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


__all__ = ["crop_faces", "REPORT"]
