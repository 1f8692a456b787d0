"""ONNX files (fp32, fp16, INT8) run in ONNX Runtime, labelled by the metadata they carry."""

from __future__ import annotations

import os

import numpy as np

from ..errors import UserError
from ..export.metadata import config_from_metadata, load_onnx, read_metadata
from ..export.session import open_session, static_batch
from .backend import Backend


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, provider: str | None = None, threads: int | None = None):
        proto = load_onnx(path)
        config = config_from_metadata(read_metadata(proto), str(path))
        if config is None:
            raise UserError(f"{path} carries no emonas-edge metadata (classes, input spec); export it with emonas-edge")
        self.session = open_session(proto.SerializeToString(), provider, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.static_batch = static_batch(self.session)
        self.config, self.path = config, str(path)
        self.providers = self.session.get_providers()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
