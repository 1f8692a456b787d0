"""``train`` and ``evaluate``: thin layers over :func:`train` and :func:`evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import UserError
from .common import ForeignClasses, InputMean, InputStd, console, err_console


def report_table(r: dict) -> Table:
    t = Table(title=f"{r['model']} on {r['data']} ({r['samples']:,} samples, {r['backend']})", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        t.add_column(col, justify="right" if col != "class" else "left")
    for c, m in r["per_class"].items():
        t.add_row(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    t.add_section()
    t.add_row("accuracy", "", "", f"[bold]{r['accuracy']:.4f}[/]", str(r["samples"]))
    t.add_row("UAR / UF1", "", f"{r['uar']:.4f}", f"{r['uf1']:.4f}", "")
    return t


def _load_images(data: Path, val: Path | None, config, limit_per_class: int | None):
    """Training and validation images (class folders, FER2013 CSV or RAF-DB), said how many."""
    from ..data.datasets import load_dataset

    with console.status("loading data (decoded once, then cached)"):
        train_ds = load_dataset(data, config, "Training", limit_per_class)
        val_ds = load_dataset(val, config, "PublicTest", limit_per_class) if val else None
    skipped = f"; skipped {train_ds.skipped} unreadable" if train_ds.skipped else ""
    console.print(f"train: {len(train_ds):,} images {train_ds.counts()}{skipped}")
    if val_ds is not None:
        console.print(f"val: {len(val_ds):,} images")
    return train_ds, val_ds


def _train_with_progress_bar(config, net, train_ds, val_ds, out: Path, settings, resume: bool) -> dict:
    """The trainer's run, with a progress bar for the epoch in a terminal."""
    from ..train.trainer import train as run_train

    columns = [
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} {task.fields[ips]:.0f} img/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("train", total=1, epoch=0, loss=0.0, acc=0.0, ips=0.0)

        def progress(epoch, step, steps, loss, acc, ips):
            bar.update(task, completed=step, total=steps, epoch=epoch + 1, loss=loss, acc=acc, ips=ips)

        return run_train(
            config, net, train_ds, val_ds, out, settings, resume=resume, log=console.print, progress=progress
        )


def _run_folder(out: Path | None, resume: bool) -> tuple[Path, bool]:
    """``(folder, claimed)``: ``--out`` as given, else the latest numbered run (``--resume``) or a new one."""
    from ..rundirs import latest_run_dir, new_run_dir, runs_root

    if out is not None:
        return out, False
    if resume:
        latest = latest_run_dir("train")
        if latest is None:
            raise UserError(f"--resume without --out: no train run folder under {runs_root()} to continue; give --out")
        console.print(f"resuming {latest}", highlight=False, markup=False)
        return latest, False
    folder = new_run_dir("train")
    console.print(f"run folder: {folder}", highlight=False, markup=False)
    return folder, True


