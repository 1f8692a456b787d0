"""Micro-expression clip datasets: annotation conventions, MEGC2019 labels, dynamic-image caching.

A dataset is a folder of frames per clip (``root/<subject>/<clip>/<frames>``) plus an annotation
CSV. CASME II, SAMM and SMIC name their columns, subjects and emotions differently; an adapter
maps each to ``(subject, clip, onset, apex, offset, label)``. With ``megc=True`` emotions become the
MEGC2019 composite classes (negative / positive / surprise) and the rest (e.g. "others") is
dropped. Each clip becomes one dynamic image, cached on disk under a key of every setting.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import UserError
from ..fileio import cache_dir
from .datasets import ArrayDataset, text_csv
from .dynamic_image import dynamic_image, select_span
from .preprocess import IMAGE_SUFFIXES, Preprocessor, read_image

MEGC2019 = {
    "negative": "negative",
    "repression": "negative",
    "anger": "negative",
    "contempt": "negative",
    "disgust": "negative",
    "fear": "negative",
    "sadness": "negative",
    "positive": "positive",
    "happiness": "positive",
    "surprise": "surprise",
}


@dataclass(frozen=True)
class Convention:
    """Column names (lower-cased) and how a subject folder is named."""

    name: str
    subject: tuple[str, ...]
    clip: tuple[str, ...]
    onset: tuple[str, ...]
    apex: tuple[str, ...]
    offset: tuple[str, ...]
    label: tuple[str, ...]
    subject_dir: str = "{subject}"


CONVENTIONS = {
    c.name: c
    for c in (
        Convention("generic", ("subject",), ("clip",), ("onset",), ("apex",), ("offset",), ("label",)),
        # CASME II coding sheet: Subject 1 -> folder sub01; Filename EP02_01f; emotion "Estimated Emotion".
        Convention(
            "casme2",
            ("subject",),
            ("filename",),
            ("onsetframe", "onset frame"),
            ("apexframe", "apex frame"),
            ("offsetframe", "offset frame"),
            ("estimated emotion", "emotion"),
            "sub{subject:0>2}",
        ),
        # SAMM: Subject 006, Filename 006_1_2, "Onset Frame", "Apex Frame", "Offset Frame", "Estimated Emotion".
        Convention(
            "samm",
            ("subject",),
            ("filename",),
            ("onset frame", "onsetframe"),
            ("apex frame", "apexframe"),
            ("offset frame", "offsetframe"),
            ("estimated emotion", "emotion"),
            "{subject:0>3}",
        ),
        # SMIC-HS: subject s1, clip s1_po_01, negative/positive/surprise, onset/offset (no apex).
        Convention(
            "smic",
            ("subject",),
            ("clip", "filename"),
            ("onset", "onset frame"),
            ("apex",),
            ("offset", "offset frame"),
            ("label", "emotion"),
            "{subject}",
        ),
    )
}


@dataclass(frozen=True)
class ClipAnnotation:
    subject: str
    clip: str
    onset: int
    apex: int | None
    offset: int
    label: str


def _column(header: list[str], names: tuple[str, ...], required: bool, path: Path) -> int | None:
    for n in names:
        if n in header:
            return header.index(n)
    if required:
        raise UserError(f"{path}: no column {' or '.join(repr(n) for n in names)} (found {', '.join(header)})")
    return None


def read_annotations(
    path: str | os.PathLike, convention: str = "generic", megc: bool = True
) -> tuple[list[ClipAnnotation], dict]:
    """Parse an annotation CSV; returns ``(clips, counts)`` where counts say what was dropped and why."""
    with text_csv(path):
        return _read_annotations(Path(path), convention, megc)


def _read_annotations(path: Path, convention: str, megc: bool) -> tuple[list[ClipAnnotation], dict]:
    if not path.is_file():
        raise UserError(f"annotation file not found: {path}")
    if convention not in CONVENTIONS:
        raise UserError(f"unknown annotation convention {convention!r} (known: {', '.join(CONVENTIONS)})")
    conv = CONVENTIONS[convention]
    clips, counts = [], {"rows": 0, "unmapped_label": 0, "bad_frames": 0}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if not header:
            raise UserError(f"{path} is empty")
        cols = {
            k: _column(header, getattr(conv, k), k != "apex", path)
            for k in ("subject", "clip", "onset", "apex", "offset", "label")
        }
        for lineno, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            counts["rows"] += 1
            value = {k: row[i].strip() if i is not None and i < len(row) else "" for k, i in cols.items()}
            label = value["label"].lower()
            if megc:
                if label not in MEGC2019:
                    counts["unmapped_label"] += 1
                    continue
                label = MEGC2019[label]
            try:
                onset, offset = int(float(value["onset"])), int(float(value["offset"]))
                apex_s = value["apex"]
                apex = int(float(apex_s)) if apex_s and apex_s not in ("/", "-") else None
            except ValueError:
                counts["bad_frames"] += 1
                continue
            if onset > offset:
                raise UserError(f"{path}:{lineno}: onset {onset} is after offset {offset} (clip {value['clip']})")
            subject = conv.subject_dir.format(subject=value["subject"])
            clips.append(ClipAnnotation(subject, value["clip"], onset, apex, offset, label))
    if not clips:
        raise UserError(f"{path}: no usable clips ({counts})")
    return clips, counts


_NUM = re.compile(r"(\d+)(?!.*\d)")


def clip_frames(root: Path, ann: ClipAnnotation) -> dict[int, Path]:
    """Frame number -> file, numbers taken from the last digits in each file name."""
    folder = root / ann.subject / ann.clip
    if not folder.is_dir():
        # No searching elsewhere: CASME II reuses clip names across subjects, and a clip found
        # under another subject would leak between leave-one-subject-out folds.
        raise FileNotFoundError(f"no frame folder for clip {ann.clip} (looked for {folder})")
    frames = {}
    for f in folder.iterdir():
        if f.suffix.lower() in IMAGE_SUFFIXES:
            m = _NUM.search(f.stem)
            if m:
                frames[int(m.group(1))] = f
    return frames


def load_micro_dataset(
    frames_root: str | os.PathLike,
    annotations: str | os.PathLike,
    config: ModelConfig,
    convention: str = "generic",
    mode: str = "onset-offset",
    window: int | None = None,
    max_frames: int = 64,
    cache: bool = True,
) -> tuple[ArrayDataset, list[str]]:
    """Dynamic images of every annotated clip; returns ``(dataset, subject of each sample)``."""
    root = Path(frames_root)
    if not root.is_dir():
        raise UserError(f"frames folder not found: {root}")
    clips, counts = read_annotations(
        annotations, convention, megc=list(config.classes) == ["negative", "positive", "surprise"]
    )
    lookup = {c: i for i, c in enumerate(config.classes)}
    pre = Preprocessor(config)
    h = hashlib.sha256()
    h.update(
        f"{root.resolve()}|{Path(annotations).resolve()}|{Path(annotations).stat().st_mtime}|{convention}|{mode}|{window}|"
        f"{max_frames}|{config.input_size}|{config.preprocess.grayscale}|{list(config.classes)}".encode()
    )
    # frames changed on disk -> a new key (folder mtimes change when files are added/removed/replaced)
    for ann in clips:
        folder = root / ann.subject / ann.clip
        if folder.is_dir():
            st = folder.stat()
            newest = max((f.stat().st_mtime_ns for f in folder.iterdir()), default=0)
            h.update(f"{ann.subject}/{ann.clip}|{st.st_mtime_ns}|{newest}\n".encode())
    key = h.hexdigest()[:24]
    cache_file = cache_dir() / f"micro-{key}.npz"
    if cache and cache_file.is_file():
        with np.load(cache_file) as z:
            return ArrayDataset(z["images"], z["labels"], tuple(config.classes), str(annotations), int(z["skipped"])), [
                str(x) for x in z["subjects"]
            ]
    images, labels, subjects, missing = [], [], [], []
    for ann in clips:
        if ann.label not in lookup:
            raise UserError(
                f"clip {ann.clip}: label {ann.label!r} is not a class of model '{config.name}' "
                f"({', '.join(config.classes)})"
            )
        try:
            frames = clip_frames(root, ann)
            first, last = select_span(ann.onset, ann.apex, ann.offset, mode, window)
        except (FileNotFoundError, ValueError) as e:
            missing.append(f"{ann.clip}: {e}")
            continue
        chosen = [frames[i] for i in range(first, last + 1) if i in frames]
        if len(chosen) < 2:
            missing.append(f"{ann.clip}: frames {first}..{last} not found in its folder")
            continue
        if len(chosen) > max_frames:  # long clips: evenly spaced frames keep the motion, bound the cost
            chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, max_frames).round().astype(int)]
        stack = [pre.to_model_pixels(img) for img in (read_image(p) for p in chosen) if img is not None]
        if len(stack) < 2:
            missing.append(f"{ann.clip}: frames unreadable")
            continue
        images.append(dynamic_image(np.stack(stack)))
        labels.append(lookup[ann.label])
        subjects.append(ann.subject)
    if missing and len(missing) > 0.05 * len(clips):
        raise UserError(f"{len(missing)} of {len(clips)} annotated clips have missing frames, e.g. {missing[0]}")
    if not images:
        raise UserError(f"no clip of {annotations} could be turned into a dynamic image")
    ds = ArrayDataset(
        np.stack(images), np.asarray(labels, np.int64), tuple(config.classes), str(annotations), len(missing)
    )
    if cache:
        from ..fileio import atomic_outputs

        with atomic_outputs(cache_file) as (tmp,):
            with open(tmp, "wb") as f:
                np.savez(
                    f, images=ds.images, labels=ds.labels, subjects=np.asarray(subjects), skipped=np.int64(len(missing))
                )
    return ds, subjects


def loso_folds(subjects: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Leave-one-subject-out: ``(held-out subject, train indices, test indices)`` per subject."""
    subj = np.asarray(subjects)
    return [(s, np.flatnonzero(subj != s), np.flatnonzero(subj == s)) for s in sorted(set(subjects))]
