"""Overlay: box, track id, macro label with probability bars, micro label, FPS.

Draws into one reused canvas. Output of an untrained head is drawn grey and labelled
"untrained" so nobody reads noise as an expression.
"""

from __future__ import annotations

import cv2
import numpy as np

from .loop import FrameResult

PALETTE = [
    (80, 200, 80),
    (60, 160, 255),
    (255, 140, 60),
    (200, 80, 220),
    (60, 220, 220),
    (230, 230, 80),
    (120, 120, 255),
]
GREY = (150, 150, 150)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img, s, org, scale=0.45, color=(255, 255, 255), thick=1):
    cv2.putText(img, s, org, FONT, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, s, org, FONT, scale, color, thick, cv2.LINE_AA)


BAR_W, BAR_ROW = 124, 13  # the probability bars' block: width, and height per class


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def bar_place(box, others, n_classes: int, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a face's bars: right of the box, else left, below or above, the first place that
    stays in the picture and covers no other face (else the one covering the least of them)."""
    w, h = size
    x1, y1, x2, y2 = (float(v) for v in box)
    bh = BAR_ROW * max(1, n_classes)
    candidates = [(x2 + 6, y1), (x1 - 6 - BAR_W, y1), (x1, y2 + 20), (x1, y1 - 22 - bh)]
    best, best_cost = None, None
    for x, y in candidates:
        x, y = min(max(0.0, x), max(0.0, w - BAR_W)), min(max(0.0, y), max(0.0, h - bh))
        block = (x, y, x + BAR_W, y + bh)
        cost = sum(_overlap(block, o) for o in others) + _overlap(block, (x1, y1, x2, y2)) * 0.01
        if best_cost is None or cost < best_cost:
            best, best_cost = (int(x), int(y)), cost
        if cost == 0:
            break
    assert best is not None
    return best


class Renderer:
    def __init__(self, bars: bool = True, stamp: bool = True, event_s: float = 1.0):
        self.bars, self.stamp = bars, stamp  # stamp: the FPS line (not on photos)
        self._canvas: np.ndarray | None = None
        self.event_s = event_s  # how long a spotted movement stays marked on its face
        self._events: dict[int, tuple[float, str]] = {}  # track -> (until, label)

    def draw(self, image: np.ndarray, result: FrameResult, fps: float | None = None) -> np.ndarray:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if self._canvas is None or self._canvas.shape != image.shape:
            self._canvas = np.empty_like(image)
        img = self._canvas
        np.copyto(img, image)
        h, w = img.shape[:2]
        for f in result.faces:
            color = PALETTE[f.track % len(PALETTE)]
            x1, y1, x2, y2 = (int(round(v)) for v in f.box)
            cv2.rectangle(img, (x1, y1), (x2, y2), color, 2)
            title = f"#{f.track}"
            if f.macro is not None:
                k = int(np.argmax(f.macro))
                if "macro" in f.untrained:
                    title += " macro: untrained"
                else:
                    title += f" {result.class_name('macro', k)} {f.macro[k]:.2f}"
            _text(img, title, (x1, max(14, y1 - 6)), 0.5, color if "macro" not in f.untrained else GREY)
            if f.micro is not None:
                k = int(np.argmax(f.micro))
                tag = " (untrained)" if "micro" in f.untrained else ""
                _text(
                    img,
                    f"micro: {result.class_name('micro', k)} {f.micro[k]:.2f}{tag}",
                    (x1, min(h - 4, y2 + 16)),
                    0.45,
                    GREY if tag else (255, 255, 255),
                )
            self._mark_event(img, f, result.time, (x1, y1, x2, y2))
            if self.bars and f.macro is not None and "macro" not in f.untrained:
                others = [g.box for g in result.faces if g is not f]
                x, y = bar_place(f.box, others, len(result.macro_classes or ()), (w, h))
                self._bars(img, f.macro, result.macro_classes, x, y, color)
        if fps is not None and self.stamp:
            _text(img, f"{fps:.1f} FPS  faces {len(result.faces)}", (8, 18), 0.5)
        return img

    def _mark_event(self, img: np.ndarray, f, now: float, box: tuple[int, int, int, int]) -> None:
        """A spotted micro-movement: a star on the face's corner and its region, for ``event_s`` after it was
        decided (one frame would be invisible)."""
        for e in f.micro_events or ():
            self._events[f.track] = (now + self.event_s, f"micro-movement: {e['region'].replace('_', '/')}")
        until, label = self._events.get(f.track, (-1.0, ""))
        if now > until:
            self._events.pop(f.track, None)
            return
        x1, y1, x2, _ = box
        cv2.drawMarker(img, (x2 - 8, y1 + 8), (0, 215, 255), cv2.MARKER_STAR, 14, 2)
        _text(img, label, (x1, y1 + 16), 0.45, (0, 215, 255))

    @staticmethod
    def _bars(img, probs, classes, x, y, color):
        for i, (c, p) in enumerate(zip(classes, probs, strict=False)):
            yy = y + i * 13
            if yy + 10 >= img.shape[0]:
                break
            cv2.rectangle(img, (x + 52, yy), (x + 52 + int(70 * float(p)), yy + 9), color, -1)
            cv2.rectangle(img, (x + 52, yy), (x + 122, yy + 9), (200, 200, 200), 1)
            _text(img, c[:8], (x, yy + 9), 0.33)
