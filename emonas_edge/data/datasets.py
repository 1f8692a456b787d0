"""Labelled face images held in memory as uint8 arrays at the model's input size.

Small expression datasets fit in RAM (FER2013 train: 28,709 x 48 x 48 = 66 MB), and on a
2-core machine decoding JPEGs every epoch costs more than the network, so images are decoded
once, converted by the model's own preprocessing (size, gray/RGB) and cached on disk. Class
order always comes from the model's ``classes``, never from folder sort order.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import FER2013_CLASSES, ModelConfig
from ..errors import UserError
from ..fileio import cache_dir
from .preprocess import IMAGE_SUFFIXES, Preprocessor, read_image

MAX_UNREADABLE_FRACTION = 0.01


@dataclass
class ArrayDataset:
    """``images``: uint8 (N, H, W) gray or (N, H, W, 3) RGB at model size; ``labels``: int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """What a resumed run must see again: the images and labels, not the path they were read from."""
        h = hashlib.sha256(self.labels.tobytes())
        h.update(self.images.tobytes())
        return h.hexdigest()

    def counts(self) -> dict[str, int]:
        bc = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, bc, strict=True)}

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        return ArrayDataset(self.images[idx], self.labels[idx], self.classes, self.source, 0)


def _cache_key(kind: str, root: Path, config: ModelConfig, listing: list[tuple[str, int, int]]) -> str:
    h = hashlib.sha256()
    h.update(
        f"{kind}|{root.resolve()}|{config.input_size}|{config.preprocess.grayscale}|{list(config.classes)}".encode()
    )
    for name, size, mtime in listing:
        h.update(f"{name}|{size}|{mtime}\n".encode())
    return h.hexdigest()[:24]


def _load_cached(key: str) -> tuple[np.ndarray, np.ndarray, int] | None:
    path = cache_dir() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return z["images"], z["labels"], int(z["skipped"])
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None


def _store_cached(key: str, images: np.ndarray, labels: np.ndarray, skipped: int) -> None:
    from ..fileio import atomic_outputs

    try:
        with atomic_outputs(cache_dir() / f"{key}.npz") as (tmp,):
            with open(tmp, "wb") as f:
                np.savez(f, images=images, labels=labels, skipped=np.int64(skipped))
    except OSError:
        pass  # caching is an optimisation; a read-only home must not stop training


