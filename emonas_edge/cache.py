"""What ``$EMONAS_EDGE_CACHE`` holds, and clearing it (``emonas-edge cache list|clear``).

Four kinds of entries, each rebuilt on demand when missing: ONNX exports of models named by built-in
name, checkpoint or genotype (``onnx/<key>/``, made on first use by ``run``, ``profile`` and the like),
decoded datasets (``<key>.npz``: FER2013 folders read once into arrays), micro-expression clips turned
into dynamic images (``micro-<key>.npz``) and teachers' offline distillation targets
(``distill-<key>.npz``). Only those are ever deleted: a cache folder pointed somewhere shared loses
nothing else.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .fileio import cache_dir

KINDS = ("onnx", "data", "micro", "distill")


def _kind(path: Path) -> str | None:
    if path.is_dir() and path.parent.name == "onnx":
        return "onnx"
    if path.is_file() and path.suffix == ".npz":
        return next((k for k in ("micro", "distill") if path.name.startswith(f"{k}-")), "data")
    return None


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cache_entries(root: Path | None = None) -> list[dict]:
    """One row per entry: kind, path, bytes, and for exports the model files it holds."""
    root = root or cache_dir()
    candidates = [*sorted((root / "onnx").glob("*")), *sorted(root.glob("*.npz"))] if root.is_dir() else []
    rows = []
    for p in candidates:
        kind = _kind(p)
        if kind is None:
            continue
        row = {"kind": kind, "path": str(p), "bytes": _bytes(p)}
        if kind == "onnx":
            row["files"] = sorted(f.name for f in p.glob("*.onnx"))
        rows.append(row)
    return rows


def clear_cache(kinds: tuple[str, ...] = KINDS, root: Path | None = None) -> tuple[int, int]:
    """Delete the entries of ``kinds``; ``(entries removed, bytes freed)``."""
    removed = freed = 0
    for row in cache_entries(root):
        if row["kind"] not in kinds:
            continue
        p = Path(row["path"])
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed, freed = removed + 1, freed + row["bytes"]
    return removed, freed
