"""Backend interface and the PyTorch / ONNX Runtime implementations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import UserError


class Backend:
    """``run(x)``: float32 NCHW batch (already preprocessed) -> float32 logits (N, classes)."""

    name = "base"
    config: ModelConfig
    static_batch: int | None = None
    path: str

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @property
    def trained(self) -> bool:
        return self.config.trained

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def run_all(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """Any number of samples, in chunks; a static-batch artifact gets padded chunks."""
        b = self.static_batch or batch
        outs = []
        for i in range(0, len(x), b):
            chunk = x[i : i + b]
            n = len(chunk)
            if self.static_batch and n < b:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
            outs.append(self.run(np.ascontiguousarray(chunk))[:n])
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes)), np.float32)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, config: ModelConfig, model, path: str, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.config, self.model, self.path = config, model.eval(), path
        self._torch = torch

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(x)).float().numpy()


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, provider: str | None = None, threads: int | None = None):
        import onnxruntime as ort

        from ..export.metadata import config_from_metadata, load_onnx, read_metadata

        proto = load_onnx(path)
        config = config_from_metadata(read_metadata(proto), str(path))
        if config is None:
            raise UserError(f"{path} carries no emonas-edge metadata (classes, input spec); export it with emonas-edge")
        available = ort.get_available_providers()
        if provider:
            wanted = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}.get(provider.lower(), provider)
            if wanted not in available:
                raise UserError(f"ONNX Runtime provider {provider!r} is not available here (available: {', '.join(available)})")
            providers = [wanted] + (["CPUExecutionProvider"] if wanted != "CPUExecutionProvider" else [])
        else:
            order = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
            providers = [p for p in order if p in available]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(proto.SerializeToString(), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        dim0 = self.session.get_inputs()[0].shape[0]
        self.static_batch = dim0 if isinstance(dim0, int) else None
        self.config, self.path = config, str(path)
        self.providers = self.session.get_providers()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


ENGINES = ("auto", "torch", "onnxruntime")


def load_backend(spec: str | os.PathLike, provider: str | None = None, threads: int | None = None, engine: str = "torch") -> Backend:
    """An ``.onnx`` file runs in ONNX Runtime. A built-in name, checkpoint or genotype runs in
    PyTorch with ``engine="torch"``; with ``"onnxruntime"``/``"auto"`` it is exported once (parity
    checked) into the cache and run in ONNX Runtime, several times faster per face on a CPU."""
    from ..api import load_model, source_kind

    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (choose from: {', '.join(ENGINES)})")
    if str(spec).lower().endswith((".engine", ".plan", ".trt")):
        from .tensorrt import TrtBackend

        return TrtBackend(spec)
    if source_kind(spec) == "onnx":
        return OrtBackend(spec, provider, threads)
    if engine in ("auto", "onnxruntime"):
        from .compiled import cached_onnx

        return OrtBackend(cached_onnx(spec), provider, threads)
    config, model, weights = load_model(spec)
    return TorchBackend(config, model, str(weights or spec), threads)
