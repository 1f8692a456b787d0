"""Scoring any artifact on a labelled dataset through the runtime backends.

A checkpoint runs in PyTorch and an ONNX file (fp32 or quantized) in ONNX Runtime, through the
same preprocessing and the same metrics, so an exported model's score is comparable with the
checkpoint it came from.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..data.datasets import ArrayDataset, load_dataset
from ..data.preprocess import Preprocessor
from ..errors import MissingDependency, check_number
from ..fileio import atomic_outputs, check_output_paths, write_json_atomic
from ..metrics import classification_report
from ..runtime import load_backend
from ..runtime.foreign import ForeignSpec


def predict_logits(backend, ds: ArrayDataset, batch: int = 256) -> np.ndarray:
    pre = Preprocessor(backend.config)
    outs = []
    for i in range(0, len(ds), batch):
        outs.append(backend.run_all(pre.normalize(ds.images[i : i + batch]), batch))
    return np.concatenate(outs)


def evaluate(
    model: str | os.PathLike,
    data: str | os.PathLike,
    json_path: str | os.PathLike | None = None,
    report_dir: str | os.PathLike | None = None,
    provider: str | None = None,
    threads: int | None = None,
    batch: int = 256,
    limit_per_class: int | None = None,
    foreign: ForeignSpec | None = None,
) -> dict:
    """``foreign``: the classes (and pixels) of an ONNX file made elsewhere, which carries no metadata."""
    check_number("--batch", batch, 1)
    check_number("--threads", threads, 1)
    check_number("--limit-per-class", limit_per_class, 1)
    check_output_paths({"--model": model, "--data": data}, {"--json": json_path})
    backend = load_backend(model, provider=provider, threads=threads, foreign=foreign)
    ds = load_dataset(data, backend.config, usage="PublicTest", limit_per_class=limit_per_class)
    t = time.perf_counter()
    logits = predict_logits(backend, ds, batch)
    seconds = time.perf_counter() - t
    report = classification_report(ds.labels, logits.argmax(1), backend.classes)
    report.update(
        {
            "model": str(model),
            "backend": backend.name,
            "trained": backend.trained,
            "data": str(data),
            "skipped_unreadable": ds.skipped,
            "seconds": round(seconds, 3),
        }
    )
    if json_path:
        write_json_atomic(json_path, report)
    if report_dir:
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "report.json", report)
        plot_confusion(report, out / "confusion_matrix.png")
    return report


def plot_confusion(report: dict, path: str | os.PathLike) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependency("matplotlib", "the confusion-matrix plot", extra="plot") from None
    cm = np.asarray(report["confusion_matrix"], dtype=np.float64)
    classes = report["classes"]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(classes), 0.8 + 0.8 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{norm[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    untrained = "" if report.get("trained") else "  [UNTRAINED MODEL]"
    ax.set_title(
        f"accuracy {report['accuracy']:.2%}, UF1 {report['uf1']:.3f}, UAR {report['uar']:.3f}{untrained}", fontsize=9
    )
    fig.tight_layout()
    path = Path(path)
    with atomic_outputs(path) as (tmp,):
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
