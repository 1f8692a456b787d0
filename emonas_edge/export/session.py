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


def batch_chunks(n: int, min_batch: int, max_batch: int) -> list[tuple[int, int, int]]:
    """``(start, stop, padded)`` slices of ``n`` rows for a batch range ``min_batch``..``max_batch`` (a fixed batch,
    a TensorRT optimisation profile):
    at most ``max_batch`` rows each; a last chunk smaller than ``min_batch`` is padded up to it (repeating its
    last row) and its extra outputs dropped, since ``set_input_shape`` refuses a batch below the profile."""
    if not 1 <= min_batch <= max_batch:
        raise UserError(f"profile batch must satisfy 1 <= min <= max; got {min_batch}..{max_batch}")
    chunks = []
    for start in range(0, n, max_batch):
        stop = min(start + max_batch, n)
        chunks.append((start, stop, max(stop - start, min_batch)))
    return chunks


def padded(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` with its last row repeated up to ``rows`` rows (the pad's outputs are discarded)."""
    if len(x) >= rows:
        return x
    return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


def run_chunked(
    run: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    fixed: int | None,
    n_out: int,
    batch: int = 256,
    min_batch: int = 1,
) -> np.ndarray:
    """Any number of samples through ``run``, in chunks; a fixed-batch artifact gets padded chunks, and so does a
    chunk below ``min_batch`` (a TensorRT profile's minimum)."""
    lo, hi = (fixed, fixed) if fixed else (min_batch, batch)
    outs = [
        run(np.ascontiguousarray(padded(x[start:stop], rows)))[: stop - start]
        for start, stop, rows in batch_chunks(len(x), lo, hi)
    ]
    return np.concatenate(outs) if outs else np.zeros((0, n_out), np.float32)
