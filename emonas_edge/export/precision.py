"""FP16 and calibrated INT8 artifacts from a verified fp32 ONNX, with an accuracy gate.

The commonest complaint about edge exporters is INT8 accuracy collapsing silently, so nothing
leaves here unmeasured: with a labelled ``eval`` set both precisions are scored by the same
scorer as ``evaluate`` and a drop beyond the budget fails (exit 1, no file of that precision); without
one, agreement with fp32 on held-back calibration faces is recorded and the manifest says
accuracy was not measured. ``auto`` times the candidates on this machine and keeps the fastest
within budget: on a small CPU, QDQ INT8 is often slower than fp32, so it must be measured. The
timer is passed in (``profile`` owns how latency is measured; export sits below it), and the
candidates run in the same ONNX Runtime sessions as the runtime's (:mod:`.session`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .. import __version__
from ..config import ModelConfig
from ..data.preprocess import Preprocessor
from ..errors import CheckFailed, UserError
from ..fileio import atomic_outputs, recorded_path, sha256_file, write_json_atomic
from ..metrics import classification_report
from .formats import AUTO, FORMATS, PRECISION_CHOICES, artifact_name, manifest_name
from .manifest import make_manifest, write_manifest
from .metadata import load_onnx, read_metadata, write_metadata
from .quiet import quiet_loggers
from .session import open_session, run_chunked, static_batch

# Latency of each candidate file (name -> path) in ms, as ``auto`` compares them: p50 at batch 1, one thread.
Timer = Callable[[dict[str, Path]], dict[str, float]]
CALIB_METHODS = ("minmax", "entropy", "percentile")
# kept in fp32 by the fp16 conversion: normalisations, softmax and reductions lose the most in fp16
FP16_KEEP_FP32 = [
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceL2",
    "GlobalAveragePool",
]
HELD_BACK = 0.2  # share of calibration faces kept out of calibration to measure agreement


def _toposort(graph: onnx.GraphProto) -> None:
    """The fp16 converter appends its input/output Casts at the end; ONNX wants producers first."""
    produced = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes, ordered = list(graph.node), []
    while nodes:
        ready = [n for n in nodes if all(i in produced for i in n.input)]
        if not ready:
            raise UserError("fp16 conversion produced a graph with a cycle or a dangling input")
        for n in ready:
            ordered.append(n)
            produced.update(n.output)
        nodes = [n for n in nodes if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(src: Path, dst: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(src))
    meta = read_metadata(proto)
    out = convert_float_to_float16(proto, keep_io_types=True, op_block_list=FP16_KEEP_FP32)
    _toposort(out.graph)
    onnx.checker.check_model(out)
    write_metadata(out, {**meta, "precision": "fp16"})
    onnx.save(out, str(dst))


# How activations are quantized, by the runtime that will execute the INT8 graph. ONNX Runtime's x86
# kernels want unsigned activations with a zero point (U8S8, its documented default): with them it
# folds every ReLU into the quantization range and fuses each DQ-Conv-Q into one QLinearConv.
# With signed symmetric activations the ReLUs stay float between Q/DQ pairs and ORT left about
# two thirds of a cell network's convolutions in float: emonas-macro-fast ran 1.09 ms (s8) vs
# 0.51 ms (u8) on one thread here, 2026-12-06 (fp32: 1.13 ms). TensorRT's explicit quantization
# takes only signed symmetric int8, so engines are built from the "tensorrt" scheme.
INT8_SCHEMES = {
    "ort": {"activations": "uint8 asymmetric (per tensor)", "symmetric": False, "signed": False},
    "tensorrt": {"activations": "int8 symmetric (per tensor)", "symmetric": True, "signed": True},
}


# Where a transformer loses accuracy in INT8 (per-tensor 8-bit activations): LayerNorm's statistics,
# Softmax's exponent, GELU's Erf chain, the attention products of two activations (queries x keys,
# weights x values) and the residual sums that carry the stream. In a graph with LayerNormalization only
# the layers with learned weights are quantized (Conv, Gemm, MatMul by a weight); the rest stays fp32.
# Cell networks hold none of these ops, so their INT8 graphs are unchanged by this rule.
TRANSFORMER_QUANTIZED = ["Conv", "Gemm", "MatMul"]


def keep_fp32_plan(model: onnx.ModelProto) -> dict | None:
    """``quantize_static`` keyword arguments that keep a transformer's sensitive ops in fp32, with what
    they keep (``None`` for graphs without LayerNormalization: everything quantizable is quantized)."""
    nodes = list(model.graph.node)
    if not any(n.op_type == "LayerNormalization" for n in nodes):
        return None
    weights = {t.name for t in model.graph.initializer}
    weights |= {o for n in nodes if n.op_type == "Constant" for o in n.output}
    products = [n.name for n in nodes if n.op_type == "MatMul" and not any(i in weights for i in n.input)]
    if any(not name for name in products):
        raise UserError("INT8: the graph has unnamed activation x activation MatMuls, which cannot be kept in fp32")
    kept: dict[str, int] = {}
    for n in nodes:
        if n.op_type not in TRANSFORMER_QUANTIZED or n.name in products:
            kept[n.op_type] = kept.get(n.op_type, 0) + 1
    return {
        "op_types_to_quantize": TRANSFORMER_QUANTIZED,
        "nodes_to_exclude": products,
        "kept_fp32": {k: kept[k] for k in sorted(kept)},
    }


def quantize_qdq(src: Path, dst: Path, reader, method: str = "minmax", scheme: str = "ort") -> dict | None:
    """The one set of ONNX Runtime INT8 settings (see :func:`quantize_int8` for why these), for any
    graph and calibration reader: the search's latency table quantizes its blocks with it too, so
    the blocks it times are quantized as the shipped models are."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in INT8_SCHEMES:
        raise UserError(f"unknown int8 scheme {scheme!r} (choose from: {', '.join(INT8_SCHEMES)})")
    spec = INT8_SCHEMES[scheme]
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with tempfile.TemporaryDirectory(prefix="emonas-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        plan = keep_fp32_plan(onnx.load(str(pre)))
        which = {k: v for k, v in (plan or {}).items() if k != "kept_fp32"}
        extra = {"ActivationSymmetric": spec["symmetric"], "WeightSymmetric": True}
        if method == "percentile":
            extra["CalibPercentile"] = 99.99
        # the root logger: one "Axis 1 is out-of-range" warning per unfused BatchNorm (kept float, as intended)
        with quiet_loggers(""):
            quantize_static(
                str(pre),
                str(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8 if spec["signed"] else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                extra_options=extra,
                reduce_range=True,
                **which,
            )
    return plan


def quantize_int8(
    src: Path, dst: Path, calib: np.ndarray, method: str = "minmax", batch: int = 32, scheme: str = "ort"
) -> None:
    """QDQ with symmetric per-channel int8 weights; activations by ``scheme`` (:data:`INT8_SCHEMES`):
    unsigned with a zero point for ONNX Runtime, signed symmetric for TensorRT.

    Weights use 7 bits (``reduce_range``): x86 CPUs without VNNI multiply u8 x s8 pairs into int16
    (VPMADDUBSW), which saturates with full-range weights; on such a CPU full range cost this
    model 4.6 points of accuracy. An artifact may run on another machine than the one that
    built and gated it, so the safe range is always used; per-channel scales keep the loss small.
    """
    from onnxruntime.quantization import CalibrationDataReader

    if method not in CALIB_METHODS:
        raise UserError(f"unknown calibration method {method!r} (choose from: {', '.join(CALIB_METHODS)})")
    proto = onnx.load(str(src))
    meta = read_metadata(proto)
    input_name = proto.graph.input[0].name
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    step = dim0.dim_value if dim0.HasField("dim_value") and dim0.dim_value > 0 else batch

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(range(0, len(calib), step))

        def get_next(self):
            i = next(self._it, None)
            if i is None:
                return None
            chunk = calib[i : i + step]
            if len(chunk) < step and dim0.HasField("dim_value") and dim0.dim_value > 0:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), axis=0)])
            return {input_name: np.ascontiguousarray(chunk, np.float32)}

    plan = quantize_qdq(src, dst, Reader(), method, scheme)
    out = onnx.load(str(dst))
    extra = {"int8_kept_fp32": json.dumps(plan["kept_fp32"])} if plan else {}
    write_metadata(out, {**meta, "precision": "int8", "int8_scheme": scheme, **extra})
    onnx.save(out, str(dst))


