"""``profile`` and ``profile-pipeline``: thin layers over :mod:`emonas_edge.profile`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import UserError
from ..threads import ThreadPlan
from .common import console

P_OUT = "Reports"


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise UserError(f"{what} must be integers >= 1, got {text!r}")
    return vals


def runs_table(report: dict) -> Table:
    from ..profile.report import COLUMNS, _fmt, rows

    rs = rows(report)
    metrics = [c for c in COLUMNS if any(r.get(c) is not None for r in rs)]
    t = Table(title="profile")  # one column per run: fits a terminal however many metrics there are
    t.add_column("")
    for i in range(len(rs)):
        t.add_column(f"run {i + 1}", justify="right")
    for m in metrics:
        t.add_row(m.replace("_", " "), *(Path(str(r[m])).name if m == "target" else _fmt(r.get(m)) for r in rs))
    return t


# register() is long only because it holds this group's commands, each its own nested function (typer reads
# their signatures for the options); it attaches them to the app and does nothing else.
def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(
        for_: Annotated[
            str, typer.Option("--for", help="The workflow to judge readiness for: run | export | train | tensorrt.")
        ] = "run",
        camera: Annotated[int | None, typer.Option(help="Also open camera N and read a frame.")] = None,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON (for bug reports) instead of a table.")] = False,
    ):
        """What this machine has for each workflow, and one line of advice per problem (exit 1: not ready)."""
        import json

        from ..profile.doctor import WORKFLOWS, diagnose

        if for_ not in WORKFLOWS:
            raise UserError(f"--for must be one of {', '.join(WORKFLOWS)}, got {for_!r}")
        d = diagnose(camera)
        if json_:
            console.print_json(json.dumps({**d.to_dict(), "for": for_}))
        else:
            t = Table(show_header=True, box=None, pad_edge=False)
            for col in ("check", "", "detail"):
                t.add_column(col)
            for c in d.checks:
                t.add_row(
                    c.name, "ok" if c.ok else ("[red]missing[/]" if c.needed_for else "[yellow]note[/]"), c.detail
                )
            console.print(t)
            for c in d.checks:
                if not c.ok and c.advice:
                    console.print(f"- {c.name}: {c.advice}", highlight=False, markup=False)
            ready = d.to_dict()["ready"]
            console.print("ready for: " + ", ".join(f"{w} {'yes' if ok else 'no'}" for w, ok in ready.items()))
        missing = d.missing_for(for_)
        if missing:
            raise typer.Exit(1)

    @app.command(
        short_help="Parameters, MACs, cold start, latency percentiles, throughput and memory of models.",
        help="Parameters, MACs, cold start, latency percentiles, throughput and memory "
        "per backend, precision, batch, threads. Without output options the report (JSON and Markdown) goes to "
        "a new numbered folder: runs/profile, runs/profile2, ...",
    )
    def profile(
        targets: Annotated[
            list[str], typer.Argument(help="Built-in names, genotypes, checkpoints, ONNX files or TensorRT engines.")
        ],
        backend: Annotated[str, typer.Option(help="Comma-separated: ort, torch, trt.")] = "ort",
        precision: Annotated[
            str, typer.Option(help="Comma-separated: fp32, fp16, int8 (ort; int8 needs --calib).")
        ] = "fp32",
        batch: Annotated[str, typer.Option(help="Comma-separated batch sizes, e.g. 1,8.")] = "1",
        threads: Annotated[str, typer.Option(help="Comma-separated thread counts, e.g. 1,2.")] = "1",
        warmup: Annotated[int, typer.Option(help="Untimed calls before timing.")] = 100,
        iters: Annotated[int, typer.Option(help="Timed calls (ignored with --duration).")] = 1000,
        duration: Annotated[float | None, typer.Option(help="Time for this many seconds instead of --iters.")] = None,
        calib: Annotated[Path | None, typer.Option(help="Calibration faces for --precision int8.")] = None,
        json_out: Annotated[
            Path | None,
            typer.Option(
                "--json",
                help="Report JSON (top level: params, macs, p50_ms, p90_ms, p99_ms, throughput; runs).",
                rich_help_panel=P_OUT,
            ),
        ] = None,
        markdown: Annotated[Path | None, typer.Option(help="Markdown table.", rich_help_panel=P_OUT)] = None,
        csv: Annotated[Path | None, typer.Option(help="CSV, one row per run.", rich_help_panel=P_OUT)] = None,
        plot: Annotated[
            Path | None,
            typer.Option(
                help="Latency CDF (and accuracy vs latency for several targets) .png/.svg/.pdf.", rich_help_panel=P_OUT
            ),
        ] = None,
    ):
        from ..profile.models import BACKENDS
        from ..profile.models import profile as run_profile
        from ..profile.report import write_reports

        backends = tuple(b.strip() for b in backend.split(",") if b.strip())
        for b in backends:
            if b not in BACKENDS:
                raise UserError(f"unknown backend {b!r} (choose from: {', '.join(BACKENDS)})")
        precisions = tuple(p.strip() for p in precision.split(",") if p.strip())
        for p in precisions:
            if p not in ("fp32", "fp16", "int8"):
                raise UserError(f"unknown precision {p!r} (choose from: fp32, fp16, int8)")
        if warmup < 0 or iters < 1 or (duration is not None and duration <= 0):
            raise UserError("--warmup must be >= 0, --iters >= 1 and --duration > 0")
        from ..fileio import check_output_paths

        check_output_paths(
            {f"TARGET {t}": t for t in targets},
            {"--json": json_out, "--markdown": markdown, "--csv": csv, "--plot": plot},
        )
        report, latencies = run_profile(
            targets,
            backends=backends,
            precisions=precisions,
            batches=_ints(batch, "--batch"),
            threads=_ints(threads, "--threads"),
            warmup=warmup,
            iters=iters,
            duration=duration,
            calib=str(calib) if calib else None,
        )
        console.print(runs_table(report))
        for sk in report.get("skipped", []):
            console.print(
                f"skipped {sk['target']} {sk['backend']} {sk['precision']}: {sk['reason']}",
                highlight=False,
                markup=False,
            )
        env = report["environment"]
        console.print(
            f"[dim]{env.get('cpu')}, {env.get('cpu_count')} cores; onnxruntime {env['packages'].get('onnxruntime')}; "
            f"{'Jetson ' + str(env['jetson']) if env.get('jetson') else 'not a Jetson'}[/]",
            highlight=False,
        )
        if json_out is None and markdown is None and csv is None and plot is None:  # kept in a numbered run folder
            from ..rundirs import new_run_dir

            folder = new_run_dir("profile")
            json_out, markdown = folder / "profile.json", folder / "profile.md"
        for written in write_reports(report, latencies, json_out, markdown, csv, plot):
            console.print(f"wrote {written}", highlight=False, markup=False)

    @app.command("profile-pipeline")
    def profile_pipeline_cmd(
        source: Annotated[Path, typer.Option("--source", help="Video clip.")],
        macro: Annotated[str, typer.Option(help="Macro model.")] = "emonas-macro",
        micro: Annotated[str, typer.Option(help="Micro model (untrained heads run for timing only).")] = "emonas-micro",
        frames: Annotated[
            int | None, typer.Option(help="Frames to process (the clip loops; default 5 passes).")
        ] = None,
        detect_every: Annotated[
            str, typer.Option(help="Detect every k-th frame (optical flow in between) or auto, as for run.")
        ] = "auto",
        macro_every: Annotated[
            str, typer.Option(help="Classify each face every k-th frame or auto (crop change), as for run.")
        ] = "auto",
        detector: Annotated[str, typer.Option(help="auto, mediapipe, mediapipe-full, haar (as for run).")] = "auto",
        render: Annotated[bool, typer.Option(help="Include drawing the overlay.")] = False,
        threads: Annotated[
            int | None, typer.Option(help="Threads per library (default: cores / 2 pipeline stages, as run).")
        ] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="Report JSON.", rich_help_panel=P_OUT)] = None,
        markdown: Annotated[Path | None, typer.Option(help="Markdown stage table.", rich_help_panel=P_OUT)] = None,
        csv: Annotated[Path | None, typer.Option(help="CSV stage table.", rich_help_panel=P_OUT)] = None,
    ):
        """Per-stage latency percentiles (decode, detect, align, track, macro, micro, render) and end-to-end FPS."""
        from ..fileio import atomic_outputs, check_output_paths, write_json_atomic
        from ..pipeline.loop import parse_detect_every, parse_macro_every
        from ..profile.pipeline import profile_pipeline

        check_output_paths({"--source": source}, {"--json": json_out, "--markdown": markdown, "--csv": csv})
        r = profile_pipeline(
            source,
            macro=macro,
            micro=micro,
            frames=frames,
            detect_every=parse_detect_every(detect_every),
            macro_every=parse_macro_every(macro_every),
            render=render,
            detector=detector,
            threads=threads,
        )
        t = Table(
            title=f"pipeline on {source.name}: {r['fps']:.1f} frames/s; decode alone {r['decode_fps']:.0f} "
            f"(ratio {r['ratio']:.3f}), decode + detect alone {r['detect_fps']:.0f} (ratio {r['detect_ratio']:.3f})"
        )
        for c in ("stage", "calls", "p50 ms", "alone p50", "p90 ms", "p99 ms", "max ms", "share"):
            t.add_column(c, justify="left" if c == "stage" else "right")
        lines = [
            "| stage | calls | p50 ms | alone p50 ms | p90 ms | p99 ms | max ms | share |",
            "|---|---|---|---|---|---|---|---|",
        ]
        csv_lines = ["stage,calls,p50_ms,alone_p50_ms,p90_ms,p99_ms,max_ms,share"]
        for k, v in r["stages"].items():
            alone = v.get("alone_p50_ms")
            vals = [
                str(v["calls"]),
                f"{v['p50_ms']:.3f}",
                "" if alone is None else f"{alone:.3f}",
                f"{v['p90_ms']:.3f}",
                f"{v['p99_ms']:.3f}",
                f"{v['max_ms']:.3f}",
                f"{100 * v['share']:.1f}%",
            ]
            t.add_row(k, *vals)
            lines.append(f"| {k} | " + " | ".join(vals) + " |")
            csv_lines.append(
                ",".join(
                    [
                        k,
                        str(v["calls"]),
                        str(v["p50_ms"]),
                        "" if alone is None else str(alone),
                        str(v["p90_ms"]),
                        str(v["p99_ms"]),
                        str(v["max_ms"]),
                        str(v["share"]),
                    ]
                )
            )
        console.print(t)
        console.print(
            f"frames {r['frames']}, faces in {r['frames_with_faces']}, tracks {r['tracks']}; "
            f"detector {r['settings']['detector']}; RSS {r['rss_mb']['after']:.0f} MB",
            highlight=False,
        )
        console.print(
            "share: each stage's time over the run's wall time; decode + detect run beside the other stages "
            "(two threads), so the shares add up past 100%. alone p50: the stage timed on its own over the clip.",
            highlight=False,
        )
        if r["settings"]["threads"]:
            console.print(f"threads: {ThreadPlan(**r['settings']['threads']).describe()}", highlight=False)
        if json_out:
            write_json_atomic(json_out, r)
        for path, text in ((markdown, "\n".join(lines) + "\n"), (csv, "\n".join(csv_lines) + "\n")):
            if path:
                with atomic_outputs(path) as (tmp,):
                    tmp.write_text(text, encoding="utf-8")
