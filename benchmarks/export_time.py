"""Export time of the default genotype: the full verified export vs a bare torch.onnx.export.

Target (issue #2): the full export (export + onnx.checker + simplify + metadata + ONNX Runtime
parity on real faces) of the default genotype takes <= 10 s on the project's 2-core machine.
The bare ``torch.onnx.export`` of the same model with each exporter (TorchScript, which
``--exporter auto`` uses, and dynamo), measured in the same run, are the baselines: the ratio
says what verification costs on top of exporting at all, and what the exporter choice saves.

    .venv/bin/python benchmarks/export_time.py [--genotype emonas-macro] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genotype", default="emonas-macro")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch

    from emonas_edge import export_onnx, load_model
    from emonas_edge.environment import environment
    from emonas_edge.export.onnx import torch_to_onnx

    config, model, _ = load_model(args.genotype)
    full, bare, bare_dynamo = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        # one untimed export first with each exporter: their one-off start-up (registries,
        # decompositions) is paid by the CLI cold start below, not by whichever timed run is first
        for exporter in ("torchscript", "dynamo"):
            torch_to_onnx(model, config.input_shape, Path(tmp) / f"warmup-{exporter}.onnx", 18, None, exporter)
        for i in range(args.repeat):
            t = time.perf_counter()
            torch_to_onnx(model, config.input_shape, Path(tmp) / f"bare{i}.onnx", 18, None, "torchscript")
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            torch_to_onnx(model, config.input_shape, Path(tmp) / f"dynamo{i}.onnx", 18, None, "dynamo")
            bare_dynamo.append(time.perf_counter() - t)
            t = time.perf_counter()
            export_onnx(config, model, Path(tmp) / f"full{i}")
            full.append(time.perf_counter() - t)
        # What a user waits for: a fresh process, imports included.
        cli = Path(sys.executable).parent / "emonas-edge"
        t = time.perf_counter()
        subprocess.run(
            [str(cli), "export", "--genotype", args.genotype, "--output", str(Path(tmp) / "cli")],
            check=True,
            capture_output=True,
        )
        cold = time.perf_counter() - t

    env = environment(("torch", "onnx", "onnxruntime", "onnxscript", "onnxsim"))
    print(
        f"machine: {env['cpu']} ({env['cpu_count']} cores), torch {torch.__version__}, onnxruntime "
        f"{env['packages']['onnxruntime']}"
    )
    print(f"genotype: {args.genotype}  repeats: {args.repeat}")
    print(
        f"full export (in-process) median {statistics.median(full):.2f} s  runs {', '.join(f'{x:.2f}' for x in full)}"
    )
    print(
        f"bare export, TorchScript median {statistics.median(bare):.2f} s  runs {', '.join(f'{x:.2f}' for x in bare)}"
    )
    print(
        f"bare export, dynamo      median {statistics.median(bare_dynamo):.2f} s  runs "
        f"{', '.join(f'{x:.2f}' for x in bare_dynamo)}"
    )
    print(f"CLI cold start (new process, imports included) {cold:.2f} s")
    print(
        f"export_s={statistics.median(full):.2f} bare_export_s={statistics.median(bare):.2f} "
        f"ratio={statistics.median(full) / statistics.median(bare):.2f} "
        f"dynamo_over_torchscript={statistics.median(bare_dynamo) / statistics.median(bare):.2f} "
        f"cli_cold_s={cold:.2f} target_s=10"
    )


if __name__ == "__main__":
    main()
