"""Test and benchmark clips with many moving faces, assembled from real photos and a real clip.

No licensed multi-face video ships with the project, so one is built: a grid of tiles at one frame
size, each tile a real face that moves (the single-face clip itself, or a photo's face panned and
zoomed a little every frame, some mirrored), the remaining tiles a real clip without faces. Clips with
1, 4 or 9 faces therefore share frame size and background work (decode, detection), and the difference
in their frame rates is what each added face costs.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from ..errors import UserError

# photos with one face, and where it is (x1, y1, x2, y2 in the photo, as BlazeFace full-range boxes them)
PHOTO_FACES = {
    "obama.jpg": (353, 133, 641, 421),
    "justin.jpg": (99, 105, 278, 284),
    "single_face.jpg": (162, 176, 381, 395),
}


def _read_clip(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    if not frames:
        raise UserError(f"{path}: no frames could be read")
    return frames


def _photo_tile(photo: np.ndarray, face, tile: tuple[int, int], t: int, phase: float) -> np.ndarray:
    """The photo's face framed into the tile, drifting and zooming slowly with time ``t`` (frames)."""
    tw, th = tile
    x1, y1, x2, y2 = face
    fh = y2 - y1
    zoom = 1.0 + 0.06 * math.sin(2 * math.pi * t / 75 + phase)
    crop_h = 2.2 * fh / zoom
    scale = th / crop_h
    cx = (x1 + x2) / 2 + 0.12 * fh * math.sin(2 * math.pi * t / 60 + phase)
    cy = (y1 + y2) / 2 + 0.08 * fh * math.cos(2 * math.pi * t / 90 + phase)
    m = np.array([[scale, 0, tw / 2 - scale * cx], [0, scale, th / 2 - scale * cy]], np.float32)
    return cv2.warpAffine(
        photo, m, (tw, th), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128)
    )


def grid_clip(
    media: str | Path, out: str | Path, faces: int = 4, grid: int = 3, frames: int = 90, size=(1280, 720)
) -> Path:
    """Write ``out`` (mp4v): a ``grid`` x ``grid`` clip of ``size`` with ``faces`` moving faces (1 to grid²)."""
    media, out = Path(media), Path(out)
    if not 1 <= faces <= grid * grid:
        raise UserError(f"a {grid}x{grid} grid holds 1 to {grid * grid} faces, not {faces}")
    clip = _read_clip(media / "single_face.mp4")
    empty = _read_clip(media / "no_face.mp4")
    photos: dict[str, np.ndarray] = {}
    for name in PHOTO_FACES:
        image = cv2.imread(str(media / name))
        if image is None:
            raise UserError(f"{media}: the photos {', '.join(PHOTO_FACES)} are needed")
        photos[name] = image
    tw, th = size[0] // grid, size[1] // grid
    # tile sources: the clip, then each photo, then the same mirrored, then the clip mirrored and delayed
    sources = [("clip", False, 0)] + [(n, False, 0) for n in PHOTO_FACES] + [(n, True, 0) for n in PHOTO_FACES]
    sources += [("clip", True, 0), ("clip", False, len(clip) // 2)]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (tw * grid, th * grid))
    if not writer.isOpened():
        raise UserError(f"{out}: cannot write an mp4v video here")
    try:
        for t in range(frames):
            canvas = np.empty((th * grid, tw * grid, 3), np.uint8)
            for k in range(grid * grid):
                r, c = divmod(k, grid)
                if k < faces:
                    name, mirror, delay = sources[k % len(sources)]
                    if name == "clip":
                        tile = cv2.resize(clip[(t + delay) % len(clip)], (tw, th), interpolation=cv2.INTER_AREA)
                    else:
                        tile = _photo_tile(photos[name], PHOTO_FACES[name], (tw, th), t, phase=k)
                    tile = cv2.flip(tile, 1) if mirror else tile
                else:
                    tile = cv2.resize(empty[(t + 7 * k) % len(empty)], (tw, th), interpolation=cv2.INTER_AREA)
                canvas[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
            writer.write(canvas)
    finally:
        writer.release()
    return out
