"""Frame sources: webcam index, stream URL, video file, single image, image folder.

Live sources (cameras, streams) are read on a thread that keeps only the newest frame: when
the pipeline is slower than the camera, it skips stale frames instead of falling behind.
Files are read in order with no drops, so a JSONL line exists for every frame. Every frame
carries its source timestamp (video position, or capture time for live sources).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..data.preprocess import IMAGE_SUFFIXES, read_image

# FFmpeg prints its own complaints ("moov atom not found") on stderr; we report bad input in one line
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
from ..errors import UserError

STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class SourceLost(UserError):
    """A live source stopped delivering frames mid-run (camera unplugged, stream dropped)."""


@dataclass
class Frame:
    index: int
    time: float  # seconds from the start of the source
    image: np.ndarray  # BGR uint8 (or gray for gray image files)
    file: str | None = None  # the image file it came from (image sources)


class Source:
    kind = "base"
    live = False
    fps: float | None = None
    frame_count: int | None = None
    description: str = ""

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VideoFileSource(Source):
    kind = "video"

    def __init__(self, path: Path):
        self.path = path
        self.description = str(path)
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            self._cap.release()
            raise UserError(f"{path}: cannot open as a video (unsupported or corrupt file)")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise UserError(f"{path}: no decodable frames (empty, truncated or not a video)")
        self._first = first
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else None
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = n if n > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        img: np.ndarray | None = self._first  # None once a read fails: the end of the file
        while img is not None:
            if self.fps:
                t = i / self.fps
            else:  # asked only when needed: every call into OpenCV is a trip out of and back into the GIL
                pos = self._cap.get(cv2.CAP_PROP_POS_MSEC)
                t = pos / 1000.0 if pos > 0 else float(i)
            yield Frame(i, t, img)
            i += 1
            ok, img = self._cap.read()
            if not ok:
                img = None
        self.frames_read = i
        self.ended = True

    frames_read = 0
    ended = False  # iteration reached the end of what could be decoded (not stopped by the caller)

    def stopped_early(self) -> str | None:
        """Why the file's frames ran out before the count its container announces, or None.

        Containers round (a frame or two either way); a truncated or damaged file ends far short."""
        if not self.ended or not self.frame_count or self.frames_read >= self.frame_count - 2:
            return None
        return (
            f"{self.path}: decoding stopped after {self.frames_read} of the {self.frame_count} frames the file "
            "announces (truncated or damaged?)"
        )

    def close(self) -> None:
        self._cap.release()


class ImageSource(Source):
    kind = "image"

    def __init__(self, paths: list[Path], description: str):
        self.paths = paths
        self.description = description
        self.frame_count = len(paths)
        self.unreadable: list[Path] = []

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        for p in self.paths:
            img = read_image(p)
            if img is None:
                if len(self.paths) == 1:
                    raise UserError(f"{p}: not a readable image")
                self.unreadable.append(p)
                continue
            yield Frame(i, float(i), img, str(p))
            i += 1


class LiveSource(Source):
    """A capture read on its own thread; ``__iter__`` yields the newest frame not yet seen."""

    kind = "live"
    live = True

    def __init__(self, cap: cv2.VideoCapture, description: str, lost_after: float = 2.0):
        self.description = description
        self._cap = cap
        self.lost_after = lost_after
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else None
        self._cond = threading.Condition()
        self._latest: tuple[int, float, np.ndarray] | None = None
        self._seq = 0
        self._failed_since: float | None = None
        self._ended = False
        self._stop = False
        self._t0 = time.monotonic()
        self.dropped = 0
        self._thread = threading.Thread(target=self._reader, name="emonas-capture", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        while not self._stop:
            ok, img = self._cap.read()
            now = time.monotonic()
            with self._cond:
                if ok and img is not None:
                    self._latest = (self._seq, now - self._t0, img)
                    self._seq += 1
                    self._failed_since = None
                else:
                    if self._failed_since is None:
                        self._failed_since = now
                    if now - self._failed_since >= self.lost_after:
                        self._ended = True
                        self._cond.notify_all()
                        return
                self._cond.notify_all()
            if not ok:
                time.sleep(0.01)

    def __iter__(self) -> Iterator[Frame]:
        last = -1
        out = 0
        while True:
            with self._cond:
                while (self._latest is None or self._latest[0] == last) and not self._ended:
                    self._cond.wait(timeout=0.5)
                if self._latest is None or self._latest[0] == last:
                    raise SourceLost(
                        f"{self.description}: stopped delivering frames after {out} frame(s) "
                        "(unplugged or stream ended?)"
                    )
                seq, t, img = self._latest
            self.dropped += seq - last - 1
            last = seq
            yield Frame(out, t, img)
            out += 1

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2.0)
        self._cap.release()


def _open_camera(index: int) -> LiveSource:
    if index < 0 or index > 63:
        raise UserError(f"camera index {index} is out of range (0..63)")
    if os.name == "posix" and Path("/dev").is_dir() and not Path(f"/dev/video{index}").exists():
        have = sorted(p.name for p in Path("/dev").glob("video*"))
        raise UserError(
            f"camera {index} does not exist (/dev/video{index} not found; cameras here: {', '.join(have) or 'none'})"
        )
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        raise UserError(f"camera {index} could not be opened (in use, or no permission?)")
    return LiveSource(cap, f"camera {index}")


def open_source(spec: str | int | os.PathLike) -> Source:
    """Webcam index (``0``), stream URL, video file, image file or image folder."""
    s = str(spec).strip()
    # a path that exists is a path: a folder named 2024 is not camera 2024 (an int is always a camera)
    if s.isdigit() and (isinstance(spec, int) or not Path(s).exists()):
        return _open_camera(int(s))
    if s.lower().startswith(STREAM_PREFIXES):
        cap = cv2.VideoCapture(s)
        if not cap.isOpened():
            cap.release()
            raise UserError(f"{s}: stream could not be opened")
        return LiveSource(cap, s)
    p = Path(s)
    if not p.exists():
        raise UserError(f"{s}: no such file or folder (and not a camera index or stream URL)")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageSource(files, str(p))
    if not os.access(p, os.R_OK):
        raise UserError(f"{p}: not readable (permission denied)")
    if p.stat().st_size == 0:
        raise UserError(f"{p}: empty file")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource([p], str(p))
    return VideoFileSource(p)


class LoopingSource(Source):
    """A video file replayed from the start each time it ends, until the run stops (``--loop``): kiosks,
    demos, a live view left running. Frame numbers and times keep counting across replays, so tracks,
    smoothing and the outputs see one continuous stream."""

    def __init__(self, first: VideoFileSource):
        self._src: VideoFileSource = first
        self.path, self.fps, self.description = first.path, first.fps, f"{first.description} (looped)"
        self.kind = first.kind
        self.replays = 0

    def __iter__(self) -> Iterator[Frame]:
        i, offset = 0, 0.0
        while True:
            last, n = 0.0, 0
            for f in self._src:
                yield Frame(i, offset + f.time, f.image, f.file)
                i, n, last = i + 1, n + 1, f.time
            if n == 0:
                return
            self._src.close()
            offset += last + (1.0 / self.fps if self.fps else 1.0)
            self._src = VideoFileSource(self.path)
            self.replays += 1

    def close(self) -> None:
        self._src.close()


def loop_source(source: Source) -> Source:
    """``source`` replayed endlessly, or one line saying why it cannot be (only video files loop)."""
    if not isinstance(source, VideoFileSource):
        source.close()
        raise UserError(f"--loop replays video files; {source.description} is a {source.kind} source")
    return LoopingSource(source)
