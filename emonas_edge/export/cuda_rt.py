"""The CUDA runtime calls TensorRT needs around it (device memory, copies, a stream, which GPU), without PyTorch.

On a Jetson (JetPack 6) pip installs a CPU-only torch, so torch's CUDA tensors cannot hold an engine's buffers;
NVIDIA's own TensorRT samples use the CUDA runtime bindings of ``cuda-python`` instead, and so does this module:
``cuda.bindings.runtime`` (cuda-python >= 12.6 / cuda-bindings 13), or the older ``cuda.cudart`` where only
that exists. Every call returns its error first; a failure is one line naming the call. Not verified on
hardware: no GPU here (the tests exercise the error mapping only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MissingDependency, UserError


def runtime_module():
    """``cudart`` of cuda-python, whichever of its two homes this install has; a clear message otherwise."""
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6, cuda-bindings 13

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python < 12.6 (removed in cuda-bindings 13)

        return cudart
    except ImportError:
        raise MissingDependency(
            "cuda-python", "TensorRT engines (device memory, copies, streams)", "tensorrt"
        ) from None


def call(cudart, what: str, result):
    """``cudaX(...)`` returns ``(err, *values)``: the values, or a one-line error naming ``what``."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        raise UserError(f"CUDA {what} failed: {name}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def gpu_info(cudart=None) -> dict:
    """Name and compute capability ("8.7") of the current device. Raises when either cannot be read: an engine
    whose sidecar recorded an unknown GPU would be refused on every machine, so none is ever built."""
    cudart = cudart or runtime_module()
    device = call(cudart, "cudaGetDevice", cudart.cudaGetDevice())
    props = call(cudart, "cudaGetDeviceProperties", cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    name = name.rstrip("\x00").strip()
    if not name or props.major is None or props.minor is None:
        raise UserError("cannot tell this GPU's name and compute capability; an engine built now would load nowhere")
    return {"name": name, "compute_capability": f"{props.major}.{props.minor}"}


@dataclass
class DeviceBuffer:
    """Device memory of ``nbytes`` (grown on demand, never shrunk: batches vary between calls)."""

    cudart: object
    nbytes: int = 0
    ptr: int = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = int(call(self.cudart, "cudaMalloc", self.cudart.cudaMalloc(nbytes)))  # type: ignore[attr-defined]
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            call(self.cudart, "cudaFree", self.cudart.cudaFree(self.ptr))  # type: ignore[attr-defined]
        self.ptr, self.nbytes = 0, 0


def copy_in(cudart, device_ptr: int, host: np.ndarray, stream) -> None:
    kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    call(cudart, "cudaMemcpyAsync (to the GPU)", cudart.cudaMemcpyAsync(device_ptr, host, host.nbytes, kind, stream))


def copy_out(cudart, host: np.ndarray, device_ptr: int, stream) -> None:
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    call(cudart, "cudaMemcpyAsync (from the GPU)", cudart.cudaMemcpyAsync(host, device_ptr, host.nbytes, kind, stream))
