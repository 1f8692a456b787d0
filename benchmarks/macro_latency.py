"""Batch-1 latency of the default macro model vs fer's mini-Xception, same runtime, same run.

Target (issue #3): <= 0.5 ms per face in ONNX Runtime on one CPU thread. The baseline is the
network the `fer` package ships (mini-Xception, 58k parameters, 64x64 input), re-implemented in
benchmarks/baselines.py and exported the same way, so both run in ONNX Runtime on this machine
and the ratio compares networks, not runtimes. Inputs are the bundled real face.

    .venv/bin/python benchmarks/macro_latency.py [--model emonas-macro | PATH.onnx] [--iters 3000]
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="emonas-macro", help="built-in name, checkpoint or exported .onnx")
    ap.add_argument("--iters", type=int, default=3000)
    args = ap.parse_args()

    import cv2
    import onnx

    from emonas_edge import export_onnx, load_model
    from emonas_edge.data.preprocess import Preprocessor
    from emonas_edge.environment import environment
    from emonas_edge.export.parity import ASSETS
    from emonas_edge.macs import macs_onnx
    from emonas_edge.profile.timing import time_interleaved

    # A helper beside this script: `python benchmarks/macro_latency.py` puts benchmarks/ first on sys.path
    # (emonas_edge itself comes from the installed package, so nothing patches sys.path).
    from baselines import minixception_onnx, session

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model.endswith(".onnx"):
            ours = Path(args.model)
            from emonas_edge.resolve import load_genotype

            config = load_genotype(ours)
        else:
            config, model, _ = load_model(args.model)
            ours = export_onnx(config, model, tmp / "ours").path
        base, x_base = minixception_onnx(tmp / "minixception.onnx")
        simplified = onnx.load(str(base))
        face = cv2.imread(str(ASSETS / "astronaut_face.png"))
        x_ours = Preprocessor(config)([face])

        env = environment(("onnxruntime",))
        print(f"machine: {env['cpu']} ({env['cpu_count']} cores), onnxruntime {env['packages']['onnxruntime']}")
        print(
            f"ours: {config.name} ({'trained' if config.trained else 'untrained'}), "
            f"{macs_onnx(onnx.load(str(ours))) / 1e6:.1f} M MACs; "
            f"mini-Xception: {macs_onnx(simplified) / 1e6:.1f} M MACs"
        )
        results = {}
        for threads in (1, 2):
            s_ours, s_base = session(ours, threads), session(base, threads)
            n_ours, n_base = s_ours.get_inputs()[0].name, s_base.get_inputs()[0].name
            t = time_interleaved(
                {
                    "ours": partial(s_ours.run, None, {n_ours: x_ours}),
                    "mini-xception": partial(s_base.run, None, {n_base: x_base}),
                },
                iters=args.iters,
            )
            results[threads] = t
            for k, v in t.items():
                print(
                    f"threads={threads} {k:14s} p50 {v.p50_ms:.3f} ms  "
                    f"p90 {v.p90_ms:.3f}  p99 {v.p99_ms:.3f}  min {v.min_ms:.3f}"
                )
        one = results[1]
        print(
            f"ours_p50_ms={one['ours'].p50_ms:.3f} minixception_p50_ms={one['mini-xception'].p50_ms:.3f} "
            f"ratio={one['ours'].p50_ms / one['mini-xception'].p50_ms:.2f} target_ms=0.5 threads=1"
        )


if __name__ == "__main__":
    main()