# register() is long only because it holds this group's commands, each its own nested function (typer reads
# their signatures for the options); it attaches them to the app and does nothing else.
def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        model: Annotated[
            str, typer.Option("--model", "-m", help="Built-in name, genotype file, or checkpoint to fine-tune.")
        ],
        data: Annotated[
            Path,
            typer.Option(
                help="Training data: class folders (train/<class>/*.jpg), a FER2013 CSV[:Usage], "
                "a RAF-DB basic folder[:train|test], or a micro clip frames folder (with --annotations)."
            ),
        ],
        val: Annotated[Path | None, typer.Option(help="Validation data (same forms as --data).")] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                help="Run folder: last.pt, best.pt, history.jsonl, summary.json. Default: a new numbered "
                "runs/train, runs/train2, ... (with --resume: the latest of them)."
            ),
        ] = None,
        epochs: Annotated[int, typer.Option()] = 30,
        batch: Annotated[int, typer.Option()] = 128,
        optimizer: Annotated[str, typer.Option(help="sgd (Nesterov) | adamw")] = "sgd",
        lr: Annotated[
            float | None,
            typer.Option(
                help="Peak learning rate. Default 0.1 x batch/128 for sgd, 2e-3 for adamw; 3% of that when "
                "fine-tuning trained weights (0.1 destroyed them in one epoch: measured)."
            ),
        ] = None,
        weight_decay: Annotated[
            float | None, typer.Option(help="Default 5e-4 (sgd) / 0.05 (adamw); never on norms or biases.")
        ] = None,
        warmup_epochs: Annotated[float, typer.Option()] = 1.0,
        label_smoothing: Annotated[float, typer.Option()] = 0.1,
        balanced: Annotated[bool, typer.Option(help="Class-balanced sampling.")] = False,
        no_augment: Annotated[bool, typer.Option("--no-augment", help="Turn augmentation off.")] = False,
        ema: Annotated[float, typer.Option(help="EMA decay of the weights (0 = off, e.g. 0.999).")] = 0.0,
        teacher: Annotated[
            list[str] | None,
            typer.Option(
                help="Checkpoint or trained built-in model to distil from; "
                "repeat for an ensemble (probabilities averaged).",
                rich_help_panel="Distillation",
            ),
        ] = None,
        distill: Annotated[
            str,
            typer.Option(
                help="offline: teacher targets computed once on clean images and mirrors (cheap on CPUs) "
                "| online: on every augmented batch",
                rich_help_panel="Distillation",
            ),
        ] = "offline",
        distill_alpha: Annotated[
            float,
            typer.Option(
                help="Weight of the distillation loss (the rest: cross-entropy on labels).",
                rich_help_panel="Distillation",
            ),
        ] = 0.5,
        distill_temperature: Annotated[float, typer.Option(rich_help_panel="Distillation")] = 4.0,
        mix: Annotated[
            str,
            typer.Option(
                help="none | mixup | cutmix: blend each mixed batch with a shuffled copy of itself; labels, "
                "auxiliary loss and teacher targets are blended alike.",
                rich_help_panel="Regularisation",
            ),
        ] = "none",
        mix_alpha: Annotated[
            float,
            typer.Option(help="The blend weight is drawn from Beta(alpha, alpha).", rich_help_panel="Regularisation"),
        ] = 1.0,
        mix_p: Annotated[
            float, typer.Option(help="Fraction of batches mixed.", rich_help_panel="Regularisation")
        ] = 0.5,
        seed: Annotated[int, typer.Option()] = 0,
        threads: Annotated[int | None, typer.Option(help="PyTorch CPU threads.")] = None,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
        amp: Annotated[bool, typer.Option(help="bfloat16 autocast.")] = False,
        max_steps: Annotated[int | None, typer.Option(help="At most this many steps per epoch (smoke tests).")] = None,
        limit_per_class: Annotated[
            int | None, typer.Option(help="Use at most N images per class (quick runs).")
        ] = None,
        resume: Annotated[bool, typer.Option(help="Continue the run in --out from last.pt.")] = False,
        keep_epochs: Annotated[
            bool,
            typer.Option(
                help="Also save each epoch's evaluated (EMA) weights as OUT/epochs/e<N>.pt, "
                "to re-score or average epochs later (benchmarks/flip_by_epoch.py)."
            ),
        ] = False,
        scratch: Annotated[
            bool,
            typer.Option(
                help="Start from random weights even when --model is a trained built-in name or checkpoint "
                "(only its architecture and config are used)."
            ),
        ] = False,
        annotations: Annotated[
            Path | None,
            typer.Option(
                help="Micro-expression annotation CSV (then --data is the frames folder).",
                rich_help_panel="Micro-expressions",
            ),
        ] = None,
        convention: Annotated[
            str, typer.Option(help="generic | casme2 | samm | smic", rich_help_panel="Micro-expressions")
        ] = "generic",
        window: Annotated[
            str, typer.Option(help="onset-offset | apex", rich_help_panel="Micro-expressions")
        ] = "onset-offset",
        window_length: Annotated[
            int | None,
            typer.Option(help="Frames around the apex (apex windows).", rich_help_panel="Micro-expressions"),
        ] = None,
        protocol: Annotated[
            str, typer.Option(help="holdout | loso (leave one subject out)", rich_help_panel="Micro-expressions")
        ] = "holdout",
    ):
        """Train a genotype (or fine-tune a checkpoint) on real data, checkpointing every epoch."""
        import os

        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 talks
            console.quiet = True
        from ..fileio import check_writable_location
        from ..rundirs import release_if_empty
        from ..train.resume import fine_tuning, model_to_train
        from ..train.settings import TrainSettings

        if out is not None:
            check_writable_location(out, "--out")  # before the data loads
        out, claimed = _run_folder(out, resume)
        try:
            config, net, note = model_to_train(model, out, resume, scratch)
            if note:
                console.print(note)
            settings = TrainSettings(
                fine_tune=fine_tuning(config, resume),
                epochs=epochs,
                batch=batch,
                optimizer=optimizer,
                lr=lr,
                weight_decay=weight_decay,
                warmup_epochs=warmup_epochs,
                label_smoothing=label_smoothing,
                balanced=balanced,
                augment=not no_augment,
                ema=ema,
                teachers=tuple(teacher or ()),
                distill=distill,
                distill_alpha=distill_alpha,
                distill_temperature=distill_temperature,
                mix=mix,
                mix_alpha=mix_alpha,
                mix_p=mix_p,
                seed=seed,
                threads=threads,
                device=device,
                amp=amp,
                max_steps=max_steps,
                keep_epochs=keep_epochs,
            )
            if annotations is not None:
                from ..data.micro import load_micro_dataset

                ds, subjects = load_micro_dataset(data, annotations, config, convention, window, window_length)
                console.print(
                    f"{len(ds)} clips as dynamic images, {len(set(subjects))} subjects, classes {ds.counts()}"
                )
                if protocol == "loso":
                    from ..train.loso import run_loso

                    overall = run_loso(config, ds, subjects, out, settings, log=console.print)["overall"]
                    console.print(
                        f"LOSO overall: UF1 {overall['uf1']:.4f} UAR {overall['uar']:.4f} accuracy "
                        f"{overall['accuracy']:.4f}"
                    )
                    return
                train_ds, val_ds = ds, None
            else:
                if protocol != "holdout":
                    raise UserError("--protocol loso needs a micro-expression dataset (--annotations)")
                train_ds, val_ds = _load_images(data, val, config, limit_per_class)
            out.mkdir(parents=True, exist_ok=True)
            summary = _train_with_progress_bar(config, net, train_ds, val_ds, out, settings, resume)
            best = summary["best"]
            if best.get("epoch") and best.get("accuracy", -1) >= 0:
                console.print(
                    f"[green]best[/] epoch {best['epoch']}: val accuracy {best['accuracy']:.4f} -> {out / 'best.pt'}"
                )
            console.print(f"last checkpoint: {out / 'last.pt'}")
        finally:
            if claimed:
                release_if_empty(out)  # a run that failed before its first checkpoint leaves no empty folder

    @app.command()
    def evaluate(
        model: Annotated[str, typer.Option("--model", "-m", help="Built-in name, checkpoint or ONNX file.")],
        data: Annotated[
            Path,
            typer.Option(help="Labelled data: class folders, FER2013 CSV[:Usage] or RAF-DB basic folder[:train|test]."),
        ],
        json_out: Annotated[Path | None, typer.Option("--json", help="Write the report JSON here.")] = None,
        report: Annotated[Path | None, typer.Option(help="Folder for report.json and confusion_matrix.png.")] = None,
        provider: Annotated[str | None, typer.Option(help="ONNX Runtime provider: cpu | cuda | tensorrt.")] = None,
        threads: Annotated[int | None, typer.Option()] = None,
        batch: Annotated[int, typer.Option()] = 256,
        limit_per_class: Annotated[int | None, typer.Option(help="Score at most N images per class.")] = None,
        classes: ForeignClasses = None,
        input_mean: InputMean = None,
        input_std: InputStd = None,
    ):
        """Accuracy, per-class precision/recall/F1, UF1, UAR and confusion matrix of any artifact."""
        from ..runtime.foreign import ForeignSpec

        foreign = ForeignSpec.parse(classes, input_mean, input_std)
        from ..train.evaluate import evaluate as run_eval

        r = run_eval(model, data, json_out, report, provider, threads, batch, limit_per_class, foreign)
        if not r["trained"]:
            err_console.print(
                "[bold yellow]warning:[/] this model is untrained (random weights): "
                "these figures are chance level by construction"
            )
        console.print(report_table(r))
        if json_out:
            console.print(f"wrote {json_out}")
        if report:
            console.print(f"wrote {report}/report.json and confusion_matrix.png")

    @app.command("evaluate-spotting")
    def evaluate_spotting_cmd(
        annotations: Annotated[Path, typer.Option(help="Annotation CSV (the datasets' spreadsheets exported to CSV).")],
        videos: Annotated[Path, typer.Option(help="Folder of the annotated videos: frame folders or video files.")],
        convention: Annotated[
            str, typer.Option(help="generic (video,onset,offset[,apex,type]) | samm | casme2")
        ] = "generic",
        fps: Annotated[
            float | None, typer.Option(help="Frame rate of the videos (default: the convention's, or the file's).")
        ] = None,
        include_macro: Annotated[bool, typer.Option(help="Score macro-expression intervals too.")] = False,
        detector: Annotated[str, typer.Option(help="auto, mediapipe, mediapipe-full, haar (as for run).")] = "auto",
        json_out: Annotated[Path | None, typer.Option("--json", help="Write the scores here.")] = None,
    ):
        """Micro-expression spotting scored by the MEGC rule (IoU >= 0.5): precision, recall, F1 per video, pooled."""
        from ..fileio import check_output_paths, write_json_atomic
        from ..train.spotting_eval import evaluate_spotting

        check_output_paths({"--annotations": annotations}, {"--json": json_out})
        r = evaluate_spotting(
            annotations, videos, convention, fps=fps, include_macro=include_macro, detector=detector, log=console.print
        )
        for w in r["warnings"]:
            err_console.print(f"[yellow]warning:[/] {w}", soft_wrap=True, highlight=False)
        o = r["overall"]
        console.print(
            f"overall: {o['tp']} of {o['truth']} found, {o['spotted']} spotted; precision {o['precision']:.3f} "
            f"recall {o['recall']:.3f} F1 {o['f1']:.3f}",
            highlight=False,
        )
        if json_out:
            write_json_atomic(json_out, r)
            console.print(f"wrote {json_out}", highlight=False, markup=False)

    @app.command()
    def slim(
        model: Annotated[
            str, typer.Option("--model", "-m", help="Trained cell-network checkpoint or built-in name to cut down.")
        ],
        channels: Annotated[
            int, typer.Option(help="init_channels of the slimmed network (later stages scale with it).")
        ],
        data: Annotated[
            Path,
            typer.Option(
                help="Real training images (same forms as train --data): "
                "rank channels and re-estimate batch-norm statistics."
            ),
        ],
        out: Annotated[Path, typer.Option(help="Checkpoint to write (fine-tune it with `train --model OUT`).")],
        val: Annotated[Path | None, typer.Option(help="Score the slimmed network here before fine-tuning.")] = None,
        name: Annotated[
            str | None,
            typer.Option(help="Model name of the slimmed network (default: the original's name with -c<channels>)."),
        ] = None,
        limit_per_class: Annotated[
            int | None, typer.Option(help="Use at most N images per class of --data / --val.")
        ] = None,
        threads: Annotated[int | None, typer.Option(help="PyTorch CPU threads.")] = None,
        test_time_flip: Annotated[
            bool | None,
            typer.Option(
                "--test-time-flip/--no-test-time-flip",
                help="Average each face with its mirror in the slimmed network (default: as the original). "
                "Set it before fine-tuning: the trainer scores and picks epochs the way the network runs.",
            ),
        ] = None,
    ):
        """Structured width pruning: keep the channels that matter most, as a start for fine-tuning."""
        import torch

        from ..checkpoint import save_checkpoint
        from ..data.datasets import load_dataset
        from ..fileio import check_output_paths
        from ..resolve import load_model
        from ..train.slim import slim_cell_network

        check_output_paths({"--model": model, "--data": data}, {"--out": out})  # before minutes of work
        if threads:
            torch.set_num_threads(threads)
        config, net, weights = load_model(model)
        if not config.trained:
            raise UserError(
                f"{model} has no trained weights: slimming random weights gives random weights; train it first"
            )
        train_ds = load_dataset(data, config, "Training", limit_per_class)
        new_config, small, rep = slim_cell_network(
            config, net, channels, train_ds.images, name=name, test_time_flip=test_time_flip
        )
        save_checkpoint(out, small, new_config)
        console.print(
            f"{model}: {rep['params_before']:,} -> {rep['params_after']:,} parameters "
            f"(init_channels {rep['init_channels_before']} -> {channels}); "
            f"batch-norm statistics re-estimated on {len(train_ds):,} images"
        )
        if val is not None:
            from ..data.preprocess import Preprocessor
            from ..train.common import dataset_images, evaluate_arrays

            val_ds = load_dataset(val, new_config, "PublicTest", limit_per_class)
            r = evaluate_arrays(
                small, dataset_images(val_ds, "cpu"), val_ds.labels, Preprocessor(new_config), new_config.classes
            )
            console.print(f"before fine-tuning: accuracy {r['accuracy']:.4f} on {len(val_ds):,} images of {val}")
        console.print(f"wrote {out}")

    @app.command()
    def compare(
        a: Annotated[str, typer.Argument(help="First artifact: built-in name, checkpoint or ONNX file.")],
        b: Annotated[str, typer.Argument(help="Second artifact.")],
        data: Annotated[
            Path,
            typer.Option(help="Real samples: class folders, FER2013 CSV[:Usage] or RAF-DB basic folder[:train|test]."),
        ],
        limit_per_class: Annotated[int | None, typer.Option(help="At most N images per class.")] = None,
        provider: Annotated[str | None, typer.Option(help="ONNX Runtime provider: cpu | cuda | tensorrt.")] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write the comparison JSON here.")] = None,
    ):
        """Run two artifacts on the same real samples: max/mean abs diff of logits and top-1 agreement."""
        from ..fileio import check_output_paths
        from ..runtime.compare import compare as run_compare

        check_output_paths({"A": a, "B": b, "--data": data}, {"--json": json_out})
        r = run_compare(a, b, data, limit_per_class, provider)
        t = Table(show_header=False, box=None)
        t.add_row("samples", f"{r['samples']:,} from {r['data']}")
        for k in ("a", "b"):
            t.add_row(k, f"{r[k]['artifact']} ({r[k]['backend']}): top-1 {r[k]['top1']:.4f}")
        t.add_row("max |diff|", f"{r['max_abs_diff']:.3g}")
        t.add_row("mean |diff|", f"{r['mean_abs_diff']:.3g}")
        t.add_row("top-1 agreement", f"{100 * r['top1_agreement']:.2f}%")
        console.print(t)
        if json_out:
            from ..fileio import write_json_atomic

            write_json_atomic(json_out, r)
