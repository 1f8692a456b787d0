"""``export``, ``info`` and ``ops``: thin layers over :func:`export_onnx` and :func:`model_info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..api import load_model, model_info
from ..errors import UserError
from ..export.formats import DEFAULT_OPSET, SIMPLIFIERS
from .common import (
    Classes, InChannels, InitChannels, InputSize, Layers, Name, NumClasses, Select, Task, console, err_console, human, overrides,
)


def _parse_batch(batch: str) -> int | None:
    if batch == "dynamic":
        return None
    try:
        return int(batch)
    except ValueError:
        raise UserError(f"--batch must be 'dynamic' or an integer, got {batch!r}") from None


def info_table(info: dict) -> Table:
    t = Table(title=f"{info['name']}  ({info['kind']}: {info['target']})", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("task / family", f"{info['task'] or '-'} / {info['family'] or '-'}")
    t.add_row("parameters", f"{info['params']:,} ({human(info['params'])})")
    t.add_row("MACs (batch 1)", f"{info['macs']:,} ({human(info['macs'])})")
    spec = info.get("input_spec")
    if spec:
        t.add_row("input", f"{spec['name']} {spec['shape']} {spec['dtype']} {spec['layout']}, {spec['color']}, x/255 then (x-{spec['mean']})/{spec['std']}")
    if info.get("classes"):
        t.add_row("classes", ", ".join(info["classes"]))
    if info.get("op_histogram"):
        t.add_row("operations", ", ".join(f"{op}×{n}" for op, n in info["op_histogram"].items()))
    if info.get("network"):
        t.add_row("network", ", ".join(f"{k}={v}" for k, v in info["network"].items()))
    trained = info.get("trained")
    t.add_row("trained", "yes" if trained else ("[bold yellow]no: random weights, outputs are not predictions[/]" if trained is False else "unknown"))
    if "onnx" in info:
        o = info["onnx"]
        t.add_row("ONNX", f"opset {o['opset']}, {o['nodes']} nodes, {o['bytes']:,} bytes, producer {o['producer']}")
        t.add_row("ONNX inputs", "; ".join(f"{i['name']} {i['shape']} {i['dtype']}" for i in o["inputs"]))
        t.add_row("ONNX node types", ", ".join(f"{k}×{v}" for k, v in list(o["node_types"].items())[:12]))
        if not o["emonas_metadata"]:
            t.add_row("metadata", "[yellow]no emonas-edge metadata: classes and preprocessing unknown[/]")
    if info.get("weights"):
        t.add_row("weights", info["weights"])
    return t


def parity_table(p: dict) -> Table:
    t = Table(title="PyTorch vs ONNX Runtime", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("inputs", f"{p['inputs']}; batches {', '.join(map(str, p['batches']))}")
    t.add_row("max |diff|", f"{p['max_abs_diff']:.2e} (tolerance {p['tolerance']:.1e})")
    t.add_row("mean |diff|", f"{p['mean_abs_diff']:.2e}")
    t.add_row("top-1 agreement", f"{100 * p['top1_agreement']:.1f}% of {p['samples']}")
    t.add_row("result", "[green]pass[/]" if p["passed"] else "[red]FAIL[/]")
    return t


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        genotype: Annotated[str, typer.Option("--genotype", "-g", help="Built-in name, genotype JSON, DARTS Genotype(...) text file, or checkpoint.")],
        weights: Annotated[Optional[Path], typer.Option(help="Checkpoint with trained weights for this genotype.")] = None,
        output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the .onnx and its manifest.")] = Path("export"),
        opset: Annotated[int, typer.Option(help="ONNX opset (>= 18).")] = DEFAULT_OPSET,
        batch: Annotated[str, typer.Option(help="'dynamic' or a fixed batch size.")] = "dynamic",
        simplify: Annotated[str, typer.Option(help=f"{' | '.join(SIMPLIFIERS)} (onnxsim falls back to onnxslim).")] = "onnxsim",
        parity_data: Annotated[Optional[Path], typer.Option(help="Image file or folder of face images for the parity check (default: bundled face).")] = None,
        atol: Annotated[float, typer.Option(help="Absolute tolerance of the parity check (plus 1e-4 x max |logit|).")] = 1e-4,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the manifest here.")] = None,
        select: Select = None,
        name: Name = None, task: Task = None, in_channels: InChannels = None, input_size: InputSize = None,
        init_channels: InitChannels = None, layers: Layers = None, num_classes: NumClasses = None, classes: Classes = None,
    ):
        """Export a genotype or checkpoint to a checked, simplified, parity-verified ONNX file with metadata."""
        from ..export.onnx import check_export_settings, export_onnx  # PyTorch loads only for commands that need it

        ov = overrides(name, task, in_channels, input_size, init_channels, layers, num_classes, classes)
        b = _parse_batch(batch)
        check_export_settings(opset, b, simplify, output, parity_data)
        config, model, wpath = load_model(genotype, weights, select, **ov)
        if not config.trained:
            err_console.print("[bold yellow]warning:[/] no trained weights: exporting random initial weights (metadata says trained=false); outputs are not predictions", soft_wrap=True)
        result = export_onnx(
            config, model, output, opset=opset, batch=b, simplify=simplify, parity_data=parity_data, atol=atol,
            weights=wpath, log=lambda m: console.print(f"[dim]·[/] {m}"),
        )
        for note in result.notes:
            err_console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
        console.print(info_table(model_info(result.path)))
        console.print(parity_table(result.parity.to_dict()))
        console.print(f"[green]wrote[/] {result.path} ({result.manifest['bytes']:,} bytes) and {result.manifest_path.name} "
                      f"in {result.manifest['timings_s']['total']:.1f} s")
        if json_out:
            from ..fileio import write_json_atomic

            write_json_atomic(json_out, result.manifest)

    @app.command()
    def info(
        target: Annotated[str, typer.Argument(help="Built-in name, genotype file, checkpoint or ONNX file.")],
        plot: Annotated[Optional[Path], typer.Option(help="Draw the normal and reduction cells to this .png/.svg/.pdf.")] = None,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
        select: Select = None,
        name: Name = None, task: Task = None, in_channels: InChannels = None, input_size: InputSize = None,
        init_channels: InitChannels = None, layers: Layers = None, num_classes: NumClasses = None, classes: Classes = None,
    ):
        """Parameters, MACs, input spec, classes, operations and trained flag of any model."""
        ov = overrides(name, task, in_channels, input_size, init_channels, layers, num_classes, classes)
        data = model_info(target, select, **ov)
        if plot is not None:
            if not data.get("genotype"):
                raise UserError(f"--plot draws cells, and {target} is not a cell network")
            from ..genotype import genotype_from_dict
            from ..viz import plot_cells

            plot_cells(genotype_from_dict(data["genotype"]), plot, title=data["name"])
        if json_:
            console.print_json(json.dumps(data))
        else:
            console.print(info_table(data))
            if plot is not None:
                console.print(f"[green]wrote[/] {plot}")

    @app.command()
    def ops():
        """List the cell operations a genotype may use."""
        from ..nn.ops import OPS

        t = Table(title="cell operations", title_justify="left")
        t.add_column("name", style="bold")
        t.add_column("what")
        for spec in OPS.values():
            t.add_row(spec.name, spec.description)
        console.print(t)
