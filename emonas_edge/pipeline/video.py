"""Writing annotated video that a browser plays: H.264 in MP4 or VP9 in WebM where PyAV is installed.

OpenCV's pip wheels cannot write H.264 (no encoder is bundled, for licence reasons) and their VP9 runs
at libvpx's slowest setting (~0.5 s a 640x360 frame here), so a ``--save-video out.mp4`` from OpenCV is
MPEG-4 Part 2 (``mp4v``), which no browser plays. PyAV's wheels bundle FFmpeg with libx264 and libvpx:
with the ``video`` extra installed, ``.mp4``/``.mov``/``.m4v``/``.mkv`` get H.264 (yuv420p, moov atom
first so a browser starts playing before the whole file arrives) and ``.webm`` VP9 in real-time mode.
Without it the OpenCV codecs are used and :attr:`VideoEncoder.note` says so; ``.avi`` is Motion JPEG.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import UserError

# extension -> (PyAV codec, its options, container options) and the OpenCV fallback fourcc
X264 = ("libx264", {"preset": "veryfast", "crf": "23"})
VP9 = ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "33", "b": "0"})
FORMATS: dict[str, tuple[tuple[str, dict] | None, str]] = {
    ".mp4": (X264, "mp4v"),
    ".m4v": (X264, "mp4v"),
    ".mov": (X264, "mp4v"),
    ".mkv": (X264, "MJPG"),
    ".webm": (VP9, "VP80"),
    ".avi": (None, "MJPG"),
}
BROWSER_CODECS = {"h264", "vp9", "vp8"}


def has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


class VideoEncoder:
    """One output video; the codec is chosen from the extension and what is installed (:attr:`codec`)."""

    def __init__(self, path: Path, fps: float, final: Path | None = None):
        """``path``: where to write (a temporary name); ``final``: the name the user gave (for messages)."""
        self.path, self.final, self.fps = Path(path), Path(final or path), float(fps)
        ext = self.final.suffix.lower()
        if ext not in FORMATS:
            raise UserError(f"{self.final}: unsupported video extension (use one of: {', '.join(FORMATS)})")
        preferred, self.fourcc = FORMATS[ext]
        self.use_av = preferred is not None and has_pyav()
        self.codec: str = (
            {"libx264": "h264", "libvpx-vp9": "vp9"}[preferred[0]]
            if self.use_av and preferred is not None
            else {"mp4v": "mp4v", "MJPG": "mjpeg", "VP80": "vp8"}[self.fourcc]
        )
        self._preferred = preferred
        self._cv: cv2.VideoWriter | None = None
        self._container: Any = None  # PyAV's output container and stream (PyAV is optional)
        self._stream: Any = None

    @property
    def browser_playable(self) -> bool:
        return self.codec in BROWSER_CODECS

    @property
    def note(self) -> str | None:
        """What the user should know about the codec, when it is not what a browser plays."""
        if self.browser_playable or self._preferred is None:
            return None
        return (
            f"{self.final.name}: written as {self.codec} by OpenCV, which browsers do not play; "
            "pip install 'emonas-edge[video]' (PyAV) to write H.264 / VP9"
        )

    def _open(self, w: int, h: int) -> None:
        if not self.use_av or self._preferred is None:
            self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*self.fourcc), self.fps, (w, h))
            if not self._cv.isOpened():
                raise UserError(f"{self.final}: OpenCV cannot write a {w}x{h} video in this format here")
            return
        if w < 2 or h < 2:  # 4:2:0 needs at least 2x2
            raise UserError(f"{self.final}: cannot write a {w}x{h} video ({self.codec} needs at least 2x2 pixels)")
        import av

        name, options = self._preferred
        movflags = {"movflags": "+faststart"} if self.final.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
        with self._ffmpeg_errors():
            self._container = av.open(str(self.path), "w", format=_muxer(self.final.suffix.lower()), options=movflags)
        stream = self._container.add_stream(name, rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"  # 4:2:0 needs even sides
        stream.options = dict(options)
        stream.codec_context.thread_count = 1  # the pipeline's threads are planned (threads.py)
        self._stream = stream

    def write(self, image: np.ndarray) -> None:
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if self._cv is None and self._stream is None:
            self._open(image.shape[1], image.shape[0])
        if self._cv is not None:
            self._cv.write(image)
            return
        import av

        s = self._stream
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: s.height, : s.width]), format="bgr24")
        with self._ffmpeg_errors():
            for packet in s.encode(frame):
                self._container.mux(packet)

    def close(self) -> None:
        if self._cv is not None:
            self._cv.release()
        if self._stream is not None:
            with self._ffmpeg_errors():
                for packet in self._stream.encode():  # flush the encoder's delayed frames
                    self._container.mux(packet)
                self._container.close()

    @contextlib.contextmanager
    def _ffmpeg_errors(self):
        """FFmpeg's refusals as one line (an OSError, e.g. a full disk, passes through for the caller)."""
        import av

        try:
            yield
        except av.FFmpegError as e:
            if isinstance(e, OSError):
                raise
            reason = " ".join(str(e).split())[:160]
            raise UserError(f"{self.final}: cannot write this {self.codec} video here ({reason})") from None


def _muxer(ext: str) -> str:
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}[ext]
