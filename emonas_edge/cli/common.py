"""What every command shares: the console, option types, error-to-exit-code mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

# Network overrides, accepted by every command that builds a model from a genotype.
Select = Annotated[
    str | None, typer.Option(help="Which Genotype(...) of a DARTS text file holding several (variable name).")
]
Name = Annotated[str | None, typer.Option(help="Model name (used for file names).", rich_help_panel="Network settings")]
Task = Annotated[str | None, typer.Option(help="macro | micro", rich_help_panel="Network settings")]
InChannels = Annotated[
    int | None, typer.Option(help="1 (gray) or 3 (RGB). Default 1.", rich_help_panel="Network settings")
]
InputSize = Annotated[
    int | None, typer.Option(help="Square input size. Default 48.", rich_help_panel="Network settings")
]
InitChannels = Annotated[
    int | None, typer.Option(help="Cell network width. Default 16.", rich_help_panel="Network settings")
]
Layers = Annotated[int | None, typer.Option(help="Number of cells. Default 8.", rich_help_panel="Network settings")]
NumClasses = Annotated[
    int | None, typer.Option(help="Default: 7 (macro) or 3 (micro).", rich_help_panel="Network settings")
]
Classes = Annotated[str | None, typer.Option(help="Comma-separated class names.", rich_help_panel="Network settings")]
OptPath = Path | None

# An ONNX file made elsewhere (no emonas-edge metadata): what its graph cannot say.
P_FOREIGN = "ONNX files made elsewhere"
ForeignClasses = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Its class names in output order, comma-separated (input size and gray/RGB come from the graph).",
        rich_help_panel=P_FOREIGN,
    ),
]
InputMean = Annotated[
    str | None,
    typer.Option(help="Per-channel mean after x/255, comma-separated (default 0).", rich_help_panel=P_FOREIGN),
]
InputStd = Annotated[
    str | None,
    typer.Option(help="Per-channel std after x/255, comma-separated (default 1).", rich_help_panel=P_FOREIGN),
]


def overrides(
    name=None,
    task=None,
    in_channels=None,
    input_size=None,
    init_channels=None,
    layers=None,
    num_classes=None,
    classes=None,
) -> dict:
    return {
        "name": name,
        "task": task,
        "in_channels": in_channels,
        "input_size": input_size,
        "init_channels": init_channels,
        "layers": layers,
        "num_classes": num_classes,
        "classes": [c.strip() for c in classes.split(",")] if classes else None,
    }


def human(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)
