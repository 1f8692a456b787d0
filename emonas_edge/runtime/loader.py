"""Which backend runs a model, picked from what the user named: the one place that opens models."""

from __future__ import annotations

import os

from ..deps import has_torch, require_torch
from ..errors import UserError
from ..export.formats import format_of
from ..resolve import builtin_entry, load_model, source_kind
from .backend import Backend
from .foreign import ForeignSpec

ENGINES = ("auto", "torch", "onnxruntime")


def load_backend(
    spec: str | os.PathLike,
    provider: str | None = None,
    threads: int | None = None,
    engine: str = "torch",
    spinning: bool = True,
    foreign: ForeignSpec | None = None,
) -> Backend:
    """An ``.onnx`` file runs in ONNX Runtime, a TensorRT engine in TensorRT. A built-in name,
    checkpoint or genotype runs in PyTorch with ``engine="torch"`` and no ``provider``; with
    ``"onnxruntime"``/``"auto"`` or a provider it is exported once (parity checked) into the cache and
    run in ONNX Runtime (several times faster per face on a CPU), on that provider or not at all. A
    trained built-in needs no export: its verified ONNX ships with it, and a runtime-only install
    (no PyTorch) runs it there whatever the engine. ``foreign`` describes an ``.onnx`` file made elsewhere."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (choose from: {', '.join(ENGINES)})")
    # each backend's libraries load only when a model needs them (importing the runtime stays cheap)
    if format_of(spec) == "engine":
        from .tensorrt import TrtBackend

        return TrtBackend(spec)
    kind = source_kind(spec)
    if foreign is not None and kind != "onnx":
        raise UserError(f"--classes describes an ONNX file made elsewhere; {spec} is not an .onnx file")
    entry = builtin_entry(spec)
    shipped = entry is not None and entry.onnx is not None
    # a provider is an ONNX Runtime one: asking for it must not quietly run PyTorch on the CPU instead;
    # a runtime-only install (no PyTorch) runs a built-in from the export that ships with it
    if kind == "onnx" or engine in ("auto", "onnxruntime") or provider or (shipped and not has_torch()):
        from .compiled import cached_onnx  # a cache miss exports (loading PyTorch) unless the built-in ships ONNX
        from .ort_backend import OrtBackend

        return OrtBackend(spec if kind == "onnx" else cached_onnx(spec), provider, threads, spinning, foreign)
    require_torch(f"running {spec} in PyTorch (or anything but a trained built-in or an .onnx file)")
    from .torch_backend import TorchBackend

    config, model, weights = load_model(spec)
    return TorchBackend(config, model, str(weights or spec), threads)
