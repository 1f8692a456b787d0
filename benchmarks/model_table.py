"""The built-in model table of the README and models/README.md, measured in one run.

    .venv/bin/python benchmarks/model_table.py [--iters 2000]

For each built-in model: task, input, parameters and MACs (counted from the ONNX graph), batch-1
ONNX Runtime latency at one thread (fp32 and, for trained models, calibrated INT8), timed interleaved with
`fer`'s mini-Xception (benchmarks/baselines.py) so each row also gives ratios that this machine's drift
between runs does not move,
whether it is trained, and its PublicTest accuracy as recorded in ``models/<name>.publictest.json``
by ``emonas-edge evaluate``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

from emonas_edge.environment import environment
from emonas_edge.export.metadata import config_from_metadata, load_onnx, read_metadata
from emonas_edge.profile.models import _inputs
from emonas_edge.profile.timing import time_interleaved
from emonas_edge.resolve import model_info
from emonas_edge.runtime.compiled import cached_onnx
from emonas_edge.runtime.ort_backend import OrtBackend
from emonas_edge.zoo import builtin_models

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--calib", type=Path, default=SHARED / "datasets" / "fer2013" / "train")
    ap.add_argument(
        "--eval",
        type=Path,
        default=SHARED / "datasets" / "fer2013" / "publictest",
        help="labelled faces: INT8 is then judged by accuracy "
        "(any drop allowed here: this table reports, it does not gate)",
    )
    args = ap.parse_args()
    env = environment()
    # A helper beside this script: `python benchmarks/model_table.py` puts benchmarks/ first on sys.path
    # (emonas_edge itself comes from the installed package, so nothing patches sys.path).
    from baselines import minixception_runner

    tmp = tempfile.TemporaryDirectory()
    base = minixception_runner(tmp.name)
    rows, bases = [], []
    for name, entry in builtin_models().items():
        onnx_path = cached_onnx(name)
        config = config_from_metadata(read_metadata(load_onnx(onnx_path)), str(onnx_path))
        info = model_info(onnx_path)
        paths = {"fp32": onnx_path}
        if config.trained and config.task == "macro" and args.calib.is_dir():
            from emonas_edge.export.precision import derive_precision

            paths["int8"] = derive_precision(
                onnx_path,
                config,
                "int8",
                calib=args.calib,
                max_drop=100.0,
                eval_data=args.eval if args.eval.is_dir() else None,
            ).path
        x = _inputs(config, 1)
        fns = {k: partial(OrtBackend(p, "cpu", 1).run, x) for k, p in paths.items()}
        fns["base"] = base
        t = time_interleaved(fns, iters=args.iters)
        ratio = " / ".join(f"{t[k].p50_ms / t['base'].p50_ms:.2f}" for k in ("fp32", "int8") if k in t)
        acc = entry.accuracy()
        c, s = config.input_shape[0], config.input_shape[1]
        kind, color = f"{config.task} ({config.family})", "gray" if c == 1 else "RGB"
        lead = f"| `{name}` | {kind} | {c}×{s}×{s} {color} | {info['params']:,} | {info['macs'] / 1e6:.1f} M |"
        rows.append(
            f"{lead} {t['fp32'].p50_ms:.3f} | {t['int8'].p50_ms:.3f} |"
            if "int8" in t
            else f"{lead} {t['fp32'].p50_ms:.3f} | – |"
        )
        rows[-1] += (
            f" {ratio} | {'yes' if config.trained else 'no'} | {f'{100 * acc:.1f}%' if acc is not None else '–'} |"
        )
        bases.append(t["base"].p50_ms)
    print(
        f"<!-- made by: .venv/bin/python benchmarks/model_table.py --iters {args.iters}; {env['cpu']}, "
        f"{env['cpu_count']} cores, onnxruntime {env['packages']['onnxruntime']}; "
        f"mini-Xception p50 {min(bases):.3f}-{max(bases):.3f} ms across rows -->"
    )
    print(
        "| model | task (family) | input | params | MACs | ORT fp32 p50 ms (1 thread) | ORT INT8 p50 ms (1 thread) | × "
        "mini-Xception (fp32 / INT8) | trained | FER2013 PublicTest top-1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