def _logits(path: Path, x: np.ndarray, n_classes: int, threads: int | None = None) -> np.ndarray:
    session = open_session(load_onnx(path).SerializeToString(), "cpu", threads)
    name = session.get_inputs()[0].name
    return run_chunked(lambda c: session.run(None, {name: c})[0], x, static_batch(session), n_classes)


def _scores(y: np.ndarray, logits: np.ndarray, classes) -> dict:
    r = classification_report(y, logits.argmax(1), classes)
    return {
        "top1": r["accuracy"],
        "uf1": r.get("uf1"),
        "per_class_f1": {c: round(v["f1"], 4) for c, v in r["per_class"].items()},
    }


def check_precision_settings(
    precision: str,
    calib=None,
    calib_method: str = "minmax",
    max_drop: float = 1.0,
    eval_data=None,
    derive: bool = False,
) -> None:
    """Bad precision settings fail here, before any export work (the CLI calls it first too)."""
    from ..data.datasets import dataset_path_exists

    if precision not in PRECISION_CHOICES or (derive and precision == "fp32"):
        allowed = [p for p in PRECISION_CHOICES if not (derive and p == "fp32")]
        raise UserError(f"unknown precision {precision!r} (choose from: {', '.join(allowed)})")
    if precision == "int8" and calib is None:
        raise UserError("--precision int8 needs calibration faces: --calib DIR|CSV|VIDEO")
    if calib_method not in CALIB_METHODS:
        raise UserError(f"unknown calibration method {calib_method!r} (choose from: {', '.join(CALIB_METHODS)})")
    if max_drop < 0:
        raise UserError(f"--max-accuracy-drop must be >= 0 points, got {max_drop}")
    for what, path in (("calibration source", calib), ("eval data", eval_data)):
        if path is not None and not dataset_path_exists(path):
            raise UserError(f"{what} not found: {path}")


