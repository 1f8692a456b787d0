"""Accuracy vs measured latency of every trained macro model: the trade-off users choose by.

    .venv/bin/python benchmarks/pareto.py [--model runs/train/searched/best.pt ...] [--iters 2000] \
        [--png docs/pareto.png] [--markdown docs/pareto.md]

Each model is timed as ONNX Runtime INT8 (the shipped ORT scheme: uint8 asymmetric activations,
calibrated on FER2013 train) and fp32, batch 1, one thread, interleaved in one group with `fer`'s
mini-Xception in fp32 (what fer runs), so the ratio column does not move with this machine's ~1.5x
drift. Accuracy is FER2013 PublicTest top-1: the committed report of a built-in, or a fresh
`evaluate` of each ``--model``. mini-Xception has no weights here; its point is placed at fer's
published accuracy and marked so. A model is on the Pareto front when no other is both faster (INT8)
and more accurate. Prints the Markdown table (also written with ``--markdown``).
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
from emonas_edge.runtime.compiled import cached_onnx
from emonas_edge.runtime.ort_backend import OrtBackend
from emonas_edge.zoo import builtin_models

SHARED = Path(__file__).resolve().parents[2] / "shared"
MINI_XCEPTION_PUBLISHED = 0.659  # fer's mini-Xception, FER2013 PrivateTest (issue #28's independent evaluation)


def _models(extra: list[str], eval_dir: Path) -> list[tuple[str, str, float | None]]:
    """(label, spec, PublicTest top-1) of every trained macro built-in and every ``--model``."""
    out = []
    for name, entry in builtin_models().items():
        if entry.accuracy() is not None:
            out.append((name, name, entry.accuracy()))
    for spec in extra:
        from emonas_edge.train.evaluate import evaluate

        report = evaluate(spec, eval_dir, threads=2)
        out.append(
            (
                Path(spec).parent.name if Path(spec).name in ("best.pt", "last.pt") else Path(spec).stem,
                spec,
                report["accuracy"],
            )
        )
    return out


def front(points: list[tuple[float, float]]) -> list[bool]:
    """True where no other point is at least as fast and strictly more accurate (or faster and as accurate)."""
    return [
        not any((x2 <= x and y2 > y) or (x2 < x and y2 >= y) for j, (x2, y2) in enumerate(points) if j != i)
        for i, (x, y) in enumerate(points)
    ]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=130)
    for r in rows:
        marker = "s" if r["label"].startswith("fer") else ("*" if r["front"] else "o")
        ax.scatter(
            r["int8_ratio"],
            100 * r["accuracy"],
            marker=marker,
            s=90 if marker == "*" else 45,
            color="tab:red" if r["front"] else "tab:gray" if marker != "s" else "black",
            zorder=3,
        )
        ax.annotate(
            r["label"], (r["int8_ratio"], 100 * r["accuracy"]), textcoords="offset points", xytext=(6, 4), fontsize=8
        )
    ax.set_xlabel("latency, INT8 batch 1, 1 thread (x fer's mini-Xception fp32, same run)")
    ax.set_ylabel("FER2013 top-1 (%)")
    ax.set_title("accuracy vs latency on this CPU (red stars: Pareto front)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        help="a trained checkpoint or ONNX file to add (evaluated on PublicTest)",
    )
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--calib", type=Path, default=SHARED / "datasets" / "fer2013" / "train")
    ap.add_argument("--eval", type=Path, default=SHARED / "datasets" / "fer2013" / "publictest")
    ap.add_argument("--png", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    from emonas_edge.export.precision import derive_precision

    # A helper beside this script: `python benchmarks/pareto.py` puts benchmarks/ first on sys.path
    # (emonas_edge itself comes from the installed package, so nothing patches sys.path).
    from baselines import minixception_runner

    env = environment()
    tmp = tempfile.TemporaryDirectory()
    base = minixception_runner(tmp.name)
    rows = []
    for label, spec, acc in _models(args.model, args.eval):
        onnx_path = cached_onnx(spec)
        config = config_from_metadata(read_metadata(load_onnx(onnx_path)), str(onnx_path))
        if config.task != "macro":
            continue
        int8 = derive_precision(onnx_path, config, "int8", calib=args.calib, max_drop=100.0, eval_data=args.eval).path
        x = _inputs(config, 1)
        fp32_backend, int8_backend = OrtBackend(onnx_path, "cpu", 1), OrtBackend(int8, "cpu", 1)
        fns = {"fp32": partial(fp32_backend.run, x), "int8": partial(int8_backend.run, x), "base": base}
        t = time_interleaved(fns, iters=args.iters)
        rows.append(
            {
                "label": label,
                "accuracy": acc,
                "fp32_ms": t["fp32"].p50_ms,
                "int8_ms": t["int8"].p50_ms,
                "base_ms": t["base"].p50_ms,
                "fp32_ratio": t["fp32"].p50_ms / t["base"].p50_ms,
                "int8_ratio": t["int8"].p50_ms / t["base"].p50_ms,
            }
        )
    rows.append(
        {
            "label": "fer mini-Xception (published)",
            "accuracy": MINI_XCEPTION_PUBLISHED,
            "fp32_ms": None,
            "int8_ms": None,
            "base_ms": None,
            "fp32_ratio": 1.0,
            "int8_ratio": 1.0,
        }
    )
    for r, on in zip(rows, front([(r["int8_ratio"], r["accuracy"]) for r in rows]), strict=True):
        r["front"] = on
    rows.sort(key=lambda r: r["int8_ratio"])
    lines = [
        f"<!-- made by: .venv/bin/python benchmarks/pareto.py {' '.join('--model ' + m for m in args.model)} --iters "
        f"{args.iters}; "
        f"{env['cpu']}, {env['cpu_count']} cores, onnxruntime {env['packages']['onnxruntime']} -->",
        "| model | FER2013 top-1 | INT8 p50 ms | × mini-Xception (INT8) | fp32 p50 ms | × mini-Xception (fp32) | "
        "Pareto front |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = lambda v: f"{v:.3f}" if v is not None else "–"  # noqa: E731
        acc = f"{100 * r['accuracy']:.2f}%" + (
            " (PrivateTest, published)" if r["label"].startswith("fer") else " (PublicTest)"
        )
        lines.append(
            f"| `{r['label']}` | {acc} | {ms(r['int8_ms'])} | {r['int8_ratio']:.2f} | {ms(r['fp32_ms'])} | "
            f"{r['fp32_ratio']:.2f} | "
            f"{'yes' if r['front'] else 'no'} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if args.png:
        plot(rows, args.png)


if __name__ == "__main__":
    main()
