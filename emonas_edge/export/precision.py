"""FP16 and calibrated INT8 artifacts from a verified fp32 ONNX, with an accuracy gate.

The commonest complaint about edge exporters is INT8 accuracy collapsing silently, so nothing
leaves here unmeasured: with a labelled ``eval`` set both precisions are scored by the same
scorer as ``evaluate`` and a drop beyond the budget fails (exit 1, nothing written); without
one, agreement with fp32 on held-back calibration faces is recorded and the manifest says
accuracy was not measured. ``auto`` times the candidates on this machine and keeps the fastest
within budget: on a small CPU, QDQ INT8 is often slower than fp32, so it must be measured. The
timer is passed in (``profile`` owns how latency is measured; export sits below it), and the
candidates run in the same ONNX Runtime sessions as the runtime's (:mod:`.session`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from .. import __version__
from ..config import ModelConfig
from ..data.preprocess import Preprocessor
from ..environment import environment
from ..errors import CheckFailed, UserError
from ..fileio import atomic_outputs, sha256_file, write_json_atomic
from ..metrics import classification_report
from .formats import AUTO, FORMATS, PRECISION_CHOICES, artifact_name, manifest_name
from .metadata import load_onnx, read_metadata, write_metadata
from .session import open_session, run_chunked, static_batch

# Latency of each candidate file (name -> path) in ms, as ``auto`` compares them: p50 at batch 1, one thread.
Timer = Callable[[dict[str, Path]], dict[str, float]]
CALIB_METHODS = ("minmax", "entropy", "percentile")
# kept in fp32 by the fp16 conversion: normalisations, softmax and reductions lose the most in fp16
FP16_KEEP_FP32 = ["LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2", "GlobalAveragePool"]
HELD_BACK = 0.2  # share of calibration faces kept out of calibration to measure agreement


@dataclass
class Derived:
    path: Path
    manifest_path: Path
    manifest: dict
    table: dict


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


def quantize_qdq(src: Path, dst: Path, reader, method: str = "minmax", scheme: str = "ort") -> None:
    """The one set of ONNX Runtime INT8 settings (see :func:`quantize_int8` for why these), for any
    graph and calibration reader: the search's latency table quantizes its blocks with it too, so
    the blocks it times are quantized as the shipped models are."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in INT8_SCHEMES:
        raise UserError(f"unknown int8 scheme {scheme!r} (choose from: {', '.join(INT8_SCHEMES)})")
    spec = INT8_SCHEMES[scheme]
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="emonas-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        extra = {"ActivationSymmetric": spec["symmetric"], "WeightSymmetric": True}
        if method == "percentile":
            extra["CalibPercentile"] = 99.99
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # one "Axis 1 is out-of-range" warning per unfused BatchNorm (kept float, as intended)
        try:
            quantize_static(
                str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8 if spec["signed"] else QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=methods[method], extra_options=extra, reduce_range=True,
            )
        finally:
            root.setLevel(level)


def quantize_int8(src: Path, dst: Path, calib: np.ndarray, method: str = "minmax", batch: int = 32, scheme: str = "ort") -> None:
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

    quantize_qdq(src, dst, Reader(), method, scheme)
    out = onnx.load(str(dst))
    write_metadata(out, {**meta, "precision": "int8", "int8_scheme": scheme})
    onnx.save(out, str(dst))


def _logits(path: Path, x: np.ndarray, n_classes: int, threads: int | None = None) -> np.ndarray:
    session = open_session(load_onnx(path).SerializeToString(), "cpu", threads)
    name = session.get_inputs()[0].name
    return run_chunked(lambda c: session.run(None, {name: c})[0], x, static_batch(session), n_classes)


def _scores(y: np.ndarray, logits: np.ndarray, classes) -> dict:
    r = classification_report(y, logits.argmax(1), classes)
    return {"top1": r["accuracy"], "uf1": r.get("uf1"), "per_class_f1": {c: round(v["f1"], 4) for c, v in r["per_class"].items()}}


def check_precision_settings(precision: str, calib=None, calib_method: str = "minmax", max_drop: float = 1.0,
                             eval_data=None, derive: bool = False) -> None:
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


