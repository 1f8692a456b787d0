"""Drawing a genotype's normal and reduction cells: the picture people read a searched architecture from.

matplotlib only (no graphviz binary to install): inputs on the left, intermediate nodes in
order, the concatenated output on the right, each edge labelled with its operation.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import MissingDependency, UserError
from .fileio import atomic_outputs
from .genotype import Genotype

_OP_COLOURS = {
    "skip_connect": "#7f7f7f",
    "none": "#cccccc",
    "max_pool_3x3": "#2ca02c",
    "avg_pool_3x3": "#98df8a",
}


def _colour(op: str) -> str:
    if op in _OP_COLOURS:
        return _OP_COLOURS[op]
    if op.startswith("sep"):
        return "#1f77b4"
    if op.startswith("dil"):
        return "#9467bd"
    return "#d62728"


def _draw_cell(ax, edges, concat, title: str) -> None:
    from matplotlib.patches import FancyArrowPatch

    steps = len(edges) // 2
    pos: dict[int | str, tuple[float, float]] = {0: (0.0, 1.2), 1: (0.0, -1.2)}
    for i in range(steps):
        pos[i + 2] = (1.6 + 1.5 * i, 0.9 if i % 2 == 0 else -0.9)
    out_x = 1.6 + 1.5 * steps + 0.4
    pos["out"] = (out_x, 0.0)
    labels = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"}
    labels.update({i + 2: str(i) for i in range(steps)})

    def node(key, colour):
        x, y = pos[key]
        ax.text(
            x,
            y,
            labels[key],
            ha="center",
            va="center",
            fontsize=10,
            zorder=3,
            bbox=dict(boxstyle="round,pad=0.4", fc=colour, ec="black", lw=0.8),
        )

    for n, (op, src) in enumerate(edges):
        dst = n // 2 + 2
        rad = 0.25 if n % 2 == 0 else -0.25
        arrow = FancyArrowPatch(
            pos[src],
            pos[dst],
            arrowstyle="-|>",
            mutation_scale=12,
            lw=1.4,
            color=_colour(op),
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=14,
            shrinkB=14,
            zorder=2,
        )
        ax.add_patch(arrow)
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        # the midpoint of matplotlib's arc3 Bezier: chord midpoint + rad/2 * (dy, -dx)
        dx, dy = x1 - x0, y1 - y0
        mx += rad * dy * 0.5
        my -= rad * dx * 0.5
        ax.text(
            mx,
            my,
            op,
            fontsize=7,
            ha="center",
            va="center",
            color=_colour(op),
            zorder=4,
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85),
        )
    for c in concat:
        ax.add_patch(
            FancyArrowPatch(
                pos[c],
                pos["out"],
                arrowstyle="-|>",
                mutation_scale=10,
                lw=0.8,
                ls="--",
                color="#444444",
                shrinkA=14,
                shrinkB=16,
                zorder=1,
            )
        )
    for key in (0, 1):
        node(key, "#ffe9a8")
    for i in range(steps):
        node(i + 2, "#cfe3ff")
    node("out", "#c8f0c8")
    ax.set_title(title, fontsize=12)
    ax.set_xlim(-0.8, out_x + 0.8)
    ax.set_ylim(-2.0, 2.0)
    ax.set_aspect("equal")
    ax.axis("off")


def plot_cells(genotype: Genotype, path: str | os.PathLike, title: str = "") -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependency("matplotlib", "drawing cells (--plot)", extra="plot") from None
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"--plot writes .png, .svg or .pdf, not {path.suffix or 'a file without suffix'}")
    steps = max(genotype.steps, len(genotype.reduce) // 2)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.5, 2.2 + 1.6 * steps), 7.5))
    _draw_cell(axes[0], genotype.normal, genotype.normal_concat, "normal cell")
    _draw_cell(
        axes[1], genotype.reduce, genotype.reduce_concat, "reduction cell (stride 2 on edges from c_{k-2}, c_{k-1})"
    )
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    with atomic_outputs(path) as (tmp,):
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), dpi=120)
    plt.close(fig)
    return path
