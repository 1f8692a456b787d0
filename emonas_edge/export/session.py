"""ONNX Runtime sessions, opened one way for every artifact this project runs.

Export must run what it builds (the precision gate scores and times its candidates) without
importing the runtime layer above it, and the runtime must serve the very same sessions, or a
gated artifact could behave differently in use. So the recipe (quiet logging, thread counts,
provider choice with CPU fallback) and the batching of long inputs live here, once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import UserError

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(provider: str | None, available: list[str]) -> list[str]:
    """The named provider (CPU kept as fallback), or the fastest ones this machine has."""
    if not provider:
        return [p for p in PREFERENCE if p in available]
    wanted = PROVIDER_NAMES.get(provider.lower(), provider)
    if wanted not in available:
        raise UserError(f"ONNX Runtime provider {provider!r} is not available here (available: {', '.join(available)})")
    return [wanted] + (["CPUExecutionProvider"] if wanted != "CPUExecutionProvider" else [])


def open_session(model: bytes | str, provider: str | None = None, threads: int | None = None, spinning: bool = True):
    """An ``InferenceSession`` for serialized ONNX (or a file path); ``threads`` pins intra-op threads.

    ``spinning=False``: the intra-op pool sleeps between kernels instead of spin-waiting, which a model
    timed alone gains a little from and a pipeline stage beside it pays for (threads.py)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=choose_providers(provider, ort.get_available_providers()))


def static_batch(session) -> int | None:
    """The fixed batch of the session's input, None for a dynamic batch axis."""
    dim0 = session.get_inputs()[0].shape[0]
    return dim0 if isinstance(dim0, int) else None


def run_chunked(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, fixed: int | None, n_out: int, batch: int = 256
) -> np.ndarray:
    """Any number of samples through ``run``, in chunks; a fixed-batch artifact gets padded chunks."""
    b = fixed or batch
    outs = []
    for i in range(0, len(x), b):
        chunk = x[i : i + b]
        n = len(chunk)
        if fixed and n < b:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
        outs.append(run(np.ascontiguousarray(chunk))[:n])
    return np.concatenate(outs) if outs else np.zeros((0, n_out), np.float32)
