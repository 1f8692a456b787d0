"""Synthetic micro-expressions on real faces, to measure the spotter without licence-gated datasets.

A movement is a smooth local warp of an aligned face crop: the brows (above the eyes, which the aligner puts at
40% of the crop's height) pushed up, or the mouth corners pulled, by a few pixels, rising and falling as half a
sine over 4-12 frames. Faces are real (FER2013 images, frames of the clips in ../shared/media), animated by a
small, slow head drift and sensor noise. What this measures is what it says: injections, not SAMM or CAS(ME)².
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# where each movement happens, as fractions of the aligned crop (y, x, spread) and its direction
MOVES = {
    "brows": [((0.27, 0.32, 0.10), (-1.0, 0.0)), ((0.27, 0.68, 0.10), (-1.0, 0.0))],
    "mouth": [((0.77, 0.34, 0.08), (-0.6, -0.8)), ((0.77, 0.66, 0.08), (-0.6, 0.8))],
}
REGION_OF = {"brows": "brows_eyes", "mouth": "mouth"}


@dataclass(frozen=True)
class Injection:
    move: str  # brows | mouth
    onset: int  # first frame of the movement
    length: int  # frames
    amplitude_px: float

    @property
    def interval(self) -> tuple[int, int]:
        return self.onset, self.onset + self.length - 1


def local_warp(crop: np.ndarray, move: str, amount: float) -> np.ndarray:
    """``crop`` with ``move`` applied at ``amount`` pixels (Gaussian-weighted displacement fields)."""
    h, w = crop.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xx.copy(), yy.copy()
    for (cy, cx, spread), (dy, dx) in MOVES[move]:
        g = np.exp(-((yy - cy * h) ** 2 + (xx - cx * w) ** 2) / (2 * (spread * w) ** 2)).astype(np.float32)
        map_y -= amount * dy * g  # sampling from below moves the content up
        map_x -= amount * dx * g
    return cv2.remap(crop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def animate(face: np.ndarray, frames: int, fps: float, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A still face made a clip: slow sub-pixel drift (what alignment leaves of head motion) and sensor noise."""
    base = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    out = np.empty((frames, size, size), np.uint8)
    for i in range(frames):
        t = i / fps
        m = np.array([[1, 0, 0.6 * np.sin(1.9 * t + phase[0])], [0, 1, 0.4 * np.sin(1.3 * t + phase[1])]], np.float32)
        img = cv2.warpAffine(base, m, (size, size), borderMode=cv2.BORDER_REFLECT) + rng.normal(0, 2.0, base.shape)
        out[i] = np.clip(img, 0, 255)
    return out


def inject(crops: np.ndarray, injection: Injection) -> np.ndarray:
    """A copy of ``crops`` with the movement added (half a sine of ``amplitude_px`` over its frames)."""
    out = crops.copy()
    for j in range(injection.length):
        amount = injection.amplitude_px * np.sin(np.pi * (j + 0.5) / injection.length)
        i = injection.onset + j
        out[i] = local_warp(crops[i].astype(np.float32), injection.move, amount).clip(0, 255).astype(np.uint8)
    return out


def held(crops: np.ndarray, move: str, onset: int, amplitude_px: float, rise: int) -> np.ndarray:
    """A macro-like expression: the movement rises over ``rise`` frames and is then held to the end."""
    out = crops.copy()
    for i in range(onset, len(crops)):
        amount = amplitude_px * min(1.0, (i - onset + 1) / rise)
        out[i] = local_warp(crops[i].astype(np.float32), move, amount).clip(0, 255).astype(np.uint8)
    return out


def aligned_track(video: str | Path, size: int = 64) -> np.ndarray:
    """The largest face of every frame of ``video``, aligned as the pipeline aligns it, as ``size`` gray crops
    (frames without a face are skipped): a real track to inject movements into."""
    from ..faces.align import similarity
    from ..faces.detect import create_detector

    cap, crops = cv2.VideoCapture(str(video)), []
    with create_detector("auto") as detector:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            dets = detector.detect(frame)
            if dets:
                m = similarity(max(dets, key=lambda d: d.score), size)
                warped = cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR)
                crops.append(cv2.cvtColor(warped, cv2.COLOR_BGR2GRAY))
    cap.release()
    return np.stack(crops)
