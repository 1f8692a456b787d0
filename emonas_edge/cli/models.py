"""``export``, ``info``, ``models`` and ``ops``.

Thin layers over :func:`export_artifact`, :func:`model_info` and :func:`list_models`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..errors import UserError
from ..export.formats import DEFAULT_OPSET, SIMPLIFIERS
from ..resolve import list_models, load_model, model_info
from .common import (
    Classes,
    InChannels,
    InitChannels,
    InputSize,
    Layers,
    Name,
    NumClasses,
    Select,
    Task,
    console,
    err_console,
    human,
    overrides,
)

if TYPE_CHECKING:
    from ..export.artifact import ExportProgress
    from ..export.onnx import ExportResult
    from ..export.precision import PrecisionArtifact


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
        t.add_row(
            "input",
            f"{spec['name']} {spec['shape']} {spec['dtype']} {spec['layout']}, {spec['color']}, "
            f"x/255 then (x-{spec['mean']})/{spec['std']}",
        )
    if info.get("classes"):
        t.add_row("classes", ", ".join(info["classes"]))
    if info.get("op_histogram"):
        t.add_row("operations", ", ".join(f"{op}×{n}" for op, n in info["op_histogram"].items()))
    if info.get("network"):
        t.add_row("network", ", ".join(f"{k}={v}" for k, v in info["network"].items()))
    if info.get("precision"):
        t.add_row("precision", info["precision"])
    trained = info.get("trained")
    t.add_row(
        "trained",
        "yes"
        if trained
        else ("[bold yellow]no: random weights, outputs are not predictions[/]" if trained is False else "unknown"),
    )
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


def precision_table(table: dict) -> Table:
    t = Table(title="precision")
    cols = ["precision", "bytes", "top1", "drop_points", "agreement_with_fp32", "max_abs_diff", "p50_ms_1thread"]
    present = [c for c in cols if c == "precision" or any(c in v for v in table.values())]
    for c in present:
        t.add_column(c.replace("_", " "), justify="right")
    for k, v in table.items():
        row = [k]
        for c in present[1:]:
            x = v.get(c)
            row.append("" if x is None else f"{x:,}" if isinstance(x, int) else f"{x:.4g}")
        t.add_row(*row)
    return t


def _printed_progress() -> ExportProgress:
    """An :class:`ExportProgress` that prints each artifact's tables as :func:`export_artifact` writes it.

    Defined on call: ``export.artifact`` loads PyTorch, which loads only for commands that need it.
    """
    from ..export.artifact import ExportProgress

    class PrintedProgress(ExportProgress):
        def onnx_written(self, result: ExportResult) -> None:
            for note in result.notes:
                err_console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
            console.print(info_table(model_info(result.path)))
            console.print(parity_table(result.parity.to_dict()))
            console.print(
                f"[green]wrote[/] {result.path} ({result.manifest['bytes']:,} bytes) and {result.manifest_path.name} "
                f"in {result.manifest['timings_s']['total']:.1f} s"
            )

        def precision_written(self, derived: PrecisionArtifact) -> None:
            console.print(precision_table(derived.table))
            console.print(
                f"[green]wrote[/] {derived.path} ({derived.path.stat().st_size:,} bytes) "
                f"and {derived.manifest_path.name}"
            )

        def engine_written(self, path: Path, sidecar: dict) -> None:
            console.print(f"[green]wrote[/] {path} and its sidecar; to rebuild elsewhere: {escape(sidecar['trtexec'])}")

    return PrintedProgress()


# register() is long only because it holds this group's commands, each its own nested function (typer reads
# their signatures for the options); it attaches them to the app and does nothing else.
def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        genotype: Annotated[
            str,
            typer.Option(
                "--genotype", "-g", help="Built-in name, genotype JSON, DARTS Genotype(...) text file, or checkpoint."
            ),
        ],
        weights: Annotated[Path | None, typer.Option(help="Checkpoint with trained weights for this genotype.")] = None,
        output: Annotated[
            Path | None,
            typer.Option(
                "--output",
                "-o",
                help="Folder for the .onnx and its manifest. Default: a new numbered runs/export, runs/export2, ...",
            ),
        ] = None,
        opset: Annotated[int, typer.Option(help="ONNX opset (>= 18).")] = DEFAULT_OPSET,
        batch: Annotated[str, typer.Option(help="'dynamic' or a fixed batch size.")] = "dynamic",
        simplify: Annotated[
            str, typer.Option(help=f"{' | '.join(SIMPLIFIERS)} (onnxsim falls back to onnxslim).")
        ] = "onnxsim",
        exporter: Annotated[
            str, typer.Option(help="auto (TorchScript, ~10x faster; dynamo if it fails) | torchscript | dynamo.")
        ] = "auto",
        parity_data: Annotated[
            Path | None,
            typer.Option(help="Image file or folder of face images for the parity check (default: bundled face)."),
        ] = None,
        atol: Annotated[
            float, typer.Option(help="Absolute tolerance of the parity check (plus 1e-4 x max |logit|).")
        ] = 1e-4,
        json_out: Annotated[Path | None, typer.Option("--json", help="Also write the manifest here.")] = None,
        fmt: Annotated[
            str,
            typer.Option(
                "--format",
                help="onnx | engine (TensorRT, built from the ONNX of the chosen precision; needs tensorrt and a GPU).",
            ),
        ] = "onnx",
        workspace_mb: Annotated[
            int, typer.Option(help="TensorRT builder workspace limit (MB).", rich_help_panel="TensorRT")
        ] = 256,
        max_batch: Annotated[
            int,
            typer.Option(
                help="TensorRT optimisation profile: largest batch (min 1, opt 1).", rich_help_panel="TensorRT"
            ),
        ] = 8,
        timing_cache: Annotated[
            Path | None, typer.Option(help="TensorRT timing cache to reuse and update.", rich_help_panel="TensorRT")
        ] = None,
        precision: Annotated[
            str,
            typer.Option(
                help="fp32 | fp16 | int8 | auto (fastest here within the accuracy budget).", rich_help_panel="Precision"
            ),
        ] = "fp32",
        calib: Annotated[
            Path | None,
            typer.Option(
                help="INT8 calibration faces: labelled dataset, folder of face crops, "
                "or frames/videos (faces detected and aligned).",
                rich_help_panel="Precision",
            ),
        ] = None,
        calib_samples: Annotated[
            int, typer.Option(help="Calibration samples (picked with a fixed seed).", rich_help_panel="Precision")
        ] = 512,
        calib_method: Annotated[
            str, typer.Option(help="minmax | entropy | percentile.", rich_help_panel="Precision")
        ] = "minmax",
        eval_data: Annotated[
            Path | None,
            typer.Option(
                "--eval",
                help="Labelled data to score fp32 and the new precision on (the accuracy gate).",
                rich_help_panel="Precision",
            ),
        ] = None,
        max_accuracy_drop: Annotated[
            float,
            typer.Option(
                help="Largest top-1 drop (points) the new precision may cost; more exits 1.",
                rich_help_panel="Precision",
            ),
        ] = 1.0,
        select: Select = None,
        name: Name = None,
        task: Task = None,
        in_channels: InChannels = None,
        input_size: InputSize = None,
        init_channels: InitChannels = None,
        layers: Layers = None,
        num_classes: NumClasses = None,
        classes: Classes = None,
    ):
        """Export a genotype or checkpoint to a checked, simplified, parity-verified ONNX file with metadata."""
        # PyTorch loads only for commands that need it
        from dataclasses import replace

        from ..export.artifact import ArtifactSettings, EngineSettings, export_artifact
        from ..profile.models import precision_timer
        from ..rundirs import new_run_dir, release_if_empty, runs_root

        ov = overrides(name, task, in_channels, input_size, init_channels, layers, num_classes, classes)
        settings = ArtifactSettings(
            output=output if output is not None else runs_root() / "export",  # checked now, claimed after loading
            format=fmt,
            opset=opset,
            batch=_parse_batch(batch),
            simplify=simplify,
            exporter=exporter,
            parity_data=parity_data,
            atol=atol,
            precision=precision,
            calib=calib,
            calib_samples=calib_samples,
            calib_method=calib_method,
            eval_data=eval_data,
            max_accuracy_drop=max_accuracy_drop,
            engine=EngineSettings(workspace_mb=workspace_mb, max_batch=max_batch, timing_cache=timing_cache),
        )
        settings.check()  # every flag before the model loads
        from ..fileio import check_output_paths

        check_output_paths({"--genotype": genotype, "--weights": weights}, {"--json": json_out})
        config, model, wpath = load_model(genotype, weights, select, **ov)
        if not config.trained:
            err_console.print(
                "[bold yellow]warning:[/] no trained weights: "
                "exporting random initial weights (metadata says trained=false); outputs are not predictions",
                soft_wrap=True,
            )
        if output is None:
            settings = replace(settings, output=new_run_dir("export"))
            console.print(f"export folder: {settings.output}", highlight=False, markup=False)
        try:
            result = export_artifact(
                config,
                model,
                settings,
                weights=wpath,
                timer=precision_timer(config),
                log=lambda m: console.print(f"[dim]·[/] {escape(m)}"),
                progress=_printed_progress(),
            )
        finally:
            if output is None:
                release_if_empty(Path(settings.output))  # a failed export leaves no empty folder behind
        if json_out:
            from ..fileio import write_json_atomic

            write_json_atomic(json_out, result.manifest)

    @app.command()
    def info(
        target: Annotated[str, typer.Argument(help="Built-in name, genotype file, checkpoint or ONNX file.")],
        plot: Annotated[
            Path | None, typer.Option(help="Draw the normal and reduction cells to this .png/.svg/.pdf.")
        ] = None,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
        select: Select = None,
        name: Name = None,
        task: Task = None,
        in_channels: InChannels = None,
        input_size: InputSize = None,
        init_channels: InitChannels = None,
        layers: Layers = None,
        num_classes: NumClasses = None,
        classes: Classes = None,
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

    @app.command("models")
    def models_(json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False):
        """List the built-in model names: task, input, size, whether weights ship, PublicTest accuracy."""
        rows = list_models()
        if json_:
            console.print_json(json.dumps(rows))
            return
        t = Table(
            title="built-in models (top-1: FER2013 PublicTest, from each model's committed report)",
            title_justify="left",
            box=box.SIMPLE_HEAD,  # no vertical rules: the table fits 80 columns
            pad_edge=False,
            collapse_padding=True,
        )
        t.add_column("name", style="bold", no_wrap=True, min_width=max(len(r["name"]) for r in rows))
        columns = (("task/family", 10), ("input", 10), ("params", 7), ("flip", 4), ("trained", 7), ("top-1", 6))
        for col, width in columns:
            t.add_column(col, min_width=width)
        for r in rows:
            acc = f"{100 * r['publictest_top1']:.2f}%" if r["publictest_top1"] is not None else "–"
            t.add_row(
                r["name"],
                f"{r['task']}/{r['family']}",
                r["input"].split("x", 1)[1],
                f"{r['params']:,}" if r["params"] is not None else "–",  # untrained, without PyTorch
                "yes" if r["test_time_flip"] else "no",
                "yes" if r["trained"] else "no",
                acc,
            )
        console.print(t)
        if any(not r["trained"] for r in rows):
            console.print("untrained names run random weights: never read their output as a prediction")
        console.print(
            "use a name wherever a model is asked for; its card (data, recipe, per-class F1, speed) is models/<name>.md"
        )

    @app.command()
    def ops():
        """List the cell operations a genotype may use."""
        from ..genotype import OP_DESCRIPTIONS  # the table nn/ops.py registers from (no PyTorch needed here)

        t = Table(title="cell operations", title_justify="left")
        t.add_column("name", style="bold")
        t.add_column("what")
        for name, description in OP_DESCRIPTIONS.items():
            t.add_row(name, description)
        console.print(t)
