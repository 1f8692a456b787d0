"""A transformer's precisions side by side (issue #32): fp32, fp16, INT8 with everything quantized, and INT8 with
the transformer plan (LayerNorm, Softmax, GELU, attention products and residual sums kept in fp32).

    .venv/bin/python benchmarks/mit_precision.py MODEL.onnx [--calib ../shared/datasets/fer2013/train]
        [--eval ../shared/datasets/fer2013/publictest] [--iters 1000]

Each INT8/fp16 file is derived from MODEL.onnx through the export's own precision path (written beside copies
in a temporary folder; MODEL.onnx is never touched), scored on --eval, and timed at batch 1 on one ONNX
Runtime thread, interleaved with fer's mini-Xception in fp32 (same run: ratios hold across this VM's drift).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import emonas_edge.export.precision as precision  # noqa: E402
from emonas_edge.export.metadata import config_from_metadata, load_onnx, read_metadata  # noqa: E402
from emonas_edge.profile.timing import time_interleaved  # noqa: E402

from baselines import minixception_runner, session  # noqa: E402


def derive(src: Path, work: Path, variant: str, config, calib: str, eval_data: str):
    """One derived file and its accuracy table; ``all`` turns the keep-fp32 plan off for the run."""
    folder = work / variant
    folder.mkdir()
    copy = folder / src.name
    shutil.copy(src, copy)
    plan = precision.keep_fp32_plan
    if variant == "int8-all":
        precision.keep_fp32_plan = lambda model: None
    try:
        kind = "fp16" if variant == "fp16" else "int8"
        made = precision.derive_precision(copy, config, kind, calib=calib, eval_data=eval_data, max_drop=100.0)
    finally:
        precision.keep_fp32_plan = plan
    return made.path, made.table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--calib", default="../shared/datasets/fer2013/train")
    ap.add_argument("--eval", dest="eval_data", default="../shared/datasets/fer2013/publictest")
    ap.add_argument("--iters", type=int, default=1000)
    args = ap.parse_args()
    src = Path(args.model)
    config = config_from_metadata(read_metadata(load_onnx(src)), str(src))
    work = Path(tempfile.mkdtemp())
    files, rows = {"fp32": src}, {}
    for variant in ("fp16", "int8-all", "int8-plan"):
        files[variant], table = derive(src, work, variant, config, args.calib, args.eval_data)
        rows[variant], rows["fp32"] = table["fp16" if variant == "fp16" else "int8"], table["fp32"]
    x = np.random.rand(1, *config.input_shape).astype(np.float32)
    fns = {"mini-Xception": minixception_runner(work)}
    for variant, path in files.items():
        s = session(path, 1)
        name = s.get_inputs()[0].name
        fns[variant] = lambda s=s, name=name: s.run(None, {name: x})
    t = time_interleaved(fns, iters=args.iters, warmup=100)
    base = t["mini-Xception"].p50_ms
    print("| precision | top-1 | drop (points) | p50 ms | x mini-Xception |\n|---|---|---|---|---|")
    for variant in files:
        row = rows[variant]
        top1, drop = f"{100 * row['top1']:.2f}%", f"{row['drop_points']:.2f}" if variant != "fp32" else "-"
        print(f"| {variant} | {top1} | {drop} | {t[variant].p50_ms:.3f} | {t[variant].p50_ms / base:.2f} |")
    print(f"| mini-Xception fp32 (fer) | - | - | {base:.3f} | 1.00 |")


if __name__ == "__main__":
    main()
