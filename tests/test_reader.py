"""The pipeline's first stage reads ahead of the second on a thread of its own: in order, never more than its
allowance ahead (fewer for big frames), a source's failure after the frames before it, and a clean stop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from emonas_edge.pipeline import reader as reader_mod
from emonas_edge.pipeline.reader import FrameReader
from emonas_edge.pipeline.sources import Frame, SourceLost


class Counted:
    """Frames 0..n-1 of ``size`` bytes, counting how many were read; fails after ``fail_after`` if given."""

    def __init__(self, n: int, size: int = 64, fail_after: int | None = None):
        self.n, self.size, self.fail_after, self.read = n, size, fail_after, 0

    def __iter__(self):
        for i in range(self.n):
            if self.fail_after is not None and i == self.fail_after:
                raise SourceLost("camera 0: stopped delivering frames")
            self.read += 1
            yield Frame(i, i / 30.0, np.full(self.size, i % 256, np.uint8))


def detect(frame: Frame, n: int):
    assert frame.index == n  # the reader numbers frames as it reads them
    return [n], 1000


def drain(r: FrameReader) -> list[int]:
    out = []
    while (item := r.get()) is not None:
        out.append(item[0].index)
    return out


def settle(src: Counted, reads: int, timeout: float = 5.0) -> None:
    """Until the reader has read ``reads`` frames, then a little longer (it must stop there)."""
    t0 = time.monotonic()
    while src.read < reads and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
    time.sleep(0.15)


def test_frames_come_in_order_with_their_detections_and_stop_at_max_frames():
    r = FrameReader(Counted(50), detect, ahead=4)
    items = []
    while (item := r.get()) is not None:
        items.append(item)
    r.close()
    assert [f.index for f, _, _, _ in items] == list(range(50))
    assert all(found == [f.index] and det_ns == 1000 and dec >= 0 for f, dec, found, det_ns in items)
    r = FrameReader(Counted(50), detect, ahead=4, max_frames=7)
    assert drain(r) == list(range(7))
    r.close()


def test_the_reader_stays_within_its_allowance():
    src = Counted(100)
    r = FrameReader(src, detect, ahead=3)
    settle(src, 3)
    assert src.read == 3  # three ahead of a consumer that has taken nothing
    r.get()
    settle(src, 4)
    assert src.read == 4
    r.close()
    assert not any(t.name == "emonas-detect" and t.is_alive() for t in threading.enumerate())


def test_big_frames_are_read_fewer_ahead(monkeypatch):
    monkeypatch.setattr(reader_mod, "AHEAD_BYTES", 2 * 1000)
    src = Counted(100, size=1000)
    r = FrameReader(src, detect, ahead=8)
    settle(src, 2)
    assert src.read == 2  # 2 frames of 1000 bytes fit the allowance of 2000
    assert drain(r) == list(range(100))  # and the held-back permits never stall the run
    r.close()


def test_a_failing_source_fails_after_the_frames_it_gave():
    r = FrameReader(Counted(10, fail_after=3), detect, ahead=8)
    assert [r.get()[0].index for _ in range(3)] == [0, 1, 2]
    with pytest.raises(SourceLost, match="stopped delivering"):
        r.get()
    r.close()


def test_closing_early_stops_the_thread():
    src = Counted(10_000)
    r = FrameReader(src, detect, ahead=8)
    r.get()
    t0 = time.monotonic()
    r.close()
    assert time.monotonic() - t0 < 2.0 and src.read <= 9
