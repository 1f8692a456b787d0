"""Running a TensorRT engine behind the same :class:`Backend` interface as ONNX Runtime.

An engine only works with the TensorRT version and GPU that built it, and fails obscurely
(or not at all) elsewhere, so the sidecar written beside it is read and checked first: a
wrong, replaced or foreign file is a one-line error saying how to rebuild, before TensorRT is
even imported. Device memory, copies and the stream go through the CUDA runtime bindings
(:mod:`..export.cuda_rt`), not PyTorch: JetPack 6's pip torch has no CUDA. Not verified on hardware.
"""

from __future__ import annotations

import os

import numpy as np

from ..config import config_from_dict
from ..errors import CheckFailed, UserError
from ..export.cuda_rt import DeviceBuffer, call, copy_in, copy_out, runtime_module
from ..export.session import run_chunked
from ..export.tensorrt import SIDECAR_FORMAT, gpu_info, process_logger, require_tensorrt, sidecar_path
from ..fileio import existing_file, read_json, sha256_file
from .backend import Backend


def read_sidecar(engine_path: str | os.PathLike) -> dict:
    """The engine's sidecar, checked against the engine file (no TensorRT needed)."""
    engine = existing_file(engine_path, "TensorRT engine")
    side = sidecar_path(engine)
    if not side.is_file():
        raise UserError(
            f"{engine} has no sidecar {side} (it holds the labels, input spec and build settings); "
            "rebuild the engine with emonas-edge"
        )
    data = read_json(side, "TensorRT sidecar")
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise UserError(f"{side} is not an emonas-edge TensorRT sidecar (expected format {SIDECAR_FORMAT!r})")
    missing = [k for k in ("sha256", "tensorrt_version", "gpu", "input", "batch", "config", "trtexec") if k not in data]
    if missing:
        raise UserError(f"{side} lacks {', '.join(missing)}; rebuild the engine with emonas-edge")
    if sha256_file(engine) != data["sha256"]:
        raise UserError(
            f"{engine} does not match its sidecar {side.name} (sha256 differs): the engine was replaced "
            f"or is not an engine; rebuild it with: {data['trtexec']}"
        )
    return data


def _cuda_arch(cc) -> str:
    """``"8.6"`` -> ``"sm_86"``, the name TensorRT and nvcc use for a compute capability."""
    return "sm_" + str(cc).replace(".", "") if cc else "unknown sm"


def check_environment(sidecar: dict, tensorrt_version: str, gpu: dict) -> None:
    """UserError unless this TensorRT version and GPU are the ones the engine was built with."""
    built = sidecar.get("gpu") or {}
    if (
        sidecar.get("tensorrt_version") != tensorrt_version
        or built.get("name") != gpu.get("name")
        or built.get("compute_capability") != gpu.get("compute_capability")
    ):
        raise UserError(
            f"engine built for TensorRT {sidecar.get('tensorrt_version')} on GPU {built.get('name')} "
            f"({_cuda_arch(built.get('compute_capability'))}), "
            f"but this is TensorRT {tensorrt_version} on {gpu.get('name')} "
            f"({_cuda_arch(gpu.get('compute_capability'))}); rebuild it on this device with: {sidecar.get('trtexec')}"
        )


class TrtBackend(Backend):
    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike):
        side = read_sidecar(engine_path)
        self.sidecar, self.path = side, str(engine_path)
        self.config = config_from_dict(side["config"], str(sidecar_path(engine_path)))
        self.static_batch = side["batch"].get("static")
        self.min_batch = self.static_batch or int(side["batch"].get("min", 1))
        self.max_batch = self.static_batch or int(side["batch"]["max"])
        trt = require_tensorrt("running TensorRT engines")
        self._cudart = cudart = runtime_module()
        check_environment(side, trt.__version__, gpu_info())
        self._trt = trt
        self._stream = call(cudart, "cudaStreamCreate", cudart.cudaStreamCreate())
        self._runtime = trt.Runtime(process_logger(trt))  # TensorRT keeps a process's first logger: one for all
        with open(engine_path, "rb") as f:
            self.engine = self._runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise UserError(
                f"{engine_path} could not be loaded by TensorRT {trt.__version__} (not an engine, or "
                f"corrupt); rebuild it with: {side['trtexec']}"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:  # Jetson's GPU shares the board's memory: out of it, TensorRT returns None
            raise UserError(f"TensorRT could not create an execution context for {engine_path} (out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1 or not self.outputs:
            raise UserError(
                f"{engine_path} has {len(self.inputs)} inputs and {len(self.outputs)} outputs; "
                "expected one image input and a score output"
            )
        self._buffers = {n: DeviceBuffer(cudart) for n in names}

    def _dtype(self, name: str) -> type:
        dt = self.engine.get_tensor_dtype(name)
        if dt == self._trt.float32:
            return np.float32
        if dt == self._trt.float16:
            return np.float16
        raise UserError(f"{self.path}: tensor {name!r} has type {dt}; only float32/float16 I/O is supported")

    def run(self, x: np.ndarray) -> np.ndarray:
        """Scores for every row of ``x``, in chunks the engine's profile takes (padded up to its minimum)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.static_batch and len(x) != self.static_batch:
            raise UserError(f"{self.path} is built for batch {self.static_batch}, got {len(x)} (use run_all to pad)")
        return run_chunked(self._run_chunk, x, self.static_batch, len(self.classes), self.max_batch, self.min_batch)

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        cudart, ctx, (name,) = self._cudart, self.context, self.inputs
        host_in: np.ndarray = np.ascontiguousarray(x, dtype=self._dtype(name))
        if not ctx.set_input_shape(name, tuple(host_in.shape)):
            raise UserError(f"{self.path}: input shape {tuple(host_in.shape)} is outside the engine's profile")
        ptr = self._buffers[name].ensure(host_in.nbytes)
        ctx.set_tensor_address(name, ptr)
        copy_in(cudart, ptr, host_in, self._stream)
        host_outs = []
        for out_name in self.outputs:
            host = np.empty(tuple(ctx.get_tensor_shape(out_name)), dtype=self._dtype(out_name))
            ctx.set_tensor_address(out_name, self._buffers[out_name].ensure(host.nbytes))
            host_outs.append(host)
        if not ctx.execute_async_v3(self._stream):
            raise CheckFailed(f"TensorRT failed to run {self.path}")
        for out_name, host in zip(self.outputs, host_outs, strict=True):
            copy_out(cudart, host, self._buffers[out_name].ptr, self._stream)
        call(cudart, "cudaStreamSynchronize", cudart.cudaStreamSynchronize(self._stream))
        return host_outs[0].astype(np.float32)

    def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()


__all__ = ["TrtBackend", "read_sidecar", "check_environment"]
