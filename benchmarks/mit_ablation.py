"""Trained Mix-Transformers side by side (issue #32): the paper's multiscale fusion block against the same
network classifying from its last stage alone, and against the cell built-ins.

    .venv/bin/python benchmarks/mit_ablation.py runs/mit/e16/best.pt runs/mit/e16-nofusion/best.pt \
        [--data ../shared/datasets/fer2013/publictest] [--iters 2000]

For each checkpoint: PublicTest top-1 and UF1 (ONNX Runtime on the verified fp32 export, the path users run),
params, MACs per face, and batch-1 latency on one ONNX Runtime thread, timed interleaved with fer's
mini-Xception in fp32 (same run, so the ratios hold across this VM's drift). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emonas_edge.export.onnx import export_onnx  # noqa: E402
from emonas_edge.profile.timing import time_interleaved  # noqa: E402
from emonas_edge.resolve import load_model  # noqa: E402
from emonas_edge.train.evaluate import evaluate  # noqa: E402

from baselines import minixception_runner, session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", default="../shared/datasets/fer2013/publictest")
    ap.add_argument("--iters", type=int, default=2000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    fns = {"mini-Xception (fer)": minixception_runner(tmp)}
    rows = {}
    for ckpt in args.checkpoints:
        config, model, _ = load_model(ckpt)
        label = f"{Path(ckpt).parent.name} (fusion {'on' if config.network.get('fusion', True) else 'off'})"
        result = export_onnx(config, model.eval(), tmp / label.split()[0])
        report = evaluate(str(result.path), args.data, threads=2)
        s = session(result.path, 1)
        x = np.random.rand(1, *config.input_shape).astype(np.float32)
        name = s.get_inputs()[0].name
        fns[label] = lambda s=s, name=name, x=x: s.run(None, {name: x})
        m = result.manifest["model"]
        rows[label] = (report["accuracy"], report["uf1"], m["params"], m["macs"])
        print(f"{label}: {report['accuracy']:.4f}", flush=True)
    t = time_interleaved(fns, iters=args.iters, warmup=200)
    base = t["mini-Xception (fer)"].p50_ms
    print("\n| network | PublicTest top-1 | UF1 | params | MACs | fp32 p50 ms (1 thread) | x mini-Xception |")
    print("|---|---|---|---|---|---|---|")
    for label, (acc, uf1, params, macs) in rows.items():
        p50 = t[label].p50_ms
        cells = f"{100 * acc:.2f}% | {uf1:.3f} | {params:,} | {macs / 1e6:.1f} M | {p50:.3f} | {p50 / base:.2f}"
        print(f"| {label} | {cells} |")
    print(f"| fer mini-Xception (same run) | - | - | - | - | {base:.3f} | 1.00 |")


if __name__ == "__main__":
    main()
