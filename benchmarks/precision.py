"""What each precision costs and buys for the default macro model, all measured in one run.

    .venv/bin/python benchmarks/precision.py [--model emonas-macro] [--data ../shared/datasets/fer2013/publictest]
                                             [--calib ../shared/datasets/fer2013/train]

Exports fp32, derives fp16 and calibrated INT8 (ONNX Runtime QDQ, 512 training faces, seed 0),
then for each: file size, batch-1 latency at 1 and 2 threads (interleaved, same machine state),
PublicTest top-1 and agreement with fp32. Prints a Markdown table and, last, the INT8/fp32
latency ratio at one thread.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from emonas_edge.data.datasets import load_dataset
from emonas_edge.data.preprocess import Preprocessor
from emonas_edge.environment import environment
from emonas_edge.export.onnx import export_onnx
from emonas_edge.export.precision import derive_precision
from emonas_edge.profile.models import time_artifacts
from emonas_edge.resolve import load_model
from emonas_edge.runtime.ort_backend import OrtBackend

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="emonas-macro")
    ap.add_argument("--data", type=Path, default=SHARED / "datasets" / "fer2013" / "publictest")
    ap.add_argument("--calib", type=Path, default=SHARED / "datasets" / "fer2013" / "train")
    ap.add_argument("--iters", type=int, default=2000)
    args = ap.parse_args()

    config, model, weights = load_model(args.model)
    env = environment()
    print(
        f"model {args.model} (trained={config.trained}); data {args.data}; {env.get('cpu', '')}, "
        f"{env.get('cpu_count', '')} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(config, model, tmp, weights=weights).path
        paths = {"fp32": fp32}
        for p in ("fp16", "int8"):
            # labelled data, any drop allowed: this script reports what each precision costs, it does not gate
            paths[p] = derive_precision(
                fp32, config, p, calib=args.calib if p == "int8" else None, max_drop=100.0, eval_data=args.data
            ).path
        ds = load_dataset(args.data, config, usage="PublicTest")
        x = Preprocessor(config).normalize(ds.images)
        logits = {k: OrtBackend(p, "cpu").run_all(x) for k, p in paths.items()}
        one = x[:1].copy()
        lat = {th: {k: v.p50_ms for k, v in time_artifacts(paths, one, th, args.iters).items()} for th in (1, 2)}
        ref = logits["fp32"].argmax(1)
        print(f"\n{len(ds)} PublicTest images; latency = median of {args.iters} batch-1 runs, interleaved\n")
        print(
            "| precision | file (bytes) | p50 ms, 1 thread | p50 ms, 2 threads "
            "| PublicTest top-1 | agreement with fp32 |"
        )
        print("|---|---|---|---|---|---|")
        for k, p in paths.items():
            pred = logits[k].argmax(1)
            print(
                f"| {k} | {p.stat().st_size:,} | {lat[1][k]:.3f} | {lat[2][k]:.3f} | {np.mean(pred == ds.labels):.4f} "
                f"| {np.mean(pred == ref):.4f} |"
            )
    print(
        f"\nint8_vs_fp32_latency_ratio_1thread={lat[1]['int8'] / lat[1]['fp32']:.3f} "
        f"fp16_vs_fp32={lat[1]['fp16'] / lat[1]['fp32']:.3f}"
    )


if __name__ == "__main__":
    main()