def load_image_folder(
    root: str | os.PathLike, config: ModelConfig, limit_per_class: int | None = None, cache: bool = True
) -> ArrayDataset:
    """``root/<class>/*.jpg`` (FER2013 images, RAF-DB basic, CK+ frames by class).

    Every sub-folder must be one of the model's classes; classes without a folder are allowed
    (a test split may lack one) but an empty class folder is an error. Unreadable images are
    skipped and counted; more than 1% unreadable is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{root} has no class folders (expected {root}/<class>/*.jpg)")
    lookup = {c.lower(): i for i, c in enumerate(config.classes)}
    unknown = [f.name for f in folders if f.name.lower() not in lookup]
    if unknown:
        raise UserError(
            f"{root}: folder(s) {', '.join(unknown)} are not classes of model '{config.name}' "
            f"({', '.join(config.classes)})"
        )
    files: list[tuple[Path, int]] = []
    for folder in folders:
        found = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise UserError(f"class folder {folder} holds no images")
        if limit_per_class:
            found = found[:limit_per_class]
        files += [(f, lookup[folder.name.lower()]) for f in found]
    return _decode_cached("folder", root, files, config, str(root), cache)


def _decode_cached(
    kind: str, root: Path, files: list[tuple[Path, int]], config: ModelConfig, source: str, cache: bool
) -> ArrayDataset:
    """Decode ``(file, label)`` pairs once at model size, or take them from the disk cache;
    missing and unreadable files are skipped and counted (more than 1% is an error)."""
    listing = [
        (str(f.relative_to(root)), *((f.stat().st_size, int(f.stat().st_mtime)) if f.is_file() else (-1, -1)))
        for f, _ in files
    ]
    key = _cache_key(kind, root, config, listing)
    cached = _load_cached(key) if cache else None
    if cached is not None:
        cached_images, cached_labels, cached_skipped = cached
        return ArrayDataset(cached_images, cached_labels, tuple(config.classes), source, cached_skipped)
    pre = Preprocessor(config)
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped = 0
    for f, label in files:
        img = read_image(f) if f.is_file() else None
        if img is None:
            skipped += 1
            continue
        images.append(pre.to_model_pixels(img))
        labels.append(label)
    _check_skipped(skipped, len(files), source)
    arr, lab = np.stack(images), np.asarray(labels, np.int64)
    if cache:
        _store_cached(key, arr, lab, skipped)
    return ArrayDataset(arr, lab, tuple(config.classes), source, skipped)


def _check_skipped(skipped: int, total: int, source: str) -> None:
    if total == 0 or skipped == total:
        raise UserError(f"{source}: no readable images ({skipped} unreadable)")
    if skipped / total > MAX_UNREADABLE_FRACTION:
        raise UserError(
            f"{source}: {skipped} of {total} images are unreadable (more than {MAX_UNREADABLE_FRACTION:.0%})"
        )


FER2013_USAGE = {
    "train": "Training",
    "training": "Training",
    "publictest": "PublicTest",
    "val": "PublicTest",
    "privatetest": "PrivateTest",
    "test": "PrivateTest",
}


@contextlib.contextmanager
def text_csv(path: str | os.PathLike) -> Iterator[None]:
    """Reading a CSV that turns out binary or badly quoted: one line naming it, not a decoder's traceback."""
    try:
        yield
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: not a readable text CSV ({type(e).__name__}: {str(e)[:80]})") from None


