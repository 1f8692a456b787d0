"""Per-face tracking: stable ids across frames so smoothing and frame buffers follow one person.

Greedy matching on IoU, then on centre distance (relative to face size) for fast motion where
boxes stop overlapping. A track unseen for ``max_age`` frames is evicted and its state (frame
buffer included) is dropped, so memory stays flat over long runs with people coming and going.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..faces.detect import Detection


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes ``a`` (N, 4) and ``b`` (M, 4), x1y1x2y2."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


@dataclass
class Track:
    id: int
    det: Detection
    hits: int = 1
    missed: int = 0
    state: dict = field(default_factory=dict)  # per-stage state: smoothed probs, frame buffer, ...

    @property
    def box(self) -> np.ndarray:
        return self.det.box


class Tracker:
    def __init__(self, iou_threshold: float = 0.3, max_age: int = 15, center_threshold: float = 0.6):
        self.iou_threshold = iou_threshold
        self.max_age = max_age
        self.center_threshold = center_threshold
        self.tracks: list[Track] = []
        self._next_id = 1
        self.evicted = 0

    @property
    def created(self) -> int:
        """Tracks started so far (ids are 1..created, never reused)."""
        return self._next_id - 1

    def update(self, dets: list[Detection]) -> list[Track]:
        """Match detections to tracks; returns the tracks seen this frame, in detection order."""
        boxes = np.array([d.box for d in dets], np.float32).reshape(-1, 4)
        prev = np.array([t.box for t in self.tracks], np.float32).reshape(-1, 4)
        assigned: dict[int, Track] = {}
        used: set[int] = set()
        if len(prev) and len(boxes):
            iou = iou_matrix(prev, boxes)
            # centre distance in units of the track's face size, for when IoU is zero
            pc = (prev[:, :2] + prev[:, 2:]) / 2
            bc = (boxes[:, :2] + boxes[:, 2:]) / 2
            size = np.maximum(prev[:, 2] - prev[:, 0], 1.0)
            dist = np.linalg.norm(pc[:, None] - bc[None], axis=2) / size[:, None]
            cost = np.where(
                iou >= self.iou_threshold, 1.0 - iou, np.where(dist <= self.center_threshold, 1.0 + dist, np.inf)
            )
            for flat in np.argsort(cost, axis=None):
                ti, di = divmod(int(flat), cost.shape[1])
                if not np.isfinite(cost[ti, di]):
                    break
                if ti in used or di in assigned:
                    continue
                t = self.tracks[ti]
                t.det, t.missed = dets[di], 0
                t.hits += 1
                assigned[di] = t
                used.add(ti)
        for ti, t in enumerate(self.tracks):
            if ti not in used:
                t.missed += 1
        for di, d in enumerate(dets):
            if di not in assigned:
                t = Track(self._next_id, d)
                self._next_id += 1
                self.tracks.append(t)
                assigned[di] = t
        alive = [t for t in self.tracks if t.missed <= self.max_age]
        self.evicted += len(self.tracks) - len(alive)
        self.tracks = alive
        return [assigned[i] for i in range(len(dets))]

    def forget(self) -> None:
        """Drop every live track (unrelated photos): the next faces get new ids and fresh state."""
        self.evicted += len(self.tracks)
        self.tracks = []
