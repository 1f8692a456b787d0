"""Turning whatever the user names (built-in, genotype file, checkpoint, ONNX) into configs and models.

One resolver so every command accepts the same things in the same way: a built-in name
(``emonas-macro``), a genotype JSON or DARTS text file, a ``.pt`` checkpoint, or (for
``info``) an exported ``.onnx`` artifact.

It sits above ``export`` (it reads ONNX metadata) and below ``runtime``, ``train`` and
``profile``, which all take models by those same names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ModelConfig, load_genotype_file
from .deps import has_torch, require_torch
from .errors import UserError
from .export.formats import FORMATS
from .zoo import BuiltinModel, builtin, builtin_models

if TYPE_CHECKING:
    from torch import nn

CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt"}
ONNX_SUFFIXES = {FORMATS["onnx"].suffix}


def _builtin(spec: str | os.PathLike) -> BuiltinModel:
    """The built-in entry of a spec that ``source_kind`` called "builtin"."""
    entry = builtin(str(spec))
    assert entry is not None, spec
    return entry


def builtin_entry(spec: str | os.PathLike) -> BuiltinModel | None:
    """The built-in ``spec`` names, or None when it names a file or something else (a file wins over a name)."""
    return _builtin(spec) if source_kind(spec) == "builtin" else None


def source_kind(spec: str | os.PathLike) -> str:
    """'builtin', 'checkpoint', 'onnx' or 'genotype' (a JSON/text file)."""
    p = Path(spec)
    if p.exists():
        if p.suffix.lower() in CHECKPOINT_SUFFIXES:
            return "checkpoint"
        if p.suffix.lower() in ONNX_SUFFIXES:
            return "onnx"
        return "genotype"
    if builtin(str(spec)) is not None:
        return "builtin"
    names = ", ".join(builtin_models()) or "none"
    raise UserError(f"{spec}: no such file, and not a built-in model name (built-in: {names})")


def architecture_key(config: ModelConfig) -> dict:
    """What the weights depend on: training-only and inference-only settings are left out."""
    net = {k: v for k, v in config.network.items() if k not in ("drop_path", "dropout", "auxiliary", "test_time_flip")}
    g = config.genotype.to_dict() if config.genotype else None
    return {"family": config.family, "genotype": g, "network": net}


def load_genotype(spec: str | os.PathLike, select: str | None = None, **overrides) -> ModelConfig:
    """Config from a built-in name, a genotype JSON / DARTS text file, a checkpoint or an ONNX artifact.

    ``overrides`` are network settings or top-level fields (``input_size=64``, ``task="micro"``).
    """
    kind = source_kind(spec)
    if kind == "builtin":
        return load_genotype_file(_builtin(spec).genotype, select, overrides)
    if kind == "genotype":
        return load_genotype_file(spec, select, overrides)
    if any(v is not None for v in overrides.values()):
        raise UserError(f"{spec} is a trained artifact; its settings cannot be overridden")
    if kind == "checkpoint":
        from .checkpoint import read_checkpoint
        from .config import config_from_dict

        return config_from_dict(read_checkpoint(spec)["config"], f"checkpoint {spec}")
    from .export.metadata import config_from_metadata, load_onnx, read_metadata

    config = config_from_metadata(read_metadata(load_onnx(spec)), str(spec))
    if config is None:
        raise UserError(f"{spec} carries no emonas-edge config in its metadata")
    return config


def load_model(
    spec: str | os.PathLike, weights: str | os.PathLike | None = None, select: str | None = None, **overrides
) -> tuple[ModelConfig, nn.Module, Path | None]:
    """``(config, PyTorch model in eval mode, weights file or None)``.

    A built-in name brings its shipped weights when there are any (and no override changes the
    network). With ``weights``, the checkpoint must hold this same architecture; its config
    (classes, preprocessing, trained flag) is the one that travels on.
    """
    kind = source_kind(spec)
    require_torch(f"building a PyTorch model from {spec}")
    from .checkpoint import load_checkpoint
    from .nn import create_model

    if kind == "onnx":
        raise UserError(
            f"{spec} is an ONNX file; give a genotype, built-in name or checkpoint to build a PyTorch model"
        )
    if kind == "checkpoint":
        if weights is not None:
            raise UserError("give either a checkpoint or --weights, not both")
        if any(v is not None for v in overrides.values()):
            raise UserError(f"{spec} is a trained checkpoint; its network settings cannot be overridden")
        config, model, _ = load_checkpoint(spec)
        return config, model, Path(spec)
    config = load_genotype(spec, select, **overrides)
    if weights is None and kind == "builtin" and not any(v is not None for v in overrides.values()):
        weights = _builtin(spec).weights
    if weights is None:
        return config, create_model(config).eval(), None
    wconfig, model, _ = load_checkpoint(weights)
    if architecture_key(wconfig) != architecture_key(config):
        raise UserError(
            f"weights {weights} were trained for a different network than {spec} "
            f"(checkpoint: {wconfig.family} {wconfig.network}; genotype: {config.family} {config.network})"
        )
    # Test-time flip costs a second pass, not other weights: the genotype given decides it, so the
    # shipped weights can run without it (half the latency) from a copy of the genotype.
    flip = config.network["test_time_flip"]
    if wconfig.network["test_time_flip"] != flip:
        wconfig = wconfig.replace(network={**wconfig.network, "test_time_flip": flip})
        model.test_time_flip = flip
    return wconfig, model, Path(weights)


def list_models() -> list[dict]:
    """The built-in names with what a user chooses between: size, speed class, trained or not, and the
    PublicTest accuracy their committed evaluation report records (None where none ships). Without
    PyTorch, parameters come from the shipped ONNX (None for an untrained built-in, which ships none)."""
    rows = []
    for name, entry in builtin_models().items():
        config = load_genotype(name)
        c, h, w = config.input_shape
        rows.append(
            {
                "name": name,
                "task": config.task,
                "family": config.family,
                "input": f"{c}x{h}x{w} {'gray' if c == 1 else 'RGB'}",
                "classes": list(config.classes),
                "params": _params(config, entry),
                "test_time_flip": config.network["test_time_flip"],
                "trained": entry.weights is not None,
                "publictest_top1": entry.accuracy(),
                "weights": str(entry.weights) if entry.weights else None,
                "onnx": str(entry.onnx) if entry.onnx else None,
                "card": str(entry.card) if entry.card else None,
            }
        )
    return rows


def _params(config: ModelConfig, entry: BuiltinModel) -> int | None:
    """The genotype file's ``meta.params`` (a test holds it equal to the built network), else the shipped
    export's metadata: listing the built-ins loads neither PyTorch nor onnx (seconds on a small CPU)."""
    if isinstance(config.meta.get("params"), int):
        return int(config.meta["params"])
    if entry.onnx is not None:
        from .export.metadata import load_onnx, read_metadata

        return int(read_metadata(load_onnx(entry.onnx))["params"])
    if has_torch():
        from .nn import count_params, create_model

        return count_params(create_model(config))
    return None