def load_fer2013_csv(path: str | os.PathLike, config: ModelConfig, usage: str = "Training") -> ArrayDataset:
    """The original ``fer2013.csv`` (``emotion,pixels,Usage``); ``usage`` selects Training/PublicTest/PrivateTest."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"FER2013 CSV not found: {path}")
    usage = FER2013_USAGE.get(usage.lower(), usage)
    if list(config.classes) != list(FER2013_CLASSES):
        raise UserError(
            f"FER2013 CSV labels are the 7 FER2013 classes; model '{config.name}' has {list(config.classes)}"
        )
    with text_csv(path):
        return _read_fer2013_csv(path, config, usage)


def _read_fer2013_csv(path: Path, config: ModelConfig, usage: str) -> ArrayDataset:
    pre = Preprocessor(config)
    images, labels, skipped, total = [], [], 0, 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        need = ["emotion", "pixels", "usage"]
        if not all(n in header for n in need):
            raise UserError(f"{path}: expected columns emotion,pixels,Usage, found {','.join(header) or 'nothing'}")
        ie, ip, iu = (header.index(n) for n in need)
        for row in reader:
            if len(row) <= max(ie, ip, iu) or row[iu].strip() != usage:
                continue
            total += 1
            try:
                label = int(row[ie])
                values = np.asarray(row[ip].split(), dtype=np.int64)
                if values.size != 48 * 48 or not 0 <= label < 7 or values.min() < 0 or values.max() > 255:
                    raise ValueError
                px = values.astype(np.uint8)
            except (ValueError, OverflowError):
                skipped += 1
                continue
            images.append(pre.to_model_pixels(px.reshape(48, 48)))
            labels.append(label)
    if total == 0:
        raise UserError(f"{path}: no rows with Usage={usage}")
    _check_skipped(skipped, total, str(path))
    return ArrayDataset(
        np.stack(images), np.asarray(labels, np.int64), tuple(config.classes), f"{path}:{usage}", skipped
    )


# RAF-DB "basic" as distributed: EmoLabel/list_patition_label.txt ("train_00001.jpg 5") and
# Image/aligned/train_00001_aligned.jpg (or Image/original/train_00001.jpg). Labels are 1-based.
RAFDB_LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}
RAFDB_LIST = Path("EmoLabel") / "list_patition_label.txt"
RAFDB_SPLIT = {
    "training": "train",
    "train": "train",
    "publictest": "test",
    "privatetest": "test",
    "val": "test",
    "test": "test",
}


def is_rafdb(root: str | os.PathLike) -> bool:
    return (Path(root) / RAFDB_LIST).is_file()


def load_rafdb(
    root: str | os.PathLike,
    config: ModelConfig,
    split: str = "train",
    limit_per_class: int | None = None,
    cache: bool = True,
) -> ArrayDataset:
    """RAF-DB basic in its own layout, so users need not re-sort 15,339 images into class folders.

    The aligned 100x100 face crops are used when present, else the originals (whole photos:
    crop faces first for those). ``split`` is ``train`` or ``test`` (the file-name prefix RAF-DB uses).
    """
    root = Path(root)
    if split.lower() not in RAFDB_SPLIT:
        raise UserError(f"{root}: unknown RAF-DB split {split!r} (train or test)")
    split = RAFDB_SPLIT[split.lower()]
    lookup = {c.lower(): i for i, c in enumerate(config.classes)}
    missing = sorted({n for n in RAFDB_LABELS.values() if n not in lookup})
    if missing:
        raise UserError(
            f"{root}: RAF-DB labels {', '.join(missing)} are not classes of model '{config.name}' "
            f"({', '.join(config.classes)})"
        )
    aligned = root / "Image" / "aligned"
    image_dir = aligned if aligned.is_dir() else root / "Image" / "original"
    if not image_dir.is_dir():
        raise UserError(f"{root}: RAF-DB images not found (expected Image/aligned/ or Image/original/)")
    entries: list[tuple[str, int]] = []
    per_class: dict[int, int] = {}
    for n, line in enumerate((root / RAFDB_LIST).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in RAFDB_LABELS:
            raise UserError(f"{root / RAFDB_LIST}:{n}: expected '<name>.jpg <label 1-7>', found {line.strip()!r}")
        if not parts[0].startswith(split + "_"):
            continue
        label = lookup[RAFDB_LABELS[int(parts[1])]]
        if limit_per_class and per_class.get(label, 0) >= limit_per_class:
            continue
        per_class[label] = per_class.get(label, 0) + 1
        name = parts[0]
        if image_dir == aligned:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}_aligned.{ext}"
        entries.append((name, label))
    if not entries:
        raise UserError(f"{root / RAFDB_LIST}: no {split}_* images listed")
    files = [(image_dir / name, label) for name, label in entries]
    return _decode_cached(f"rafdb-{split}", root, files, config, f"{root}:{split}", cache)


_SELECTOR = re.compile(r"(.+):(\w+)")


def _split_selector(source: str | os.PathLike) -> tuple[Path, str | None]:
    """``path:split`` -> (path, split) when ``path`` is a FER2013 CSV or a RAF-DB folder."""
    m = _SELECTOR.fullmatch(str(source))
    if m and not Path(source).exists() and (m.group(1).lower().endswith(".csv") or is_rafdb(m.group(1))):
        return Path(m.group(1)), m.group(2)
    return Path(source), None


def dataset_path_exists(source: str | os.PathLike) -> bool:
    """Whether ``source`` names something on disk (a ``:split`` suffix names a CSV or RAF-DB folder)."""
    return _split_selector(source)[0].exists()


def load_dataset(
    source: str | os.PathLike, config: ModelConfig, usage: str = "Training", limit_per_class: int | None = None
) -> ArrayDataset:
    """A class-folder tree, a FER2013 CSV (``path.csv`` or ``path.csv:PublicTest``) or a RAF-DB
    basic folder (``basic`` or ``basic:test``); ``usage`` picks the split when none is named."""
    path, split = _split_selector(source)
    if path.suffix.lower() == ".csv" and not path.is_dir():
        return load_fer2013_csv(path, config, split or usage)
    if is_rafdb(path):
        return load_rafdb(path, config, split or usage, limit_per_class=limit_per_class)
    return load_image_folder(path, config, limit_per_class=limit_per_class)
