"""A sample clip the project may ship: a slow camera move over the bundled public-domain astronaut photo.

``make demo`` needs a video with a real face and no camera. Generating it from the bundled
image (NASA, public domain) keeps the repository free of media we could not licence, and the
motion (pan, zoom, a few degrees of roll) exercises tracking, alignment and the micro buffers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2

from ..errors import UserError
from .sinks import VideoSink

ASTRONAUT = Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"


def make_sample_video(
    path: str | os.PathLike, frames: int = 90, width: int = 640, height: int = 360, fps: float = 30.0
) -> Path:
    if frames < 1 or frames > 100_000:
        raise UserError(f"frames must be in 1..100000, got {frames}")
    if not (64 <= width <= 4096 and 64 <= height <= 4096):
        raise UserError(f"size {width}x{height} is out of range (64..4096)")
    img = cv2.imread(str(ASTRONAUT))
    if img is None:
        raise UserError(f"{ASTRONAUT}: bundled sample image missing or unreadable; reinstall emonas-edge")
    sink = VideoSink(path, fps)
    ok = False
    try:
        ih, iw = img.shape[:2]
        for i in range(frames):
            p = i / max(1, frames - 1)
            zoom = 0.75 + 0.25 * math.sin(math.pi * p)  # in, then back out
            angle = 6.0 * math.sin(2 * math.pi * p)  # a gentle head roll
            # keep the face (around x=225, y=115 in the photo) near the frame's centre, drifting
            cx = 225 + 40 * math.sin(2 * math.pi * p)
            cy = 150 + 20 * math.cos(2 * math.pi * p)
            scale = zoom * height / (ih * 0.6)
            m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
            m[0, 2] += width / 2 - cx
            m[1, 2] += height / 2 - cy
            frame = cv2.warpAffine(img, m, (width, height), borderMode=cv2.BORDER_REFLECT)
            sink.write(frame)
        ok = True
    finally:
        sink.close(keep=ok)
    return Path(path)