def derive_precision(
    fp32_path: str | Path,
    config: ModelConfig,
    precision: str,
    *,
    calib: str | Path | None = None,
    calib_samples: int = 512,
    calib_method: str = "minmax",
    seed: int = 0,
    eval_data: str | Path | None = None,
    max_drop: float = 1.0,
    log: Callable[[str], None] = lambda m: None,
    int8_scheme: str = "ort",
    timer: Timer | None = None,
) -> Derived:
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
    pre = Preprocessor(config)
    notes: list[str] = []
    calib_x = held_x = None
    calib_info = None
    if calib is not None:
        from .calibration import calibration_pixels

        pixels, what, warns = calibration_pixels(calib, config, calib_samples, seed)
        notes += warns
        for w in warns:
            log(f"warning: {w}")
        x = pre.normalize(pixels)
        n_held = int(round(len(x) * HELD_BACK)) if eval_data is None and len(x) >= 10 else 0
        calib_x, held_x = x[: len(x) - n_held], (x[len(x) - n_held :] if n_held else None)
        calib_info = {"source": str(calib), "described": what, "samples": len(calib_x), "held_back": n_held, "method": calib_method, "seed": seed}
    eval_ds = None
    if eval_data is not None:
        from ..data.datasets import load_dataset

        eval_ds = load_dataset(eval_data, config, usage="PublicTest")
        eval_x = pre.normalize(eval_ds.images)
    candidates = ["fp16", "int8"] if precision == AUTO else [precision]
    if precision == AUTO and calib_x is None:
        candidates = ["fp16"]
        notes.append("auto: no --calib, so int8 was not a candidate")

    with tempfile.TemporaryDirectory(prefix="emonas-precision-") as tmp:
        built = {"fp32": fp32_path}
        for c in candidates:
            p = Path(tmp) / f"{c}.onnx"
            t = time.perf_counter()
            if c == "fp16":
                convert_fp16(fp32_path, p)
            else:
                quantize_int8(fp32_path, p, calib_x, calib_method, scheme=int8_scheme)
            log(f"built {c} in {time.perf_counter() - t:.1f} s")
            built[c] = p
        table: dict[str, dict] = {k: {"bytes": v.stat().st_size} for k, v in built.items()}
        if eval_ds is not None:
            ref = _logits(fp32_path, eval_x, len(config.classes))
            for k, p in built.items():
                lg = ref if k == "fp32" else _logits(p, eval_x, len(config.classes))
                table[k].update(_scores(eval_ds.labels, lg, config.classes))
                table[k]["agreement_with_fp32"] = float(np.mean(lg.argmax(1) == ref.argmax(1)))
                table[k]["max_abs_diff"] = float(np.abs(lg - ref).max())
                table[k]["drop_points"] = round(100 * (table["fp32"]["top1"] - table[k]["top1"]), 3)
        else:
            if held_x is not None or calib_x is not None:
                probe = held_x if held_x is not None else calib_x
                notes.append(f"accuracy not measured (no --eval): agreement with fp32 on {len(probe)} {'held-back ' if held_x is not None else ''}calibration faces")
            else:
                from .parity import parity_inputs

                probe, _ = parity_inputs(config)
                notes.append("accuracy not measured (no --eval, no --calib): fp16 checked for agreement on the bundled parity faces")
            ref = _logits(fp32_path, probe, len(config.classes))
            for k, p in built.items():
                lg = ref if k == "fp32" else _logits(p, probe, len(config.classes))
                table[k]["agreement_with_fp32"] = float(np.mean(lg.argmax(1) == ref.argmax(1)))
                table[k]["max_abs_diff"] = float(np.abs(lg - ref).max())

        def within(k: str) -> bool:
            if "drop_points" in table[k]:
                return table[k]["drop_points"] <= max_drop
            return table[k]["agreement_with_fp32"] >= 0.99  # unlabelled: top-1 must match fp32 on 99% of faces

        selection = None
        if precision == AUTO:
            lat = timer(built)
            for k, v in lat.items():
                table[k]["p50_ms_1thread"] = round(v, 4)
            ok = [k for k in built if within(k)]
            chosen = min(ok, key=lambda k: lat[k])
            reason = (f"fastest within the budget at batch 1, 1 thread on this machine: "
                      + ", ".join(f"{k} {lat[k]:.3f} ms{'' if k in ok else ' (over budget)'}" for k in built))
            selection = {"chosen": chosen, "reason": reason, "budget": f"drop <= {max_drop} points" if eval_ds is not None else "agreement >= 0.99"}
            log(f"auto: chose {chosen}: {reason}")
        else:
            chosen = precision
            if not within(chosen):
                why = (f"accuracy drop {table[chosen]['drop_points']:.2f} points > --max-accuracy-drop {max_drop}"
                       if "drop_points" in table[chosen] else f"top-1 agreement with fp32 {table[chosen]['agreement_with_fp32']:.3f} < 0.99")
                raise CheckFailed(f"{chosen} artifact rejected: {why}; nothing written", {k: json.dumps(v) for k, v in table.items()})

        if chosen == "fp32":
            target = fp32_path
            mpath = fp32_path.parent / manifest_name(fp32_path.name)
            manifest = json.loads(mpath.read_text()) if mpath.is_file() else {}
            manifest["precision_selection"] = {"selection": selection, "candidates": table, "notes": notes}
            write_json_atomic(mpath, manifest)
            return Derived(target, mpath, manifest, table)

        target = fp32_path.parent / artifact_name(config.name, "onnx", chosen)
        mpath = target.parent / manifest_name(target.name)
        with atomic_outputs(target, mpath) as (tmp_art, tmp_man):
            tmp_art.write_bytes(built[chosen].read_bytes())
            manifest = {
                "format": "emonas-manifest/1",
                "artifact": target.name,
                "sha256": sha256_file(tmp_art),
                "bytes": tmp_art.stat().st_size,
                "export_format": "onnx",
                "precision": chosen,
                "from": {"artifact": fp32_path.name, "sha256": sha256_file(fp32_path)},
                "model": {"name": config.name, "task": config.task, "trained": config.trained, "classes": list(config.classes)},
                "calibration": calib_info if chosen == "int8" else None,
                "accuracy": ({"measured_on": str(eval_data), "samples": len(eval_ds), "max_drop_points": max_drop, **{k: table[k] for k in table}}
                             if eval_ds is not None else {"measured": False, **{k: table[k] for k in table}}),
                "selection": selection,
                "quantization": ({"format": "QDQ", "scheme": int8_scheme, "activations": INT8_SCHEMES[int8_scheme]["activations"],
                                  "weights": "int8 symmetric per-channel (7-bit range)",
                                  "tool": "onnxruntime.quantization quant_pre_process + quantize_static"} if chosen == "int8" else None),
                "fp16": {"kept_fp32": FP16_KEEP_FP32, "io": "float32"} if chosen == "fp16" else None,
                "notes": notes,
                "producer": f"emonas-edge {__version__}",
                "environment": environment(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            tmp_man.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    assert chosen in FORMATS["onnx"].precisions
    return Derived(target, mpath, manifest, table)
