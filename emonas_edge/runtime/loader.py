"""Which backend runs a model, picked from what the user named: the one place that opens models."""

from __future__ import annotations

import os

from ..errors import UserError
from ..export.formats import format_of
from ..resolve import load_model, source_kind
from .backend import Backend

ENGINES = ("auto", "torch", "onnxruntime")


def load_backend(
    spec: str | os.PathLike, provider: str | None = None, threads: int | None = None, engine: str = "torch"
) -> Backend:
    """An ``.onnx`` file runs in ONNX Runtime, a TensorRT engine in TensorRT. A built-in name,
    checkpoint or genotype runs in PyTorch with ``engine="torch"`` and no ``provider``; with
    ``"onnxruntime"``/``"auto"`` or a provider it is exported once (parity checked) into the cache and
    run in ONNX Runtime (several times faster per face on a CPU), on that provider or not at all."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (choose from: {', '.join(ENGINES)})")
    # each backend's libraries load only when a model needs them (importing the runtime stays cheap)
    if format_of(spec) == "engine":
        from .tensorrt import TrtBackend

        return TrtBackend(spec)
    onnx_file = source_kind(spec) == "onnx"
    # a provider is an ONNX Runtime one: asking for it must not quietly run PyTorch on the CPU instead
    if onnx_file or engine in ("auto", "onnxruntime") or provider:
        from .compiled import cached_onnx  # a cache miss exports, which loads PyTorch
        from .ort_backend import OrtBackend

        return OrtBackend(spec if onnx_file else cached_onnx(spec), provider, threads)
    from .torch_backend import TorchBackend

    config, model, weights = load_model(spec)
    return TorchBackend(config, model, str(weights or spec), threads)
