"""Per-track ring buffers of aligned face crops, turned into dynamic images every ``stride`` frames.

Storage is preallocated once per track (window x crop), so a long run allocates nothing per
frame; an evicted track's buffer goes with it. The dynamic image is built by the same
:func:`~emonas_edge.data.dynamic_image.dynamic_image` that builds training samples.
"""

from __future__ import annotations

import numpy as np

from ..data.dynamic_image import dynamic_image
from ..errors import UserError


def check_window(window: int, stride: int) -> None:
    if window < 2:
        raise UserError(f"--micro-window must be at least 2 frames, got {window}")
    if stride < 1:
        raise UserError(f"--micro-stride must be at least 1 frame, got {stride}")


class FrameRing:
    def __init__(self, window: int, stride: int, crop_shape: tuple[int, ...]):
        check_window(window, stride)
        self.window, self.stride = window, stride
        self._buf = np.empty((window, *crop_shape), np.uint8)
        self._ordered = np.empty_like(self._buf)
        self._head = 0  # next slot to write
        self.count = 0  # frames pushed in total
        self._since = 0  # frames since the last emitted window

    def push(self, crop: np.ndarray) -> bool:
        """Store one crop; True when a full window is ready (first at ``window`` frames, then every ``stride``)."""
        self._buf[self._head] = crop
        self._head = (self._head + 1) % self.window
        self.count += 1
        self._since += 1
        if self.count >= self.window and (self.count == self.window or self._since >= self.stride):
            self._since = 0
            return True
        return False

    def frames(self) -> np.ndarray:
        """The last ``window`` crops, oldest first (a reused buffer: copy it to keep it)."""
        n = min(self.count, self.window)
        if self.count < self.window:
            return self._buf[:n]
        h = self._head
        self._ordered[: self.window - h] = self._buf[h:]
        self._ordered[self.window - h :] = self._buf[:h]
        return self._ordered

    def dynamic_image(self) -> np.ndarray:
        return dynamic_image(self.frames())

    @property
    def nbytes(self) -> int:
        return self._buf.nbytes + self._ordered.nbytes
