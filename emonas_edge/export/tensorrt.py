"""TensorRT engines, built from our own ONNX files and never trusted on another machine.

An engine is tied to the TensorRT version and GPU that built it, and cannot carry our labels
or input spec, so every engine gets a sidecar JSON beside it: what it was built from, where,
how (the equivalent ``trtexec`` line, to rebuild it elsewhere), and the model metadata the
runtime needs. TensorRT is optional and imported only when an engine is built or loaded.
INT8 comes only from explicitly quantized (QDQ) ONNX graphs built strongly typed, as TensorRT
10 recommends; implicit calibration is deprecated there and is not offered.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from ..errors import CheckFailed, MissingDependency, UserError
from ..fileio import atomic_outputs, sha256_file
from .formats import FORMATS

SIDECAR_FORMAT = "emonas-trt-sidecar/1"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
META_KEYS = ("classes", "input_spec", "preprocess", "config", "trained", "name", "task")


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or OSError when libnvinfer is missing
        return False
    return True


def require_tensorrt(purpose: str = "building TensorRT engines"):
    """The ``tensorrt`` module, or :class:`MissingDependency` (exit code 2) naming the extra."""
    try:
        import tensorrt
    except Exception:
        raise MissingDependency("tensorrt", purpose, "tensorrt") from None
    return tensorrt


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    p = Path(engine_path)
    return p.with_name(f"{p.stem}.engine.json")


def _check_precision(precision: str) -> None:
    allowed = FORMATS["engine"].precisions
    if precision not in allowed:
        raise UserError(f"unknown TensorRT precision {precision!r} (choose from: {', '.join(allowed)})")


def trtexec_command(
    onnx_path,
    engine_path,
    precision: str,
    input_name: str,
    input_shape_chw,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    workspace_mb: int,
    timing_cache=None,
    *,
    dynamic: bool = True,
) -> str:
    """The ``trtexec`` (TensorRT >= 10) line that builds the same engine; shapes only for a dynamic batch."""
    _check_precision(precision)
    chw = "x".join(str(int(d)) for d in input_shape_chw)
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if dynamic:
        for flag, b in (("min", min_batch), ("opt", opt_batch), ("max", max_batch)):
            args.append(f"--{flag}Shapes={input_name}:{int(b)}x{chw}")
    args.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    if precision == "fp32":
        args.append("--noTF32")  # fp32 means fp32: Ampere+ would otherwise round matmul inputs to TF32
    else:  # fp16 and int8 engines are built from the gated ONNX of that precision, strongly typed: the graph's
        # types decide (LayerNorm/Softmax kept fp32 stay fp32; QDQ needs no --int8 calibration); --fp16 is
        # deprecated since TensorRT 10.12 and would let TensorRT lower what the gate kept in fp32
        args.append("--stronglyTyped")
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    args.append("--skipInference")
    return " ".join(shlex.quote(a) for a in args)


def _check_settings(precision: str, batch, workspace_mb) -> tuple[int, int, int]:
    _check_precision(precision)
    if (
        not isinstance(batch, (tuple, list))
        or len(batch) != 3
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in batch)
        or not 1 <= batch[0] <= batch[1] <= batch[2]
    ):
        raise UserError(f"batch must be three integers min <= opt <= max, all >= 1; got {batch!r}")
    if not isinstance(workspace_mb, int) or isinstance(workspace_mb, bool) or workspace_mb < 1:
        raise UserError(f"workspace_mb must be a positive integer (MiB); got {workspace_mb!r}")
    return tuple(batch)


def plan_engine(
    onnx_path, engine_path, *, precision: str = "fp32", batch=(1, 1, 8), workspace_mb: int = 256, timing_cache=None
) -> dict:
    """Check the ONNX file and settings without TensorRT; return what :func:`build_engine` will do."""
    from .metadata import config_from_metadata, load_onnx, read_metadata

    mn, opt, mx = _check_settings(precision, batch, workspace_mb)
    proto = load_onnx(onnx_path)
    meta = read_metadata(proto)
    if config_from_metadata(meta, str(onnx_path)) is None:
        raise UserError(
            f"{onnx_path} carries no emonas-edge metadata (classes, input spec); export it with emonas-edge"
        )
    model = {}
    for key in META_KEYS:
        if key in meta:
            try:
                model[key] = meta[key] if key in ("name", "task") else json.loads(meta[key])
            except json.JSONDecodeError:
                raise UserError(f"{onnx_path}: metadata '{key}' is not valid JSON") from None
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UserError(f"{onnx_path} has {len(inputs)} inputs; a TensorRT engine here takes exactly one image batch")
    dims = list(inputs[0].type.tensor_type.shape.dim)
    chw = [d.dim_value for d in dims[1:]]
    if len(dims) != 4 or not all(v > 0 for v in chw):
        raise UserError(f"{onnx_path}: input {inputs[0].name!r} must be NCHW with fixed C, H, W")
    static = dims[0].dim_value if dims[0].dim_value > 0 else None
    if static:
        mn = opt = mx = static
    quantized = any(n.op_type in QDQ_OPS for n in proto.graph.node)
    if precision == "int8" and not quantized:
        raise UserError(
            f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes: int8 engines are built from a "
            "quantized (QDQ) ONNX file; quantize the model first, or build fp16/fp32"
        )
    if precision != "int8" and quantized:
        raise UserError(f"{onnx_path} is quantized (QDQ nodes); build it with precision int8")
    if quantized and _has_unsigned_activations(proto):
        raise UserError(
            f"{onnx_path} is quantized for ONNX Runtime (unsigned activations with zero points); TensorRT takes only "
            "signed symmetric int8: export with --format engine, which quantizes with the tensorrt scheme"
        )
    return {
        "onnx": str(onnx_path),
        "engine": str(engine_path),
        "precision": precision,
        "strongly_typed": precision in ("int8", "fp16"),  # the graph's types decide
        "input": {"name": inputs[0].name, "shape_chw": chw},
        "batch": {"min": mn, "opt": opt, "max": mx, "static": static},
        "workspace_mb": workspace_mb,
        "timing_cache": str(timing_cache) if timing_cache else None,
        "model": model,
        "trtexec": trtexec_command(
            onnx_path,
            engine_path,
            precision,
            inputs[0].name,
            chw,
            mn,
            opt,
            mx,
            workspace_mb,
            timing_cache,
            dynamic=static is None,
        ),
    }


def make_sidecar(plan: dict, engine_file, tensorrt_version: str, gpu: dict) -> dict:
    """The sidecar for an engine written to ``engine_file`` (hashed here) from ``plan``. An unknown GPU is refused:
    the version guard would then refuse the engine on every machine."""
    if not gpu.get("name") or not gpu.get("compute_capability"):
        raise UserError("the GPU's name or compute capability is unknown: the engine would load nowhere; not written")
    model = plan["model"]
    return {
        "format": SIDECAR_FORMAT,
        "engine": Path(plan["engine"]).name,
        "sha256": sha256_file(engine_file),
        "bytes": Path(engine_file).stat().st_size,
        "tensorrt_version": tensorrt_version,
        "gpu": {"name": gpu.get("name"), "compute_capability": gpu.get("compute_capability")},
        "precision": plan["precision"],
        "strongly_typed": plan["strongly_typed"],
        "input": {**plan["input"], "spec": model.get("input_spec")},
        "batch": plan["batch"],
        "workspace_mb": plan["workspace_mb"],
        "model": {k: v for k, v in model.items() if k not in ("config", "input_spec")},
        "config": model.get("config"),
        "onnx": {"path": plan["onnx"], "sha256": sha256_file(plan["onnx"])},
        "timing_cache": plan["timing_cache"],
        "trtexec": plan["trtexec"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def gpu_info() -> dict:
    """Name and compute capability ("8.7") of the current CUDA device, through the CUDA runtime bindings (no
    PyTorch: JetPack's pip torch has no CUDA). Raises rather than return an unknown: see :func:`cuda_rt.gpu_info`."""
    from .cuda_rt import gpu_info as read

    return read()


_LOGGER = None


def process_logger(trt, log: Callable[[str], None] = lambda msg: None):
    """TensorRT keeps the first logger a process gives it, so there is one, re-aimed at each build: its errors
    list starts empty and its warnings go to that build's ``log``."""
    global _LOGGER
    if _LOGGER is None:

        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []
                self.warn: Callable[[str], None] = lambda msg: None

            def log(self, severity, msg):
                if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                    self.errors.append(msg)
                elif severity == trt.ILogger.WARNING:
                    self.warn(f"TensorRT: {msg}")

        _LOGGER = Logger()
    _LOGGER.errors, _LOGGER.warn = [], log
    return _LOGGER


def _add_profile(builder, config, name: str, b: dict, chw) -> None:
    """The dynamic batch's optimisation profile; what TensorRT refuses is one line, not its traceback."""
    profile = builder.create_optimization_profile()
    try:
        profile.set_shape(name, (b["min"], *chw), (b["opt"], *chw), (b["max"], *chw))
    except Exception as e:
        raise UserError(f"TensorRT refused the batch profile {b['min']}-{b['opt']}-{b['max']}: {_first(e)}") from None
    if config.add_optimization_profile(profile) < 0:
        raise UserError(f"TensorRT refused the batch profile {b['min']}-{b['opt']}-{b['max']} for input {name!r}")


def _first(e: BaseException) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__


def build_engine(
    onnx_path,
    engine_path,
    *,
    precision: str = "fp32",
    batch=(1, 1, 8),
    workspace_mb: int = 256,
    timing_cache=None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Build ``engine_path`` and its sidecar from an emonas-edge ONNX file; return the sidecar.

    Needs TensorRT >= 10 and a CUDA GPU. Bad files and settings raise :class:`UserError`; a build
    TensorRT itself rejects raises :class:`CheckFailed`. Nothing is written unless all succeeds.
    """
    plan = plan_engine(
        onnx_path, engine_path, precision=precision, batch=batch, workspace_mb=workspace_mb, timing_cache=timing_cache
    )
    trt = require_tensorrt()
    if int(trt.__version__.split(".")[0]) < 10:
        raise UserError(f"TensorRT {trt.__version__} is too old; emonas-edge builds engines with TensorRT 10 or newer")
    logger = process_logger(trt, log)
    try:
        builder = trt.Builder(logger)
    except Exception as e:  # no CUDA device or driver: the binding raises instead of returning None
        raise UserError(
            f"TensorRT could not start ({str(e).strip()[:120]}); building engines needs a CUDA GPU"
        ) from None
    gpu = gpu_info()  # before the build: an engine for an unknown GPU would load nowhere
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan["strongly_typed"] else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = parser.get_error(0).desc() if parser.num_errors else (logger.errors or ["no reason given"])[0]
        raise UserError(f"TensorRT cannot parse {onnx_path}: {' '.join(str(first).split())[:200]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    b, chw = plan["batch"], plan["input"]["shape_chw"]
    if b["static"] is None:
        _add_profile(builder, config, plan["input"]["name"], b, chw)
    if timing_cache:
        blob = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        try:
            cache = config.create_timing_cache(blob)
        except Exception:
            cache = None
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise UserError(f"timing cache {timing_cache} does not fit this TensorRT/GPU; delete it to start a new one")
    log(f"building a {precision} TensorRT {trt.__version__} engine (batch {b['min']}-{b['max']}, opt {b['opt']})")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        reason = " ".join((logger.errors or ["see the TensorRT log"])[0].split())[:200]
        raise CheckFailed(f"TensorRT could not build an engine from {onnx_path}: {reason}")
    side_path = sidecar_path(engine_path)
    targets = [engine_path, side_path] + ([timing_cache] if timing_cache else [])
    with atomic_outputs(*targets) as tmps:
        with open(tmps[0], "wb") as f:
            f.write(serialized)
        sidecar = make_sidecar(plan, tmps[0], trt.__version__, gpu)
        tmps[1].write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        if timing_cache:
            with open(tmps[2], "wb") as f:
                f.write(config.get_timing_cache().serialize())
    log(f"wrote {engine_path} and {side_path.name}")
    return sidecar


__all__ = [
    "build_engine",
    "plan_engine",
    "make_sidecar",
    "require_tensorrt",
    "sidecar_path",
    "tensorrt_available",
    "trtexec_command",
    "gpu_info",
    "process_logger",
    "SIDECAR_FORMAT",
]


def _has_unsigned_activations(proto) -> bool:
    """A QuantizeLinear whose zero point is uint8 (the ONNX Runtime scheme of export/precision.py)."""
    import onnx

    zps = {t.name: t.data_type for t in proto.graph.initializer}
    return any(
        n.op_type == "QuantizeLinear" and len(n.input) > 2 and zps.get(n.input[2]) == onnx.TensorProto.UINT8
        for n in proto.graph.node
    )
