"""The MEGC spotting protocol for licensed users: annotated long videos in, precision/recall/F1 out.

Annotations are CSV (export the datasets' spreadsheets to CSV first). Column names by convention, from the
datasets' public descriptions (not verified on the licensed files, which are not here):

- ``generic``: ``video``, ``onset``, ``offset`` (frame numbers), optional ``apex`` and ``type``;
- ``samm`` (SAMM Long Videos): ``Filename`` (``006_1_2``: video ``006_1``, its 2nd expression), ``Onset``,
  ``Apex``, ``Offset``, ``Type`` (``Micro - 1/2``, ``Macro``); 200 fps;
- ``casme2`` (CAS(ME)^2): ``video``, ``onset``, ``apex``, ``offset`` (0 where unmarked: apex mirrored), ``type``
  (``micro-expression``, ``macro-expression``); 30 fps.

Each video is a folder of frames (sorted by name) or a video file under ``--videos`` named as in the
annotations. The pipeline runs on it with spotting on (detection, alignment, tracks, as in ``run``), every
event of every track is an interval, and intervals are scored by the MEGC rule (IoU >= 0.5), per video and
pooled over all of them.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..metrics import f1_from_counts, spotting_scores


@dataclass(frozen=True)
class Convention:
    video: str
    onset: str
    offset: str
    apex: str | None
    kind: str | None
    fps: float | None
    video_of: Callable[[str], str] = lambda name: name


CONVENTIONS = {
    "generic": Convention("video", "onset", "offset", "apex", "type", None),
    "samm": Convention("Filename", "Onset", "Offset", "Apex", "Type", 200.0, lambda n: "_".join(n.split("_")[:2])),
    "casme2": Convention("video", "onset", "offset", "apex", "type", 30.0),
}


def read_annotations(path: str | os.PathLike, convention: str, include_macro: bool = False) -> dict:
    """``{video: [(onset, offset), ...]}`` of the micro-expressions (and macro ones with ``include_macro``)."""
    if convention not in CONVENTIONS:
        raise UserError(f"unknown --convention {convention!r} (choose from: {', '.join(CONVENTIONS)})")
    conv, p = CONVENTIONS[convention], Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{p}: cannot read the annotations ({type(e).__name__})") from None
    needed = [c for c in (conv.video, conv.onset, conv.offset) if not rows or c not in rows[0]]
    if not rows or needed:
        raise UserError(f"{p}: no {convention} annotation rows (columns {', '.join(needed) or 'present'}, empty file?)")
    out: dict[str, list[tuple[int, int]]] = {}
    for line, row in enumerate(rows, start=2):
        kind = (row.get(conv.kind or "") or "micro").strip().lower()
        if not include_macro and not kind.startswith("micro"):
            continue
        onset, offset = _frame(row, conv.onset, p, line), _frame(row, conv.offset, p, line)
        if offset <= 0 and conv.apex and row.get(conv.apex):  # unmarked offset: the apex mirrored
            offset = 2 * _frame(row, conv.apex, p, line) - onset
        if offset < onset:
            raise UserError(f"{p}, line {line}: offset {offset} is before onset {onset}")
        out.setdefault(conv.video_of(row[conv.video].strip()), []).append((onset, offset))
    return out


def _frame(row: dict, column: str, path: Path, line: int) -> int:
    try:
        return int(float(row[column]))
    except (TypeError, ValueError):
        raise UserError(f"{path}, line {line}: {column} is not a frame number ({row.get(column)!r})") from None


def find_video(root: Path, name: str) -> Path:
    """The folder of frames or the video file called ``name`` (any suffix) under ``root``."""
    if (root / name).is_dir():
        return root / name
    files = sorted(p for p in root.glob(f"{name}.*") if p.is_file())
    if not files:
        raise UserError(f"the annotations name video {name!r}, which is not under {root} (a folder or a file)")
    return files[0]


DEFAULT_FPS = 30.0


def _numbers(src) -> Callable[[int], int]:
    """Frame numbers as annotations count them: the digits that end each frame file's name where every file has
    them (SAMM and CAS(ME)^2 number their images), else the position from 0."""
    import re

    files = getattr(src, "paths", None)
    if files:
        nums = [re.search(r"(\d+)$", Path(f).stem) for f in files]
        if all(nums):
            table = [int(m.group(1)) for m in nums if m]
            return lambda i: table[i]
    return lambda i: i


def spot_video(path: Path, fps: float | None, loaded: Callable, warn: Callable[[str], None]) -> dict:
    """The pipeline over one video with spotting on (fresh tracks, flow and spotter state; ``loaded()`` gives the
    models and detector, loaded once for all videos): every track's events as (onset, offset) frame numbers."""
    from ..pipeline.loop import Pipeline
    from ..pipeline.sources import Frame, open_source
    from ..pipeline.spotter import StreamSpotter

    src = open_source(path)
    rate = fps or src.fps
    if not rate or not 1.0 <= rate <= 1000.0:
        warn(f"{path.name}: no usable frame rate ({rate!r}); assumed {DEFAULT_FPS:g} fps (give --fps)")
        rate = DEFAULT_FPS
    k = StreamSpotter().settings.frames(rate)
    if src.frame_count:  # known before decoding: a clip too short fails before any model loads
        _check_length(path, src.frame_count, k, rate, src)
    try:
        base = loaded().pipeline
        pipeline = Pipeline(base.detector, base.macro, None, base.settings)
        number = _numbers(src)
        intervals, n = [], 0
        for i, frame in enumerate(src):
            result = pipeline.process(Frame(number(i), i / rate, frame.image))
            n += 1
            for face in result.faces:
                intervals += [(e["onset_frame"], e["offset_frame"]) for e in face.micro_events or []]
    finally:
        src.close()
    _check_length(path, n, k, rate)
    return {"frames": n, "fps": rate, "spotted": intervals}


