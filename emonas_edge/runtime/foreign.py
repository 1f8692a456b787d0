"""ONNX files made elsewhere (HSEmotion, fer's mini-Xception converted, your own), run as if exported here.

A file without emonas-edge metadata cannot say what its outputs mean or which pixels it expects; the graph
says the rest. So the user names the classes (and, where the model was not trained on ``x/255``, the mean
and std it normalises with), and the input's channels and size are read from the graph: 1 channel is gray,
3 is RGB, the spatial size must be fixed and square (the aligner makes square crops). Files that carry
emonas-edge metadata never take these: their own say is checked against their graph instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import TASKS, ModelConfig, Preprocess
from ..errors import UserError


@dataclass(frozen=True)
class ForeignSpec:
    classes: tuple[str, ...]
    mean: tuple[float, ...] | None = None  # per channel after x/255; default 0
    std: tuple[float, ...] | None = None  # default 1
    task: str = "macro"

    @classmethod
    def parse(cls, classes: str | None, mean: str | None = None, std: str | None = None) -> ForeignSpec | None:
        """From the CLI's comma lists (``--classes angry,happy``, ``--input-mean 0.5``); None when no classes."""
        if classes is None:
            if mean is not None or std is not None:
                raise UserError("--input-mean/--input-std describe a foreign ONNX file: give its --classes too")
            return None
        names = tuple(c.strip() for c in classes.split(",") if c.strip())
        if len(names) < 2 or len(set(names)) != len(names):
            raise UserError(f"--classes needs two or more distinct names, comma-separated; got {classes!r}")
        return cls(names, _floats(mean, "--input-mean"), _floats(std, "--input-std"))


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} takes numbers, comma-separated (one per channel); got {text!r}") from None
    if flag == "--input-std" and any(v <= 0 for v in values):
        raise UserError(f"{flag} must be positive; got {text!r}")
    return values


def foreign_config(session, path: str | os.PathLike, spec: ForeignSpec) -> ModelConfig:
    """The config the rest of the runtime reads, built from the graph and ``spec``."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise UserError(f"{path}: expected one image input and a score output, the graph has {len(inputs)} input(s)")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise UserError(f"{path}: its input {shape} is not NCHW with a fixed channel count and size")
    c, h, w = shape[1:]
    if c not in (1, 3) or h != w:
        raise UserError(f"{path}: its input {shape} is not 1 (gray) or 3 (RGB) channels of a square image")
    width = list(outputs[0].shape)[-1] if outputs[0].shape else None
    if isinstance(width, int) and width != len(spec.classes):
        raise UserError(f"{path}: the graph scores {width} classes, --classes names {len(spec.classes)}")
    mean, std = spec.mean or (0.0,), spec.std or (1.0,)
    if spec.task not in TASKS:
        raise UserError(f"unknown task {spec.task!r}")
    for values, flag in ((mean, "--input-mean"), (std, "--input-std")):
        if len(values) not in (1, c):
            raise UserError(f"{flag}: {len(values)} values for a {c}-channel input (give 1 or {c})")
    network = {"in_channels": c, "input_size": h, "num_classes": len(spec.classes)}
    return ModelConfig(
        name=Path(path).stem,
        task=spec.task,
        family="onnx",  # no network of ours: nothing here rebuilds it, only runs the file
        network=network,
        classes=spec.classes,
        preprocess=Preprocess(c == 1, mean * (c // len(mean)), std * (c // len(std))),
        trained=True,  # the user vouches for the file by naming its classes; nothing here can tell
        meta={"foreign": True},
    )
