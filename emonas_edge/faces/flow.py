"""Moving face boxes between detections with sparse optical flow, so detection can run every few frames.

Detecting every frame is what caps the pipeline (BlazeFace costs several times the decode). Between
detections each face's box and eyes follow the face itself: corners found inside the box on the last
detection (or refreshed after each step) are tracked with pyramidal Lucas-Kanade into the next frame, a point
whose patch there differs from its patch here by more than twice the face's median (plus a gray level) is
dropped (relative, so a camera's exposure change moves the median and drops nothing), and a rotation + uniform
scale + shift fitted to the survivors (RANSAC) moves the box and the eye keypoints. A face is lost when too few
points survive, and :attr:`FaceFlow.confident` turns False when any face keeps too small a share of its points:
the caller then detects on the next frame.

Each point used to be tracked back as well, dropping those whose round trip missed by a pixel: that second
Lucas-Kanade call, which rebuilds both pyramids, was a third of the flow's cost. Without it the boxes, crops and
labels measured against detection on every frame came out the same on every clip (profile/cadence.py), and a
face replaced by a blank, black, noisy or other picture, or darkened or brightened, was lost or kept exactly as
before.

Everything runs on a gray copy of the frame (half size for faces that allow it), in a window around each
face; one face costs a fraction of a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .detect import Detection

LK_WINDOW, LK_LEVELS = (11, 11), 2
LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)


@dataclass(frozen=True)
class FlowSettings:
    max_points: int = 24  # corners per face
    min_points: int = 6  # fewer survivors: the face is lost
    keep_share: float = 0.6  # a face keeping less of its points makes the next frame a detection frame
    patch_error: float = 2.0  # a point whose patch error exceeds this times the face's median (+ 1 gray level) drops


def _corners(gray: np.ndarray, box: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` trackable corners inside the inner part of ``box`` (the face, not the background)."""
    h, w = gray.shape
    x1, y1, x2, y2 = box
    mx, my = 0.15 * (x2 - x1), 0.1 * (y2 - y1)
    a, b = int(max(0, x1 + mx)), int(max(0, y1 + my))
    c, d = int(min(w, x2 - mx)), int(min(h, y2 - my))
    if c - a < 8 or d - b < 8:
        return np.zeros((0, 1, 2), np.float32)
    pts = cv2.goodFeaturesToTrack(gray[b:d, a:c], n, 0.01, max(3.0, (c - a) / 12))
    if pts is None:
        return np.zeros((0, 1, 2), np.float32)
    return (pts + np.array([a, b], np.float32)).astype(np.float32)


class FaceFlow:
    """The faces of the last frame, moved into each new frame; reset with fresh detections.

    Lucas-Kanade builds its image pyramids on every call, so each face is tracked inside a window around
    its box (the box plus half its size on every side: faster motion than that between two frames is a
    lost face), not over the whole frame; frames whose faces are all at least ``2 * HALF_FROM`` pixels wide
    are tracked at half resolution, a quarter of the pixels for the same points."""

    HALF_FROM = 40  # smallest face width (pixels, at half resolution) that is tracked at half resolution

    def __init__(self, settings: FlowSettings | None = None):
        self.settings = settings or FlowSettings()
        self._prev: np.ndarray | None = None  # the last frame, gray, at self._scale
        self._scale = 1.0
        self._faces: list[tuple[Detection, np.ndarray]] = []  # (detection, its points at self._scale)
        self.confident = False

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if self._scale != 1.0:
            gray = cv2.resize(gray, None, fx=self._scale, fy=self._scale, interpolation=cv2.INTER_AREA)
        return gray

    def reset(self, image: np.ndarray, dets: list[Detection]) -> None:
        """A detection frame: track these faces from here on."""
        narrowest = min((float(d.box[2] - d.box[0]) for d in dets), default=0.0)
        self._scale = 0.5 if narrowest >= 2 * self.HALF_FROM else 1.0
        self._prev = gray = self._prepare(image)
        self._faces = [(d, _corners(gray, d.box * self._scale, self.settings.max_points)) for d in dets]
        self.confident = all(len(p) >= self.settings.min_points for _, p in self._faces)

    def step(self, image: np.ndarray) -> list[Detection]:
        """The faces moved into ``image`` (lost ones left out)."""
        if self._prev is None:
            self.confident = False
            return []
        prev, gray = self._prev, self._prepare(image)
        self._prev = gray
        if prev.shape != gray.shape:  # the source changed size: nothing to follow
            self._faces, self.confident = [], False
            return []
        moved, confident = [], True
        for det, pts in self._faces:
            got = self._move(prev, gray, det, pts)
            if got is None:
                confident = False
                continue
            new_det, kept = got
            confident &= len(kept) >= self.settings.keep_share * len(pts)
            if len(kept) < self.settings.max_points // 2:  # top up from the face as it looks now
                kept = _corners(gray, new_det.box * self._scale, self.settings.max_points)
            moved.append((new_det, kept))
        self._faces, self.confident = moved, confident
        return [d for d, _ in moved]

    def _move(self, prev, cur, det: Detection, pts: np.ndarray) -> tuple[Detection, np.ndarray] | None:
        s = self.settings
        if len(pts) < s.min_points:
            return None
        h, w = prev.shape
        x1, y1, x2, y2 = det.box * self._scale
        mx, my = (x2 - x1) / 2, (y2 - y1) / 2
        a, b = int(max(0, x1 - mx)), int(max(0, y1 - my))
        c, d = int(min(w, x2 + mx + 1)), int(min(h, y2 + my + 1))
        if c - a < 16 or d - b < 16:
            return None
        origin = np.array([a, b], np.float32)
        p0 = pts - origin
        was, now = prev[b:d, a:c], cur[b:d, a:c]
        nxt, st, err = cv2.calcOpticalFlowPyrLK(
            was, now, p0, np.empty_like(p0), winSize=LK_WINDOW, maxLevel=LK_LEVELS, criteria=LK_CRITERIA
        )
        err = err.reshape(-1)
        nxt = nxt + origin
        good = st.reshape(-1) == 1
        if good.any():
            good &= err <= s.patch_error * float(np.median(err[good])) + 1.0
        if good.sum() < s.min_points:
            return None
        m, inliers = cv2.estimateAffinePartial2D(pts[good], nxt[good], method=cv2.RANSAC, ransacReprojThreshold=2.0)
        if m is None or inliers is None or int(inliers.sum()) < s.min_points:
            return None
        m[:, 2] /= self._scale  # fitted on scaled points: the same rotation and scale, the shift in frame pixels
        # the box keeps its shape: its centre moves, its size follows the fitted scale (a rotation turns
        # the eyes, which alignment follows; an upright box grown around a rotated one would drift)
        x1, y1, x2, y2 = (float(v) for v in det.box)
        cx, cy = m[:, :2] @ np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + m[:, 2]
        scale = abs(float(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])) ** 0.5  # of the fitted similarity
        hw, hh = scale * (x2 - x1) / 2, scale * (y2 - y1) / 2
        box = np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)
        eyes = None if det.eyes is None else (det.eyes @ m[:, :2].T + m[:, 2]).astype(np.float32)
        kept = nxt[good][inliers.reshape(-1) == 1].reshape(-1, 1, 2)
        return Detection(box, det.score, eyes), kept
