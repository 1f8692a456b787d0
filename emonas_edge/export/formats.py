"""The one table of export formats and precisions.

The CLI's choices, the manifest's vocabulary and the docs' table are all derived from
``FORMATS``; adding a format or precision starts here (as in the Ultralytics exporter).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "int8")  # what an artifact can hold
AUTO = "auto"  # not a precision: "the fastest within the accuracy budget", decided by measuring
PRECISION_CHOICES = (*PRECISIONS, AUTO)


@dataclass(frozen=True)
class Format:
    name: str  # --format value
    suffix: str  # file suffix of the artifact we write
    precisions: tuple[str, ...]
    requires: tuple[str, ...]  # Python packages needed to build it
    runs_on: str  # what executes it
    verified: str  # how emonas-edge checks it after building
    also_read: tuple[str, ...] = ()  # other suffixes other tools give the same kind of file


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            name="onnx",
            suffix=".onnx",
            precisions=PRECISIONS,
            requires=("torch", "onnx", "onnxscript", "onnxruntime"),
            runs_on="ONNX Runtime (CPU/CUDA/TensorRT providers), TensorRT parser",
            verified="onnx.checker full check; parity with PyTorch in ONNX Runtime on real faces; "
            "fp16/int8: accuracy gate",
        ),
        Format(
            name="engine",
            suffix=".engine",
            precisions=PRECISIONS,
            requires=("tensorrt",),
            runs_on="TensorRT on the GPU that built it (sidecar .engine.json carries metadata)",
            verified="built from the gated ONNX of the same precision (int8: strongly typed QDQ); "
            "not verified on hardware",
            also_read=(".plan", ".trt"),  # trtexec's and NVIDIA samples' names for engines
        ),
    )
}

SIMPLIFIERS = ("onnxsim", "onnxslim", "none")
# auto: the TorchScript exporter (about 10x faster for these conv/attention nets, so a first
# pipeline run or an export costs ~1 s instead of ~8 s), falling back to dynamo, with a note,
# on a PyTorch that no longer ships it or a graph it cannot trace.
EXPORTERS = ("auto", "torchscript", "dynamo")
DEFAULT_OPSET = 18
MIN_OPSET = 18


def artifact_name(model_name: str, fmt: str = "onnx", precision: str = "fp32") -> str:
    stem = model_name if precision == "fp32" else f"{model_name}.{precision}"
    return stem + FORMATS[fmt].suffix


def format_of(path: str | os.PathLike) -> str | None:
    """The format a file is by its suffix (``tiny.fp16.plan`` -> "engine"), None for anything else."""
    name = str(path).lower()
    for f in FORMATS.values():
        if name.endswith((f.suffix, *f.also_read)):
            return f.name
    return None


def manifest_name(artifact: str) -> str:
    stem = artifact.rsplit(".", 1)[0]
    return f"{stem}.manifest.json"
