"""Numbered run folders (``runs/run``, ``runs/run2``, … ``runs/train3``) for commands given no output path.

Ultralytics users expect a command without output flags to keep its results somewhere they can find, and
to never write over an earlier run's. Numbered rather than timestamped: short to type back
(``--resume --out runs/train3``) and sorted by creation. Each folder is claimed with an exclusive ``mkdir``,
so two processes started together still get different folders. The root is ``./runs`` unless the
``EMONAS_RUNS`` environment variable names another (the test suite points it at a temporary folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UserError

RUNS_ENV = "EMONAS_RUNS"


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV) or "runs")


def _numbers(root: Path, kind: str) -> dict[int, Path]:
    """``{number: folder}`` of ``kind``'s folders under ``root`` (``kind`` itself is number 1)."""
    if not root.is_dir():
        return {}
    pattern = re.compile(rf"{re.escape(kind)}(\d*)")
    found = {}
    for p in root.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_dir() and (not m.group(1) or int(m.group(1)) >= 2):
            found[int(m.group(1) or 1)] = p
    return found


def new_run_dir(kind: str) -> Path:
    """Claim the next free numbered folder for ``kind`` (one past the highest, so numbers are never reused)."""
    root = runs_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        n = max(_numbers(root, kind), default=0) + 1
        while True:
            path = root / (kind if n == 1 else f"{kind}{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:  # another process claimed it first, or a file of that name
                n += 1
    except OSError as e:
        raise UserError(
            f"cannot make a run folder under {root} ({e.strerror or e}); give an output path, or set {RUNS_ENV}"
        ) from None


def latest_run_dir(kind: str) -> Path | None:
    """The highest-numbered existing folder of ``kind`` (what ``train --resume`` without ``--out`` continues)."""
    found = _numbers(runs_root(), kind)
    return found[max(found)] if found else None


def release_if_empty(path: Path) -> None:
    """A claimed folder nothing was written into is removed again (a run that failed before its first output)."""
    try:
        path.rmdir()
    except OSError:
        pass
