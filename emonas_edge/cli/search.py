"""``search`` and ``search lut``: thin layers over :func:`run_search` and :func:`build_lut`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from .common import console


def _csv(text: str | None, cast=str) -> tuple | None:
    if text is None:
        return None
    from ..errors import UserError

    try:
        return tuple(cast(t.strip()) for t in text.split(",") if t.strip())
    except ValueError:
        raise UserError(f"could not read the list {text!r}") from None


# register() is long only because it holds this group's commands, each its own nested function (typer reads
# their signatures for the options); it attaches them to the app and does nothing else.
def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Hardware-aware architecture search: time the device (lut), then search.",
        no_args_is_help=False,
        invoke_without_command=True,
        rich_markup_mode="rich",
    )
    app.add_typer(group, name="search")

    @group.callback(invoke_without_command=True)
    def search(
        ctx: typer.Context,
        data: Annotated[
            Path | None,
            typer.Option(
                help="Training data (class folders, FER2013 CSV, RAF-DB) or, with --task micro, the clip frames folder."
            ),
        ] = None,
        lut: Annotated[
            Path | None,
            typer.Option(help="Latency table from `emonas-edge search lut` (sets input size, channels and the space)."),
        ] = None,
        task: Annotated[str, typer.Option(help="macro (face frames) or micro (dynamic images of clips).")] = "macro",
        annotations: Annotated[Path | None, typer.Option(help="Micro: the clip annotation CSV.")] = None,
        target_latency_ms: Annotated[
            float | None, typer.Option(help="Aim the expected predicted latency at this many ms.")
        ] = None,
        latency_weight: Annotated[
            float | None, typer.Option(help="Or: penalty weight on log expected latency (default 0.1).")
        ] = None,
        ops: Annotated[str | None, typer.Option(help="Comma-separated subset of the table's operations.")] = None,
        epochs: Annotated[
            int, typer.Option(help="Search epochs (the first quarter, at most 5, train weights only).")
        ] = 30,
        budget_hours: Annotated[
            float | None, typer.Option(help="Wall-time budget: epochs are cut to fit (measured before starting).")
        ] = None,
        search_size: Annotated[
            str | None,
            typer.Option(
                help="WIDTH,DEPTH: run the supernet at this one size and search the cells there "
                "(sizes then follow the latency objective; a target picks the derived size)."
            ),
        ] = None,
        lr: Annotated[float, typer.Option(help="Supernet weight learning rate (SGD, warm-up + cosine).")] = 0.05,
        method: Annotated[
            str,
            typer.Option(
                help="pc-darts: every op of a slot mixed on a part of the channels; gdas: one sampled op per slot."
            ),
        ] = "pc-darts",
        partial_channels: Annotated[
            int, typer.Option(help="pc-darts: ops see 1/K of an edge's channels (1 = DARTS' full mixture).")
        ] = 4,
        batch: Annotated[int, typer.Option(help="Batch per process.")] = 96,
        seed: Annotated[int, typer.Option()] = 0,
        threads: Annotated[int | None, typer.Option(help="PyTorch threads.")] = None,
        max_steps: Annotated[
            int | None, typer.Option(help="Steps per epoch at most (smoke tests).", hidden=True)
        ] = None,
        out: Annotated[
            Path | None, typer.Option(help="Also write the derived genotype here (always in the run folder).")
        ] = None,
        run_dir: Annotated[
            Path | None, typer.Option("--run-dir", help="Run folder (default: runs/search/searchN).")
        ] = None,
        resume: Annotated[Path | None, typer.Option(help="Continue an interrupted search from its run folder.")] = None,
    ):
        """Search a cell network for DATA under the latency model of LUT; writes best.json."""
        if ctx.invoked_subcommand is not None:
            return
        from ..errors import UserError
        from ..search.engine import SearchSettings
        from ..search.run import SearchJob, run_search

        if lut is None or (data is None):
            raise UserError("search needs --data and --lut (build a table with `emonas-edge search lut`)")
        job = SearchJob(
            data=str(data),
            lut=str(lut),
            task=task,
            annotations=str(annotations) if annotations else None,
            ops=_csv(ops),
            out=str(out) if out else None,
            run_dir=str(run_dir) if run_dir else None,
            resume=str(resume) if resume else None,
        )
        settings = SearchSettings(
            epochs=epochs,
            batch=batch,
            latency_weight=latency_weight,
            target_ms=target_latency_ms,
            seed=seed,
            threads=threads,
            budget_hours=budget_hours,
            max_steps=max_steps,
            lr=lr,
            search_size=_size(search_size),
            method=method,
            partial_channels=partial_channels,
        )
        columns = [
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f}"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
            t = bar.add_task("search", total=1, epoch=0, loss=0.0, acc=0.0)

            def progress(epoch, step, steps, loss, acc):
                bar.update(t, completed=step, total=steps, epoch=epoch + 1, loss=loss, acc=acc)

            best = run_search(job, settings, log=console.print, progress=progress)
        rec = best["meta"]["search"]
        console.print(
            f"[green]derived[/] width {rec['width']} depth {rec['depth']} predicted {rec['predicted_ms']:.3f} ms "
            f"({rec['epochs']} epochs, {rec['wall_seconds'] / 60:.1f} min) -> {Path(rec['run']) / 'best.json'}"
            + (f" and {out}" if out else "")
        )
        if not rec["objective"]["target_met"]:
            console.print(
                f"[yellow]warning:[/] no network of the space is predicted within {rec['objective']['target_ms']} "
                "ms; the cheapest was taken"
            )

    @group.command("lut")
    def lut_cmd(
        out: Annotated[Path, typer.Option(help="Where to write the table (JSON).")],
        input_size: Annotated[int, typer.Option(help="Network input size (pixels).")] = 48,
        in_channels: Annotated[int, typer.Option(help="1 (gray) or 3 (RGB).")] = 1,
        task: Annotated[
            str, typer.Option(help="macro (7 FER classes) or micro (3 MEGC classes): sets the head.")
        ] = "macro",
        backend: Annotated[str, typer.Option(help="Runtime that runs the blocks (ort).")] = "ort",
        provider: Annotated[str, typer.Option(help="ONNX Runtime provider: cpu, cuda, tensorrt.")] = "cpu",
        threads: Annotated[int, typer.Option(help="Intra-op threads, as the deployment will use.")] = 1,
        precision: Annotated[str, typer.Option(help="fp32 or int8 (the shipped QDQ scheme).")] = "fp32",
        ops: Annotated[
            str | None, typer.Option(help="Comma-separated operations (default: every registered one but 'none').")
        ] = None,
        widths: Annotated[
            str | None, typer.Option(help="Comma-separated first-stage widths (default 16,20,24,28,32).")
        ] = None,
        depths: Annotated[
            str | None, typer.Option(help="Comma-separated normal cells per stage (default 1,2,3).")
        ] = None,
        nodes: Annotated[int, typer.Option(help="Nodes per cell.")] = 2,
        iters: Annotated[int, typer.Option(help="Timed runs per block.")] = 400,
        calibration_networks: Annotated[
            int, typer.Option(help="Whole networks timed to fit the table's correction.")
        ] = 8,
    ):
        """Time every block of the search space on this device, as ONNX Runtime runs it."""
        from ..search.lut import LutSettings, build_lut, save_lut
        from ..search.space import DEFAULT_DEPTHS, DEFAULT_OPS, DEFAULT_WIDTHS, SearchSpace, default_classes_for

        classes = default_classes_for(task, None)
        space = SearchSpace(
            in_channels=in_channels,
            input_size=input_size,
            num_classes=len(classes),
            task=task,
            classes=classes,
            ops=_csv(ops) or DEFAULT_OPS,
            widths=_csv(widths, int) or DEFAULT_WIDTHS,
            depths=_csv(depths, int) or DEFAULT_DEPTHS,
            nodes=nodes,
        )
        settings = LutSettings(
            backend=backend,
            provider=provider,
            threads=threads,
            precision=precision,
            iters=iters,
            calibration_networks=calibration_networks,
        )
        settings.check()
        from ..fileio import check_output_paths

        check_output_paths({}, {"--out": out})  # before minutes of timing
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as bar:
            t = bar.add_task("blocks", total=1)
            table = build_lut(space, settings, lambda what, i, n: bar.update(t, description=what, completed=i, total=n))
        save_lut(table, out)
        console.print(
            f"{len(table.blocks)} blocks timed in {table.seconds:.0f} s on {table.device.get('cpu')}; "
            f"fit on {len(table.calibration)} networks: measured = {table.a:.4f} + {table.b:.3f} x sum -> {out}"
        )


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        from ..errors import UserError

        raise UserError(f"--search-size takes WIDTH,DEPTH (e.g. 32,2), got {text!r}")
    return int(parts[0]), int(parts[1])
