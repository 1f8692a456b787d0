"""What an exported model says about itself (ONNX ``metadata_props``).

Every artifact carries its labels, input spec, preprocessing, full config and trained flag,
so runtimes and the pipeline read them from the file instead of asking the user again.
Values are strings (JSON where structured), as ONNX requires.
"""

from __future__ import annotations

import json
import os

import onnx

from ..config import ModelConfig, config_from_dict
from ..errors import UserError


def output_kind(config: ModelConfig) -> str:
    """What the model's one output holds, which is also its name: ``log_probs`` for networks that average their
    probabilities with the mirror image's inside the graph (a log of probabilities, not logits), else
    ``logits``. A softmax turns either into the class probabilities."""
    return "log_probs" if config.network.get("test_time_flip") else "logits"


def build_metadata(
    config: ModelConfig, params: int, macs: int, version: str, batch: int | None = None
) -> dict[str, str]:
    spec = config.input_spec()
    if batch is not None:  # a fixed-batch artifact says so where runtimes look
        spec["shape"][0] = batch
    return {
        "name": config.name,
        "task": config.task,
        "family": config.family,
        "classes": json.dumps(list(config.classes)),
        "input_spec": json.dumps(spec),
        "preprocess": json.dumps(config.preprocess.to_dict()),
        "trained": "true" if config.trained else "false",
        "params": str(params),
        "macs": str(macs),
        "output": output_kind(config),
        "config": json.dumps(config.to_dict(), separators=(",", ":")),
        "producer": f"emonas-edge {version}",
    }


# Tools record their own bookkeeping as metadata: onnxsim its settings and every node it removed (kilobytes of
# names), ONNX Runtime's quantization pre-processing that it ran. Not what the model is, so not kept beside it.
TOOL_KEYS = ("onnxsim.", "onnx.")


def write_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    keep = [p for p in model.metadata_props if p.key not in meta and not p.key.startswith(TOOL_KEYS)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def config_from_metadata(meta: dict[str, str], source: str = "model metadata") -> ModelConfig | None:
    """The full config of an emonas-edge artifact, or None for a foreign ONNX file."""
    if "config" not in meta:
        return None
    try:
        raw = json.loads(meta["config"])
    except json.JSONDecodeError:
        raise UserError(f"{source}: 'config' metadata is not valid JSON") from None
    return config_from_dict(raw, source)


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and check an ONNX file; anything truncated or not ONNX is a one-line UserError."""
    from ..fileio import existing_file

    p = existing_file(path, "ONNX model")
    try:
        model = onnx.load(str(p))
    except Exception as e:
        raise UserError(f"{p} is not a readable ONNX model ({type(e).__name__}: {str(e)[:120]})") from None
    if not model.graph.node or not model.opset_import:
        raise UserError(f"{p} is not a valid ONNX model (no graph or opset; truncated or not ONNX?)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{p} is not a valid ONNX model ({first[:160]})") from None
    return model


QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def graph_precision(model) -> str:
    """int8 / fp16 / fp32, read from the graph itself (metadata can be stale; the file cannot)."""
    import onnx

    if any(n.op_type in QUANTIZED_OPS for n in model.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"
