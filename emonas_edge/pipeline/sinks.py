"""Outputs: JSONL (one object per processed frame), CSV (one row per face) and annotated video.

Each writes to a hidden temporary file beside its target, flushed every frame, and is renamed
into place when the run ends, normally or not (camera unplugged, Ctrl-C, SIGTERM): what was
written is complete and valid, and no half-written file ever sits under the final name.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..errors import UserError
from ..fileio import os_faults, publish, publish_folder, write_fault
from .video import FORMATS, VideoEncoder

IMAGE_WRITE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class OutputError(UserError):
    """An output could not be written: the run's other outputs are not published either (all or none)."""


class _AtomicFile:
    def __init__(self, path: str | os.PathLike, suffix_keep: bool = False):
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"{self.path}: is a folder, expected a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{self.path.parent}: cannot create output folder ({e.strerror})") from e
        # video writers choose the container from the extension, so keep it last
        suffix = self.path.suffix if suffix_keep else ".partial"
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.",
                suffix=(".partial" + suffix) if suffix_keep else suffix,
                dir=self.path.parent,
            )
        except OSError as e:
            raise UserError(f"{self.path.parent}: cannot write output here ({e.strerror})") from e
        os.close(fd)
        self.tmp = Path(tmp)
        self.closed = False

    def _publish(self, keep: bool) -> None:
        if keep:
            publish(self.tmp, self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()


class _TextSink(_AtomicFile):
    def __init__(self, path):
        super().__init__(path)
        self._f = open(self.tmp, "w", encoding="utf-8", newline="")
        self.frames = 0

    def close(self, keep: bool = True) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._f.close()  # the last buffered bytes: a full disk can refuse them here
            except OSError as e:
                self._publish(False)
                raise write_fault(self.path, e, OutputError) from None
            self._publish(keep)


class JsonlSink(_TextSink):
    def write(self, result) -> None:
        with os_faults(self.path, OutputError):  # a full disk, a vanished folder
            self._f.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
            self._f.flush()
        self.frames += 1


class CsvSink(_TextSink):
    def __init__(self, path, macro_classes: tuple[str, ...] | None, micro_classes: tuple[str, ...] | None):
        super().__init__(path)
        self._w = csv.writer(self._f)
        self.macro_classes = macro_classes or ()
        self.micro_classes = micro_classes or ()
        self._w.writerow(
            [
                "file",
                "frame",
                "time",
                "track",
                "x1",
                "y1",
                "x2",
                "y2",
                "score",
                "macro_label",
                "macro_prob",
                "micro_label",
                "micro_prob",
                "untrained",
            ]
            + [f"macro_{c}" for c in self.macro_classes]
            + [f"micro_{c}" for c in self.micro_classes]
        )

    def write(self, result) -> None:
        for f in result.faces:
            macro = f.macro if f.macro is not None else None
            micro = f.micro if f.micro is not None else None
            row = [result.file or "", result.index, f"{result.time:.4f}", f.track]
            row += [*(f"{v:.1f}" for v in f.box), f"{f.score:.3f}"]
            row += (
                [self.macro_classes[int(np.argmax(macro))], f"{float(macro.max()):.4f}"]
                if macro is not None
                else ["", ""]
            )
            row += (
                [self.micro_classes[int(np.argmax(micro))], f"{float(micro.max()):.4f}"]
                if micro is not None
                else ["", ""]
            )
            row.append(";".join(f.untrained))
            row += [f"{v:.4f}" for v in macro] if macro is not None else [""] * len(self.macro_classes)
            row += [f"{v:.4f}" for v in micro] if micro is not None else [""] * len(self.micro_classes)
            with os_faults(self.path, OutputError):
                self._w.writerow(row)
        with os_faults(self.path, OutputError):
            self._f.flush()
        self.frames += 1


class EventsCsvSink(_TextSink):
    """``--events-csv``: one row per spotted micro-movement, written on the frame that decided it (0.8-1.0 s
    after its apex; the row holds the apex's own frame and time)."""

    COLUMNS = ("track", "region", "onset_frame", "apex_frame", "offset_frame", "onset", "apex", "offset", "strength")

    def __init__(self, path):
        super().__init__(path)
        self._w = csv.writer(self._f)
        self._w.writerow([*self.COLUMNS, "decided_frame"])

    def write(self, result) -> None:
        with os_faults(self.path, OutputError):
            for f in result.faces:
                for e in f.micro_events or ():
                    self._w.writerow([f.track, *(e[c] for c in self.COLUMNS[1:]), result.index])
            self._f.flush()
        self.frames += 1


class VideoSink(_AtomicFile):
    """The annotated video: H.264 / VP9 where PyAV is installed (browsers play it), else OpenCV's codecs
    (:mod:`.video`); ``note`` says when the file will not play in a browser."""

    def __init__(self, path, fps: float | None):
        p = Path(path)
        if p.suffix.lower() not in FORMATS:
            raise UserError(f"{p}: unsupported video extension (use one of: {', '.join(FORMATS)})")
        super().__init__(path, suffix_keep=True)
        self.fps = fps or 30.0
        self.encoder = VideoEncoder(self.tmp, self.fps, final=self.path)
        self.frames = 0

    @property
    def codec(self) -> str:
        return self.encoder.codec

    @property
    def note(self) -> str | None:
        return self.encoder.note

    def write(self, image: np.ndarray) -> None:
        try:
            with os_faults(self.path, OutputError):
                self.encoder.write(image)
        except UserError as e:
            raise OutputError(str(e)) from None
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        if not self.closed:
            self.closed = True
            try:
                with os_faults(self.path, OutputError):
                    self.encoder.close()
            except OutputError:
                self._publish(False)
                raise
            self._publish(keep and self.frames > 0)


class PhotoSink:
    """Annotated photos (``--save``): one file for one photo, or a folder of them for a folder of photos.

    Written like every output: into a hidden temporary file or folder beside the target, renamed into
    place when the run ends (with the other outputs, all or none). A folder target must be new or empty,
    so no earlier result and no input is ever overwritten; files keep their input names."""

    def __init__(self, target: str | os.PathLike, single: Path | None):
        """``single``: the one input photo (then ``target`` may name the output file), None for a folder."""
        self.path = Path(target)
        self.frames = 0
        self.closed = False
        as_file = single is not None and self.path.suffix.lower() in IMAGE_WRITE_SUFFIXES and not self.path.is_dir()
        self._file: _AtomicFile | None = None
        self._folder: Path | None = None
        if as_file:
            self._file = _AtomicFile(self.path, suffix_keep=True)
            return
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise UserError(f"--save {self.path}: already exists and is not an empty folder; give a new folder")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._folder = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent))
        except OSError as e:
            raise UserError(f"--save {self.path}: cannot write here ({e.strerror})") from None

    def write(self, result, image: np.ndarray) -> None:
        if self._file is not None:
            target = self._file.tmp
        else:
            assert self._folder is not None
            target = self._folder / Path(result.file or f"frame{result.index:06d}.jpg").name
        ok, buf = cv2.imencode(target.suffix if target.suffix.lower() in IMAGE_WRITE_SUFFIXES else ".jpg", image)
        if not ok:
            raise OutputError(f"--save {self.path}: cannot encode {target.name}")
        with os_faults(self.path, OutputError):
            target.write_bytes(buf.tobytes())
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if self._file is not None:
            self._file._publish(keep and self.frames > 0)
            return
        assert self._folder is not None
        if not (keep and self.frames > 0):
            shutil.rmtree(self._folder, ignore_errors=True)
            return
        try:
            with os_faults(self.path, OutputError):
                publish_folder(self._folder, self.path)
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)  # left only when the rename failed
