"""ONNX files (fp32, fp16, INT8) run in ONNX Runtime, labelled by the metadata they carry."""

from __future__ import annotations

import os

import numpy as np

from ..errors import UserError
from ..export.metadata import config_from_metadata, load_onnx, read_metadata
from ..export.session import open_session, static_batch
from .backend import Backend
from .foreign import ForeignSpec, foreign_config


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        provider: str | None = None,
        threads: int | None = None,
        spinning: bool = True,
        foreign: ForeignSpec | None = None,
    ):
        proto = load_onnx(path)
        config = config_from_metadata(read_metadata(proto), str(path))
        if config is None and foreign is None:
            raise UserError(
                f"{path} carries no emonas-edge metadata (classes, input spec): name its classes with --classes "
                "(and --input-mean/--input-std if it does not take x/255), or export it with emonas-edge"
            )
        if config is not None and foreign is not None:
            raise UserError(f"{path} names its own classes and input (emonas-edge metadata): drop --classes")
        self.session = open_session(proto.SerializeToString(), provider, threads, spinning)
        if config is None:
            assert foreign is not None
            config = foreign_config(self.session, path, foreign)
        check_graph_against_metadata(self.session, config, str(path))
        self.input_name = self.session.get_inputs()[0].name
        self.static_batch = static_batch(self.session)
        self.config, self.path = config, str(path)
        self.providers = self.session.get_providers()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def check_graph_against_metadata(session, config, path: str) -> None:
    """The metadata names the classes and input; the graph decides what runs. Where they disagree every
    score would be wrong (or ONNX Runtime would fail mid-run with its own traceback): refuse at load."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise UserError(f"{path}: expected one image input and a score output, the graph has {len(inputs)} input(s)")
    want = list(config.input_shape)  # (C, H, W); the graph's batch may be symbolic
    got = list(inputs[0].shape)
    if len(got) != 4 or any(isinstance(g, int) and g != w for g, w in zip(got[1:], want, strict=True)):
        raise UserError(f"{path}: the graph's input {got} does not match its metadata's input spec [N, {want}]")
    out = list(outputs[0].shape)
    width = out[-1] if out else None
    if len(out) != 2 or (isinstance(width, int) and width != len(config.classes)):
        raise UserError(
            f"{path}: the graph's output {out} does not match the metadata's {len(config.classes)} classes "
            f"({', '.join(config.classes)})"
        )