@dataclass
class Calibration:
    """Calibration faces, normalised: those INT8 is calibrated on and those held back to measure agreement."""

    x: np.ndarray
    held_back: np.ndarray | None
    info: dict  # recorded in the INT8 manifest


def load_calibration(
    calib: str | os.PathLike,
    config: ModelConfig,
    samples: int,
    method: str,
    seed: int,
    hold_back: bool,
    notes: list[str],
    log: Callable[[str], None],
) -> Calibration:
    """``hold_back``: keep a share out of calibration when there is no labelled set to score on."""
    from .calibration import calibration_pixels

    pixels, what, warns = calibration_pixels(calib, config, samples, seed)
    notes += warns
    for w in warns:
        log(f"warning: {w}")
    x = Preprocessor(config).normalize(pixels)
    n_held = int(round(len(x) * HELD_BACK)) if hold_back and len(x) >= 10 else 0
    calib_x, held_x = x[: len(x) - n_held], (x[len(x) - n_held :] if n_held else None)
    info = {
        "source": recorded_path(calib),
        "described": what,
        "samples": len(calib_x),
        "held_back": n_held,
        "method": method,
        "seed": seed,
    }
    return Calibration(calib_x, held_x, info)


def build_candidates(
    fp32_path: Path,
    candidates: list[str],
    folder: Path,
    calibration: Calibration | None,
    calib_method: str,
    int8_scheme: str,
    log: Callable[[str], None],
) -> dict[str, Path]:
    """fp32 and each candidate precision built into ``folder``: name -> file."""
    built = {"fp32": fp32_path}
    for c in candidates:
        p = folder / f"{c}.onnx"
        t = time.perf_counter()
        if c == "fp16":
            convert_fp16(fp32_path, p)
        else:
            if calibration is None:
                raise UserError(f"{c} needs calibration faces: --calib DIR|CSV|VIDEO")
            quantize_int8(fp32_path, p, calibration.x, calib_method, scheme=int8_scheme)
        log(f"built {c} in {time.perf_counter() - t:.1f} s")
        built[c] = p
    return built


