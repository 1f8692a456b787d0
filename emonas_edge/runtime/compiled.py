"""A cache of ONNX exports for models given as built-in names, checkpoints or genotypes.

The pipeline runs faster in ONNX Runtime than in PyTorch (per-call overhead dominates tiny
networks), but users name models the same way everywhere. The first use exports through the
normal verified path (checker, simplifier, parity against PyTorch) into
``$EMONAS_EDGE_CACHE/onnx/<key>/``. The key hashes the files that define the model (genotype,
weights or checkpoint) and the versions that shape the graph, so a retrained checkpoint never
reuses a stale artifact, and a cache hit needs neither PyTorch nor a model build (the pipeline
then stays a few hundred MB lighter). A trained built-in's first use copies the exports that ship with
it (``make zoo-onnx``), which is what lets a runtime-only install run built-ins by name.
"""

from __future__ import annotations

import hashlib
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .. import __version__
from ..fileio import cache_dir, copy_atomic, sha256_file


def cache_root() -> Path:
    return cache_dir() / "onnx"


def _key(spec: str | os.PathLike) -> str:
    from ..resolve import source_kind
    from ..zoo import builtin

    h = hashlib.sha256()
    kind = source_kind(spec)
    if kind == "builtin":
        entry = builtin(str(spec))
        assert entry is not None  # source_kind said so
        files = [entry.genotype] + ([entry.weights] if entry.weights else [])
    else:
        files = [Path(spec)]
    for f in files:
        h.update(f"{Path(f).name}|{sha256_file(f)}\n".encode())
    try:
        torch_version = version("torch")
    except PackageNotFoundError:  # pragma: no cover - torch is a core dependency
        torch_version = "none"
    h.update(f"{kind}|emonas-edge {__version__}|torch {torch_version}".encode())
    return h.hexdigest()[:20]


def cached_onnx(spec: str | os.PathLike) -> Path:
    """Path of the verified ONNX export of ``spec``, exporting it on first use."""
    out = cache_root() / _key(spec)
    # the fp32 export only: derived precisions (<name>.int8.onnx) may sit beside it
    found = sorted(p for p in out.glob("*.onnx") if p.name.count(".") == 1) if out.is_dir() else []
    if found:
        return found[0]
    shipped = _shipped(spec)
    if shipped:  # a trained built-in's verified exports ship with it: no PyTorch, no export
        for f in shipped:
            copy_atomic(f, out / f.name)
        return out / shipped[0].name
    from ..export.onnx import export_onnx
    from ..resolve import load_model

    config, model, weights = load_model(spec)
    # an untrained model's random weights are as good as any others: the first export is kept
    return export_onnx(config, model, out, weights=weights).path


def _shipped(spec: str | os.PathLike) -> list[Path]:
    """The fp32 export a trained built-in ships with, then its gated INT8 one where there is one. Copied
    into the cache rather than used in place, so precisions derived later land there, not in the package."""
    from ..resolve import builtin_entry

    entry = builtin_entry(spec)
    if entry is None or entry.onnx is None:
        return []
    return [entry.onnx] + ([entry.onnx_int8] if entry.onnx_int8 else [])