def _check_length(path: Path, frames: int, k: int, rate: float, src=None) -> None:
    window = 11 * k + 1  # what the live spotter keeps per track (pipeline/spotter.py)
    if frames < window:
        if src is not None:
            src.close()
        raise UserError(f"{path.name}: {frames} frames, shorter than the spotting window ({window} at {rate:g} fps)")


def evaluate_spotting(
    annotations: str | os.PathLike,
    videos: str | os.PathLike,
    convention: str = "generic",
    *,
    fps: float | None = None,
    include_macro: bool = False,
    macro: str = "emonas-macro",
    detector: str = "auto",
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """Per video and pooled MEGC scores (counts kept, so results over several runs can be pooled again)."""
    truth = read_annotations(annotations, convention, include_macro)
    root = Path(videos)
    if not root.is_dir():
        raise UserError(f"--videos {root}: not a folder")
    paths = {name: find_video(root, name) for name in truth}  # every video found before any runs
    rate = fps or CONVENTIONS[convention].fps
    from functools import cache

    from ..pipeline.loop import PipelineSettings
    from ..pipeline.runner import build_pipeline

    @cache
    def loaded():
        return build_pipeline(macro, None, detector=detector, settings=PipelineSettings(track=True, spotting=True))

    warnings: list[str] = []
    per_video, tp = {}, 0
    try:
        for name, path in paths.items():
            spotted = spot_video(path, rate, loaded, warnings.append)
            scores = spotting_scores(spotted["spotted"], truth[name])
            per_video[name] = {
                **scores,
                "frames": spotted["frames"],
                "fps": spotted["fps"],
                "intervals": spotted["spotted"],
            }
            tp += scores["tp"]
            log(f"{name}: {scores['tp']} of {scores['truth']} found, {scores['spotted']} spotted")
    finally:
        if loaded.cache_info().currsize:
            loaded().pipeline.detector.close()
    pooled = f1_from_counts(tp, sum(v["spotted"] for v in per_video.values()), sum(len(t) for t in truth.values()))
    return {"convention": convention, "iou": 0.5, "overall": pooled, "videos": per_video, "warnings": warnings}