def score_candidates(
    built: dict[str, Path], config: ModelConfig, eval_ds, calibration: Calibration | None, notes: list[str]
) -> dict[str, dict]:
    """Per candidate: size, and top-1 against labels (``eval_ds``) or else agreement with fp32 on unlabelled faces."""
    n_classes = len(config.classes)
    table: dict[str, dict] = {k: {"bytes": v.stat().st_size} for k, v in built.items()}
    if eval_ds is not None:
        probe = Preprocessor(config).normalize(eval_ds.images)
    elif calibration is not None:
        held = calibration.held_back is not None
        probe = calibration.held_back if calibration.held_back is not None else calibration.x
        notes.append(
            f"accuracy not measured (no --eval): agreement with fp32 on {len(probe)} "
            f"{'held-back ' if held else ''}calibration faces"
        )
    else:
        from .parity import parity_inputs

        probe, _ = parity_inputs(config)
        notes.append(
            "accuracy not measured (no --eval, no --calib): fp16 checked for agreement on the bundled parity faces"
        )
    ref = _logits(built["fp32"], probe, n_classes)
    for k, p in built.items():
        lg = ref if k == "fp32" else _logits(p, probe, n_classes)
        if eval_ds is not None:
            table[k].update(_scores(eval_ds.labels, lg, config.classes))
        table[k]["agreement_with_fp32"] = float(np.mean(lg.argmax(1) == ref.argmax(1)))
        table[k]["max_abs_diff"] = float(np.abs(lg - ref).max())
        if eval_ds is not None:
            table[k]["drop_points"] = round(100 * (table["fp32"]["top1"] - table[k]["top1"]), 3)
    return table


def within_budget(row: dict, max_drop: float) -> bool:
    if "drop_points" in row:
        return row["drop_points"] <= max_drop
    return row["agreement_with_fp32"] >= 0.99  # unlabelled: top-1 must match fp32 on 99% of faces


def gate(precision: str, table: dict[str, dict], max_drop: float) -> None:
    """CheckFailed (no file of that precision written) when it costs more accuracy than the budget."""
    row = table[precision]
    if within_budget(row, max_drop):
        return
    if "drop_points" in row:
        why = f"accuracy drop {row['drop_points']:.2f} points > --max-accuracy-drop {max_drop}"
        hint = ""
    else:  # unlabelled: agreement is a proxy, and a strict one for small models whose top-2 are close
        why = f"top-1 agreement with fp32 {row['agreement_with_fp32']:.3f} < 0.99 (no labelled data to judge by)"
        hint = "; give --eval DIR (labelled faces) to judge it by accuracy instead"
    raise CheckFailed(
        f"{precision} artifact rejected: {why}; no {precision} file written (the fp32 ONNX and its manifest "
        f"are kept){hint}",
        {k: json.dumps(v) for k, v in table.items()},
    )


def choose_fastest(
    built: dict[str, Path],
    table: dict[str, dict],
    timer: Timer,
    max_drop: float,
    measured: bool,
    log: Callable[[str], None],
) -> tuple[str, dict]:
    """``auto``: time every candidate here, keep the fastest within budget; returns ``(chosen, selection)``."""
    lat = timer(built)
    for k, v in lat.items():
        table[k]["p50_ms_1thread"] = round(v, 4)
    ok = [k for k in built if within_budget(table[k], max_drop)]
    chosen = min(ok, key=lambda k: lat[k])
    reason = "fastest within the budget at batch 1, 1 thread on this machine: " + ", ".join(
        f"{k} {lat[k]:.3f} ms{'' if k in ok else ' (over budget)'}" for k in built
    )
    log(f"auto: chose {chosen}: {reason}")
    return chosen, {
        "chosen": chosen,
        "reason": reason,
        "budget": f"drop <= {max_drop} points" if measured else "agreement >= 0.99",
    }


@dataclass
class PrecisionArtifact:
    path: Path
    manifest_path: Path
    manifest: dict
    table: dict


def record_fp32_chosen(fp32_path: Path, selection: dict | None, table: dict, notes: list[str]) -> PrecisionArtifact:
    """``auto`` kept fp32: no new file; the fp32 manifest records the candidates and why."""
    mpath = fp32_path.parent / manifest_name(fp32_path.name)
    manifest = json.loads(mpath.read_text()) if mpath.is_file() else {}
    manifest["precision_selection"] = {"selection": selection, "candidates": table, "notes": notes}
    write_json_atomic(mpath, manifest)
    return PrecisionArtifact(fp32_path, mpath, manifest, table)