def model_info(target: str | os.PathLike, select: str | None = None, **overrides) -> dict:
    """Params, MACs, input spec, classes, op histogram and trained flag, for any target kind. Without
    PyTorch a trained built-in is described from the ONNX export it ships with."""
    kind = source_kind(target)
    shipped = _builtin(target).onnx if kind == "builtin" else None
    plain = not select and all(v is None for v in overrides.values())
    if kind == "builtin" and shipped and plain and not has_torch():
        return {**_onnx_info(shipped), "target": str(target), "kind": "builtin", "onnx_file": str(shipped)}
    if kind == "onnx":
        return _onnx_info(target)
    from .macs import macs_torch
    from .nn import count_params

    config, model, weights = load_model(target, select=select, **overrides)
    return {
        "target": str(target),
        "kind": kind,
        "name": config.name,
        "task": config.task,
        "family": config.family,
        "params": count_params(model),
        "macs": macs_torch(model, config.input_shape),
        "input_spec": config.input_spec(),
        "classes": list(config.classes),
        "trained": config.trained,
        "precision": "fp32",
        "op_histogram": config.genotype.op_histogram() if config.genotype else None,
        "genotype": config.genotype.to_dict() if config.genotype else None,
        "network": config.network,
        "weights": str(weights) if weights else None,
    }


def _onnx_info(target: str | os.PathLike) -> dict:
    from collections import Counter

    from .export.metadata import config_from_metadata, graph_precision, load_onnx, read_metadata
    from .fileio import sha256_file
    from .macs import macs_onnx, params_onnx

    proto = load_onnx(target)
    meta = read_metadata(proto)
    config = config_from_metadata(meta, str(target))
    graph_params = params_onnx(proto)
    return {
        "target": str(target),
        "kind": "onnx",
        "name": config.name if config else Path(target).stem,
        "task": config.task if config else None,
        "family": config.family if config else None,
        "params": int(meta["params"]) if "params" in meta else graph_params,
        "macs": macs_onnx(proto),
        "input_spec": config.input_spec() if config else None,
        "classes": list(config.classes) if config else None,
        "trained": config.trained if config else None,
        "precision": graph_precision(proto),
        "op_histogram": config.genotype.op_histogram() if config and config.genotype else None,
        "genotype": config.genotype.to_dict() if config and config.genotype else None,
        "network": config.network if config else None,
        "onnx": {
            "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "nodes": len(proto.graph.node),
            "node_types": dict(Counter(n.op_type for n in proto.graph.node).most_common()),
            "graph_params": graph_params,
            "inputs": [_io(v) for v in proto.graph.input],
            "outputs": [_io(v) for v in proto.graph.output],
            "producer": meta.get("producer", f"{proto.producer_name} {proto.producer_version}".strip()),
            "bytes": Path(target).stat().st_size,
            "sha256": sha256_file(target),
            "emonas_metadata": config is not None,
        },
    }


def _io(v) -> dict:
    dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    return {
        "name": v.name,
        "shape": dims,
        "dtype": _ONNX_DTYPES.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type)),
    }


_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 3: "int8", 2: "uint8", 7: "int64", 6: "int32"}
