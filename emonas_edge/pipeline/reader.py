"""The pipeline's first stage: decode and detect on a thread of its own, ahead of the classify stage.

Two stages on two cores only run at the speed of the slower one if neither waits for the other. With one
frame in flight (the first design) they did: a detection frame (BlazeFace, every 5th) takes ~5 ms where an
optical-flow frame takes ~1, and a frame whose face the macro model classifies costs the second stage ~5 ms
where one it skips costs ~2, so each stage idled whenever its neighbour had a slow frame, ~1.7-2.3 ms a frame
on single_face.mp4 (measured in place). Letting the reader run a few frames ahead absorbs that jitter, so
throughput follows each stage's mean instead of the worse of the two on every frame.

A file is read ahead (``FILE_AHEAD`` frames); a live source only one frame: it keeps its newest frame itself
(pipeline/sources.py), and a frame read ahead would be older by the time it is classified.

Decoding on a third thread (so the OS could fill either core's idle time with it) was tried and measured:
on two cores it lost 20-30% (stages preempted mid-frame, align's p90 went from 0.4 to 3 ms).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

FILE_AHEAD = 8  # frames decoded and detected ahead of the classify stage (2, 4 and 8 measured: 8 was fastest)
AHEAD_BYTES = 48 << 20  # ...but no more than this in frames read ahead (640x360 BGR: 0.7 MB each; 4K: 25 MB)
LIVE_AHEAD = 1


def _acquire(room: threading.Semaphore, halt: threading.Event) -> bool:
    """Wait for room; False once halted."""
    while not room.acquire(timeout=0.05):
        if halt.is_set():
            return False
    return not halt.is_set()


class FrameReader:
    """Yields ``(frame, decode_ns, faces, detect_ns)`` in order from a thread reading at most ``ahead`` frames
    beyond what the consumer has taken. An exception in the reader (a lost camera) reaches the consumer after
    the frames read before it. ``close()`` stops the thread and waits for it, so a read in flight finishes
    before the caller closes the source."""

    def __init__(self, frames, detect: Callable, ahead: int, max_frames: int | None = None):
        self._frames, self._ahead = iter(frames), ahead
        self._detect, self._max = detect, max_frames
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._room = threading.Semaphore(ahead)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emonas-detect", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t = time.perf_counter_ns
        n = 0
        try:
            while (self._max is None or n < self._max) and _acquire(self._room, self._halt):
                d0 = t()
                frame = next(self._frames, None)
                dec = t() - d0
                if frame is None:
                    break
                if n == 0:
                    self._hold_back(frame.image.nbytes)
                found, det_ns = self._detect(frame, n)
                self._items.put((frame, dec, found, det_ns))
                n += 1
        except BaseException as e:  # handed to the consumer, raised there
            self._items.put(e)
            return
        self._items.put(None)

    def _hold_back(self, frame_bytes: int) -> None:
        """Big frames are read fewer ahead: the permits beyond ``AHEAD_BYTES`` are taken and never given back
        (all but the first frame's are free at this point, so this never waits)."""
        keep = max(1, min(self._ahead, AHEAD_BYTES // max(1, frame_bytes)))
        for _ in range(self._ahead - keep):
            self._room.acquire()

    def get(self):
        """The next item, None at the end; re-raises what stopped the reader."""
        item = self._items.get()
        if isinstance(item, BaseException):
            raise item
        if item is not None:
            self._room.release()
        return item

    def close(self) -> None:
        self._halt.set()
        self._thread.join()