def write_precision_artifact(
    fp32_path: Path,
    chosen_file: Path,
    config: ModelConfig,
    chosen: str,
    *,
    table: dict,
    selection: dict | None,
    calibration: Calibration | None,
    eval_data,
    eval_samples: int | None,
    max_drop: float,
    int8_scheme: str,
    notes: list[str],
) -> PrecisionArtifact:
    """Copy the chosen build beside the fp32 file with its manifest, both renamed into place together."""
    target = fp32_path.parent / artifact_name(config.name, "onnx", chosen)
    mpath = target.parent / manifest_name(target.name)
    accuracy = (
        {"measured_on": recorded_path(eval_data), "samples": eval_samples, "max_drop_points": max_drop, **table}
        if eval_data is not None
        else {"measured": False, **table}
    )
    quantization = (
        {
            "format": "QDQ",
            "scheme": int8_scheme,
            "activations": INT8_SCHEMES[int8_scheme]["activations"],
            "weights": "int8 symmetric per-channel (7-bit range)",
            "tool": "onnxruntime.quantization quant_pre_process + quantize_static",
            # a transformer's LayerNorm/Softmax/GELU/attention products/residual sums (keep_fp32_plan)
            "kept_fp32": json.loads(read_metadata(load_onnx(chosen_file)).get("int8_kept_fp32", "null")),
        }
        if chosen == "int8"
        else None
    )
    with atomic_outputs(target, mpath) as (tmp_art, tmp_man):
        tmp_art.write_bytes(chosen_file.read_bytes())
        manifest = make_manifest(
            tmp_art,
            target.name,
            chosen,
            {"name": config.name, "task": config.task, "trained": config.trained, "classes": list(config.classes)},
            **{"from": {"artifact": fp32_path.name, "sha256": sha256_file(fp32_path)}},
            calibration=calibration.info if chosen == "int8" and calibration is not None else None,
            accuracy=accuracy,
            selection=selection,
            quantization=quantization,
            fp16={"kept_fp32": FP16_KEEP_FP32, "io": "float32"} if chosen == "fp16" else None,
            notes=notes,
            producer=f"emonas-edge {__version__}",
        )
        write_manifest(tmp_man, manifest)
    return PrecisionArtifact(target, mpath, manifest, table)


def derive_precision(
    fp32_path: str | Path,
    config: ModelConfig,
    precision: str,
    *,
    calib: str | os.PathLike | None = None,
    calib_samples: int = 512,
    calib_method: str = "minmax",
    seed: int = 0,
    eval_data: str | os.PathLike | None = None,
    max_drop: float = 1.0,
    log: Callable[[str], None] = lambda m: None,
    int8_scheme: str = "ort",
    timer: Timer | None = None,
) -> PrecisionArtifact:
    """Build the ``precision`` artifact (fp16 | int8 | auto) beside ``fp32_path``; gate it; write its manifest.

    ``int8_scheme``: "ort" for ONNX Runtime, "tensorrt" for a graph that becomes a TensorRT engine.
    ``timer``: how ``auto`` measures the candidates (``profile.models.precision_timer``); auto needs one.
    """
    fp32_path = Path(fp32_path)
    if int8_scheme not in INT8_SCHEMES:
        raise UserError(f"unknown int8 scheme {int8_scheme!r} (choose from: {', '.join(INT8_SCHEMES)})")
    if precision == AUTO and timer is None:
        raise UserError("precision 'auto' needs a timer to compare the candidates (profile.models.precision_timer)")
    check_precision_settings(precision, calib, calib_method, max_drop, eval_data, derive=True)
    notes: list[str] = []
    calibration = None
    if calib is not None:
        calibration = load_calibration(calib, config, calib_samples, calib_method, seed, eval_data is None, notes, log)
    eval_ds = None
    if eval_data is not None:
        from ..data.datasets import load_dataset

        eval_ds = load_dataset(eval_data, config, usage="PublicTest")
    candidates = ["fp16", "int8"] if precision == AUTO else [precision]
    if precision == AUTO and calibration is None:
        candidates = ["fp16"]
        notes.append("auto: no --calib, so int8 was not a candidate")

    with tempfile.TemporaryDirectory(prefix="emonas-precision-") as tmp:
        built = build_candidates(fp32_path, candidates, Path(tmp), calibration, calib_method, int8_scheme, log)
        table = score_candidates(built, config, eval_ds, calibration, notes)
        selection = None
        if precision == AUTO:
            assert timer is not None  # checked above
            chosen, selection = choose_fastest(built, table, timer, max_drop, eval_ds is not None, log)
        else:
            chosen = precision
            gate(chosen, table, max_drop)
        if chosen == "fp32":
            return record_fp32_chosen(fp32_path, selection, table, notes)
        assert chosen in FORMATS["onnx"].precisions
        return write_precision_artifact(
            fp32_path,
            built[chosen],
            config,
            chosen,
            table=table,
            selection=selection,
            calibration=calibration,
            eval_data=eval_data,
            eval_samples=len(eval_ds) if eval_ds is not None else None,
            max_drop=max_drop,
            int8_scheme=int8_scheme,
            notes=notes,
        )
