"""Profile reports in the forms people paste: JSON (scripts), Markdown (READMEs), CSV (sheets), PNG (slides).

All writers take the same report dict, so every form shows the same figures; files are written
atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from ..errors import MissingDependency, UserError
from ..fileio import atomic_outputs

COLUMNS = [
    "target",
    "backend",
    "precision",
    "batch",
    "threads",
    "params",
    "macs",
    "file_bytes",
    "load_ms",
    "first_ms",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "throughput",
    "peak_rss_mb",
    "avg_power_mw",
    "mj_per_item",
]


def rows(report: dict) -> list[dict]:
    out = []
    for r in report["runs"]:
        power = r.get("power") or {}
        out.append(
            {
                **{k: r.get(k) for k in COLUMNS if k in r},
                "load_ms": r["cold_start_ms"]["load"],
                "first_ms": r["cold_start_ms"]["first_inference"],
                "avg_power_mw": power.get("avg_power_mw"),
                "mj_per_item": power.get("energy_per_inference_mj"),
            }
        )
    return out


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def to_markdown(report: dict) -> str:
    rs = rows(report)
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rs)]
    env = report.get("environment", {})
    lines = [
        f"Machine: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores; onnxruntime "
        f"{env.get('packages', {}).get('onnxruntime')}, "
        f"torch {env.get('packages', {}).get('torch')}" + (f"; Jetson {env['jetson']}" if env.get("jetson") else ""),
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rs]
    return "\n".join(lines) + "\n"


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows(report):
        w.writerow(r)
    return buf.getvalue()


def _accuracy(target: str) -> float | None:
    """PublicTest-style accuracy recorded beside an artifact (manifest) or a built-in model (evaluation JSON)."""
    p = Path(target)
    candidates = [p.with_name(p.name.rsplit(".", 1)[0] + ".manifest.json")] if p.suffix == ".onnx" else []
    from ..zoo import builtin

    b = builtin(str(target))
    if b is not None and b.report is not None:
        candidates.append(b.report)
    for c in candidates:
        if c.is_file():
            d = json.loads(c.read_text())
            if isinstance(d.get("accuracy"), (int, float)):
                return float(d["accuracy"])
            prec = d.get("precision")
            acc = d.get("accuracy") or {}
            if isinstance(acc, dict) and isinstance(acc.get(prec), dict) and "top1" in acc[prec]:
                return float(acc[prec]["top1"])
    return None


def plot(report: dict, latencies: list[np.ndarray], path: str | os.PathLike) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingDependency("matplotlib", "--plot", "plot") from e
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"{path}: plot must be .png, .svg or .pdf")
    runs = report["runs"]
    accs = [_accuracy(r["target"]) for r in runs]
    scatter = len({r["target"] for r in runs}) > 1 and any(a is not None for a in accs)
    fig, axes = plt.subplots(1, 2 if scatter else 1, figsize=(11 if scatter else 6.5, 4.2), squeeze=False)
    ax = axes[0][0]
    for r, lat in zip(runs, latencies, strict=True):
        xs = np.sort(lat)
        ax.plot(
            xs,
            np.arange(1, len(xs) + 1) / len(xs),
            label=f"{Path(r['target']).name} {r['backend']} {r['precision']} b{r['batch']} t{r['threads']}",
        )
    ax.set_xlabel("latency per call (ms)")
    ax.set_ylabel("fraction of calls")
    ax.set_title("latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if scatter:
        ax2 = axes[0][1]
        for r, a in zip(runs, accs, strict=True):
            if a is not None:
                ax2.scatter(r["p50_ms"], a)
                ax2.annotate(f"{Path(r['target']).name} {r['precision']}", (r["p50_ms"], a), fontsize=7)
        ax2.set_xlabel("p50 latency (ms)")
        ax2.set_ylabel("accuracy")
        ax2.set_title("accuracy vs latency")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_outputs(path) as (tmp,):
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), dpi=120)
    plt.close(fig)


def write_reports(report: dict, latencies, json_path=None, markdown=None, csv_path=None, plot_path=None) -> list[Path]:
    from ..fileio import write_json_atomic

    written = []
    if json_path:
        written.append(write_json_atomic(json_path, report))
    for p, text in ((markdown, to_markdown), (csv_path, to_csv)):
        if p:
            with atomic_outputs(p) as (tmp,):
                tmp.write_text(text(report), encoding="utf-8")
            written.append(Path(p))
    if plot_path:
        plot(report, latencies, plot_path)
        written.append(Path(plot_path))
    return written
