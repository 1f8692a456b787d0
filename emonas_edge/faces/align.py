"""Face alignment: a similarity transform that puts the eyes where the training data had them.

The template was measured, not guessed: BlazeFace run on 296 FER2013 PublicTest faces puts the
eye midpoint at (0.50, 0.40) of the crop and the eyes 0.365 crop-widths apart (median), so a
live face reaches the network framed the way the network learnt faces. Without landmarks
(Haar) the eyes are estimated from the box with ratios measured the same way (eye distance
0.371 box widths, midpoint at (0.506, 0.402) of the box); the crop is then upright.

The output is exactly the model's input spec (size, gray or RGB) read from the model's own
config, so there is no second setting to keep in sync; normalisation (mean/std) is the one
:class:`~emonas_edge.data.preprocess.Preprocessor`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..config import ModelConfig
from ..errors import UserError
from .detect import Detection

EYE_MID = (0.50, 0.40)  # eye midpoint in the crop, fractions of its side
EYE_DIST = 0.365  # distance between the eyes, fraction of the crop side
HAAR_EYE_DIST = 0.371  # eye distance / Haar box width
HAAR_EYE_MID = (0.506, 0.402)  # eye midpoint within the Haar box


def eyes_of(det: Detection) -> tuple[np.ndarray, np.ndarray, bool]:
    """(right eye, left eye, from landmarks?) in frame pixels."""
    if det.eyes is not None:
        return det.eyes[0], det.eyes[1], True
    x1, y1, x2, y2 = (float(v) for v in det.box)
    w, h = x2 - x1, y2 - y1
    mid = np.array([x1 + HAAR_EYE_MID[0] * w, y1 + HAAR_EYE_MID[1] * h], np.float32)
    half = np.array([HAAR_EYE_DIST * w / 2, 0.0], np.float32)
    return mid - half, mid + half, False


def similarity(det: Detection, size: int, margin: float = 0.0) -> np.ndarray:
    """2x3 matrix mapping frame pixels to crop pixels."""
    e0, e1, _ = eyes_of(det)
    dx, dy = float(e1[0] - e0[0]), float(e1[1] - e0[1])
    dist = math.hypot(dx, dy)
    if dist < 1e-3:  # degenerate landmarks: fall back to the box estimate
        e0, e1, _ = eyes_of(Detection(det.box, det.score, None))
        dx, dy = float(e1[0] - e0[0]), float(e1[1] - e0[1])
        dist = max(math.hypot(dx, dy), 1e-3)
    scale = EYE_DIST * size / (dist * (1.0 + margin))
    cx, cy = (float(e0[0]) + float(e1[0])) / 2, (float(e0[1]) + float(e1[1])) / 2
    m = cv2.getRotationMatrix2D((cx, cy), math.degrees(math.atan2(dy, dx)), scale)
    m[0, 2] += EYE_MID[0] * size - cx
    m[1, 2] += EYE_MID[1] * size - cy
    return m


class Aligner:
    """Crops faces to one model's input spec, writing into a reused batch buffer."""

    def __init__(self, config: ModelConfig, margin: float = 0.0, max_faces: int = 16, size: int | None = None):
        """``size`` overrides the model's input size (crops stored for several models)."""
        if not -0.5 < margin <= 2.0:
            raise UserError(f"--margin must be in (-0.5, 2], got {margin}")
        self.size = size or config.input_size
        self.gray = config.preprocess.grayscale or config.in_channels == 1
        self.margin = margin
        shape = (self.size, self.size) if self.gray else (self.size, self.size, 3)
        self._batch = np.empty((max_faces, *shape), np.uint8)
        self._warp = np.empty((self.size, self.size, 3), np.uint8)

    def align_one(self, frame: np.ndarray, det: Detection, out: np.ndarray | None = None) -> np.ndarray:
        m = similarity(det, self.size, self.margin)
        src_gray = frame.ndim == 2
        if out is None:
            out = np.empty((self.size, self.size) if self.gray else (self.size, self.size, 3), np.uint8)
        if src_gray:
            if self.gray:
                cv2.warpAffine(
                    frame, m, (self.size, self.size), dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
                )
            else:
                g = cv2.warpAffine(
                    frame, m, (self.size, self.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
                )
                cv2.cvtColor(g, cv2.COLOR_GRAY2RGB, dst=out)
            return out
        # warp the small crop, then convert colour: cheaper than converting the whole frame
        cv2.warpAffine(
            frame, m, (self.size, self.size), dst=self._warp, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        cv2.cvtColor(self._warp, cv2.COLOR_BGR2GRAY if self.gray else cv2.COLOR_BGR2RGB, dst=out)
        return out

    def align(self, frame: np.ndarray, dets: list[Detection]) -> np.ndarray:
        """uint8 (N, S, S) or (N, S, S, 3) RGB; a view of the reused buffer (copy it to keep it)."""
        if len(dets) > len(self._batch):
            self._batch = np.empty((len(dets), *self._batch.shape[1:]), np.uint8)
        for i, d in enumerate(dets):
            self.align_one(frame, d, self._batch[i])
        return self._batch[: len(dets)]
