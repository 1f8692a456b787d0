"""``run``, ``demo`` and ``sample-video``: thin layers over :mod:`emonas_edge.pipeline`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..errors import UserError
from .common import ForeignClasses, InputMean, InputStd, console, err_console

if TYPE_CHECKING:
    from ..pipeline import RunSettings

P_MODELS = "Models"
P_DETECT = "Detection and tracking"
P_OUT = "Outputs"


def summary_table(summary, outputs: dict) -> Table:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    pct = 100.0 * summary.frames_with_faces / summary.frames if summary.frames else 0.0
    t.add_row("frames", f"{summary.frames:,}")
    t.add_row("frames with faces", f"{summary.frames_with_faces:,} ({pct:.1f}%)")
    t.add_row("faces / tracks", f"{summary.faces:,} / {summary.tracks:,}")
    if summary.faces_classified and summary.faces_classified < summary.faces:
        share = 100.0 * summary.faces_classified / summary.faces
        t.add_row("macro model ran on", f"{summary.faces_classified:,} faces ({share:.0f}%: --macro-every)")
    t.add_row("speed", f"{summary.fps:.1f} frames/s")
    if summary.labels:
        t.add_row("macro labels", ", ".join(f"{k} {v}" for k, v in summary.labels.most_common()))
    if summary.micro_labels:
        t.add_row("micro labels", ", ".join(f"{k} {v}" for k, v in summary.micro_labels.most_common()))
    if summary.micro_events:
        t.add_row("micro events", f"{summary.micro_events:,} spotted (training-free)")
    if summary.skipped_files:
        names = ", ".join(Path(f).name for f in summary.skipped_files[:5])
        more = f" and {len(summary.skipped_files) - 5} more" if len(summary.skipped_files) > 5 else ""
        t.add_row("skipped (unreadable)", f"{len(summary.skipped_files):,}: {names}{more}")
    stages = ", ".join(f"{k} {v:.2f}" for k, v in summary.stages_ms.items() if v > 0)
    if stages:
        t.add_row("median ms", stages)
    if summary.threads is not None:
        t.add_row("threads", summary.threads.describe())
    if summary.providers:
        t.add_row("runs on", "; ".join(f"{k} {', '.join(v)}" for k, v in summary.providers.items()))
    for k, v in outputs.items():
        if v:
            codec = f" ({summary.video_codec})" if k == "video" and summary.video_codec else ""
            t.add_row(k, f"{v}{codec}")
    return t


def _display_available() -> str | None:
    """None if a window can open, else why not."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display available (DISPLAY is not set); use --save-video and/or --jsonl instead of --show"
    import cv2

    info = cv2.getBuildInformation()
    gui = [ln for ln in info.splitlines() if ln.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() in ("NONE", "NO", ""):
        return (
            "this OpenCV build has no GUI (opencv-python-headless); "
            "install opencv-python or 'emonas-edge[mediapipe]' for --show"
        )
    return None


class Window:
    """``--show``: q/Esc quit, space pause, s snapshot."""

    def __init__(self, title: str, snapshot_dir: Path):
        import cv2

        self.cv2, self.title, self.snapshot_dir = cv2, title, snapshot_dir
        self.snapshots = 0

    def __call__(self, result, image) -> bool:
        cv2 = self.cv2
        try:
            cv2.imshow(self.title, image)
            key = cv2.waitKey(1) & 0xFF
            while True:
                if key in (ord("q"), 27):
                    return False
                if key == ord("s"):
                    self._snapshot(image, result.index)
                if key != ord(" "):
                    return True
                key = cv2.waitKey(0) & 0xFF  # paused: wait for the next key
                if key == ord(" "):
                    return True
        except cv2.error as e:
            raise UserError(f"cannot show a window: {' '.join(str(e).split())[:160]}") from None

    def _snapshot(self, image, index: int) -> None:
        from ..fileio import atomic_outputs

        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        target = self.snapshot_dir / f"emonas-snapshot-{index:06d}.png"
        with atomic_outputs(target) as (tmp,):
            ok, buf = self.cv2.imencode(".png", image)
            tmp.write_bytes(buf.tobytes())
        self.snapshots += 1
        err_console.print(f"snapshot {target}")

    def close(self) -> None:
        try:
            self.cv2.destroyAllWindows()
        except self.cv2.error:
            pass


def _frame_hooks(window, live):
    """The window (which may ask to stop) and the live view, as one ``on_frame``; None when neither."""
    if live is None:
        return window
    if window is None:

        def live_only(result, image):
            live.on_frame(result, image)

        live_only.wants_image = live.wants_image  # type: ignore[attr-defined]  # the loop draws only when due
        return live_only

    def both(result, image):
        live.on_frame(result, image)
        return window(result, image)

    return both


DEFAULT_MICRO = "emonas-micro"


def _into_run_dir(settings: RunSettings, source: str, photos: bool) -> tuple[RunSettings, Path]:
    """``run`` given no outputs keeps its results in a numbered folder: the per-frame JSONL, the summary and,
    for photos (cheap to draw, unlike video), the annotated pictures."""
    from dataclasses import replace

    from ..pipeline.sinks import IMAGE_WRITE_SUFFIXES
    from ..rundirs import new_run_dir

    folder = new_run_dir("run")
    save = None
    if photos:
        src = Path(source)
        save = folder / "annotated" if src.is_dir() else folder / src.name
        if not src.is_dir() and src.suffix.lower() not in IMAGE_WRITE_SUFFIXES:
            save = save.with_suffix(".jpg")
    return replace(settings, jsonl=folder / "results.jsonl", summary_json=folder / "summary.json", save=save), folder


def _no_outputs(settings: RunSettings) -> bool:
    given = (
        settings.jsonl,
        settings.csv,
        settings.events_csv,
        settings.save_video,
        settings.save,
        settings.summary_json,
    )
    return all(v is None for v in given) and not settings.show and settings.serve is None


def _run(
    source: str,
    settings: RunSettings,
    title: str = "emonas-edge",
    quiet_default_micro: bool = False,
    run_folder: bool = False,
):
    """``run`` and ``demo``; ``run_folder``: without outputs, keep the results in a numbered run folder.

    ``settings`` is one :class:`~emonas_edge.pipeline.RunSettings`, checked here before anything opens.
    """
    from ..fileio import Terminated, write_json_atomic
    from ..pipeline import RunSummary, open_source, run
    from ..pipeline.serve import LiveServer, parse_serve
    from ..pipeline.sources import loop_source
    from ..rundirs import release_if_empty

    if settings.show:
        why = _display_available()
        if why:
            raise UserError(why)
    settings.check(source)
    # a taken port, like a bad source, fails before any model loads
    live = LiveServer(parse_serve(settings.serve, settings.serve_token)) if settings.serve is not None else None
    try:
        src = open_source(source)
        if settings.loop:
            src = loop_source(src)
    except BaseException:
        if live is not None:
            live.close()
        raise
    try:
        built = settings.build(photos=src.kind == "image")
    except BaseException:
        src.close()
        if live is not None:
            live.close()
        raise
    for n in built.notes:
        if quiet_default_micro and n.startswith(f"micro head off: {DEFAULT_MICRO} has no trained weights"):
            continue  # the default head, switched off as shipped: said in the run's help, not on every run
        err_console.print(f"[yellow]note:[/] {n}", soft_wrap=True, markup=True, highlight=False)
    p = built.pipeline
    console.print(
        f"detector {p.detector.name} | macro {p.macro.path if p.macro else 'off'} "
        f"| micro {p.micro.path if p.micro else 'off'}",
        highlight=False,
        markup=False,
    )
    folder = None
    if run_folder and _no_outputs(settings):
        settings, folder = _into_run_dir(settings, source, photos=src.kind == "image")
    window = Window(title, Path("snapshots")) if settings.show else None
    outputs = {
        "jsonl": settings.jsonl,
        "csv": settings.csv,
        "events csv": settings.events_csv,
        "video": settings.save_video,
        "photos": settings.save,
    }
    try:
        if live is not None:
            live.start()
            console.print(f"live view: {live.url}", highlight=False, markup=False)
        summary = run(
            src,
            built,
            jsonl=settings.jsonl,
            csv=settings.csv,
            events_csv=settings.events_csv,
            save_video=settings.save_video,
            save=settings.save,
            max_frames=settings.max_frames,
            on_frame=_frame_hooks(window, live),
        )
    except (UserError, KeyboardInterrupt, Terminated) as e:  # a lost source, Ctrl-C or SIGTERM: report what was done
        partial = getattr(e, "summary", None)
        if isinstance(partial, RunSummary) and partial.frames:
            console.print(summary_table(partial, {k: v for k, v in outputs.items() if v and Path(v).exists()}))
            if settings.summary_json:
                write_json_atomic(settings.summary_json, partial.to_json())
        raise
    finally:
        if window:
            window.close()
        if live is not None:
            live.close()
        p.detector.close()
        if folder is not None:
            release_if_empty(folder)
    console.print(summary_table(summary, outputs))
    if folder is not None:
        console.print(f"results in {folder}", highlight=False, markup=False)
    for w in summary.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", soft_wrap=True, markup=True, highlight=False)
    if settings.summary_json:
        write_json_atomic(settings.summary_json, summary.to_json())
    return summary


# register() is long only because it holds this group's commands, each its own nested function (typer reads
# their signatures for the options); it attaches them to the app and does nothing else.
def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        source: Annotated[
            str, typer.Option("--source", help="Camera index (0), stream URL, video file, image file or image folder.")
        ],
        macro: Annotated[
            str,
            typer.Option(
                help="Macro model: built-in name, checkpoint, genotype or .onnx; 'none' to turn off.",
                rich_help_panel=P_MODELS,
            ),
        ] = "emonas-macro",
        micro: Annotated[
            str | None,
            typer.Option(
                help="Micro model (dynamic images of each face's frame buffer); 'none' to turn off. Default: "
                "emonas-micro, which ships untrained and so stays off unless --allow-untrained.",
                rich_help_panel=P_MODELS,
            ),
        ] = None,
        provider: Annotated[
            str | None,
            typer.Option(
                help="ONNX Runtime provider: cpu | cuda | tensorrt (default: the fastest installed).",
                rich_help_panel=P_MODELS,
            ),
        ] = None,
        allow_untrained: Annotated[
            bool,
            typer.Option(
                help="Run heads whose model has no trained weights; every result of theirs is marked untrained.",
                rich_help_panel=P_MODELS,
            ),
        ] = False,
        engine: Annotated[
            str,
            typer.Option(
                help="auto/onnxruntime: export non-ONNX models once (cached, parity-checked) "
                "and run them in ONNX Runtime; torch: run in PyTorch.",
                rich_help_panel=P_MODELS,
            ),
        ] = "auto",
        threads: Annotated[
            int | None,
            typer.Option(
                help="Threads per library (OpenCV, ONNX Runtime, PyTorch). Default: cores / 2 pipeline stages.",
                rich_help_panel=P_MODELS,
            ),
        ] = None,
        detector: Annotated[
            str,
            typer.Option(
                help="auto (MediaPipe if installed: short-range for video and cameras, full-range for photos; "
                "else Haar), mediapipe (BlazeFace short-range), mediapipe-full (full-range: small/distant faces, "
                "~2x slower), haar.",
                rich_help_panel=P_DETECT,
            ),
        ] = "auto",
        min_confidence: Annotated[
            float, typer.Option(help="Minimum face detection confidence.", rich_help_panel=P_DETECT)
        ] = 0.4,
        min_face: Annotated[int, typer.Option(help="Minimum face size in pixels.", rich_help_panel=P_DETECT)] = 24,
        landmark_check: Annotated[
            bool,
            typer.Option(
                help="Drop MediaPipe detections whose keypoints are not laid out like a face.", rich_help_panel=P_DETECT
            ),
        ] = True,
        detect_every: Annotated[
            str,
            typer.Option(
                help="Detect every k-th frame, or auto (every 5th, 10th while the flow keeps agreeing; every "
                "photo); faces move by optical flow in between and a lost face brings the next detection forward.",
                rich_help_panel=P_DETECT,
            ),
        ] = "auto",
        max_faces: Annotated[
            int, typer.Option(help="At most this many faces per frame, largest first.", rich_help_panel=P_DETECT)
        ] = 8,
        macro_every: Annotated[
            str,
            typer.Option(
                help="Classify each face every k-th frame, or auto (at least every 3rd, and on every frame its "
                "crop changed); in between it keeps its last probabilities (macro_new false).",
                rich_help_panel=P_MODELS,
            ),
        ] = "auto",
        max_age: Annotated[
            int,
            typer.Option(
                help="Frames a track survives unseen before it and its buffers are dropped.", rich_help_panel=P_DETECT
            ),
        ] = 15,
        margin: Annotated[
            float,
            typer.Option(help="Extra context around the aligned face (0.2 = 20% more).", rich_help_panel=P_DETECT),
        ] = 0.0,
        smoothing: Annotated[
            float,
            typer.Option(help="Per-track EMA weight of past macro probabilities (0 = none).", rich_help_panel=P_MODELS),
        ] = 0.6,
        micro_windows: Annotated[
            str,
            typer.Option(
                help="What the micro model classifies: spotted (each spotted movement, onset to offset), stride "
                "(the last --micro-window frames every --micro-stride), auto (spotted where spotting runs).",
                rich_help_panel=P_MODELS,
            ),
        ] = "auto",
        micro_window: Annotated[int, typer.Option(help="Frames per dynamic image.", rich_help_panel=P_MODELS)] = 16,
        micro_stride: Annotated[int, typer.Option(help="Frames between dynamic images.", rich_help_panel=P_MODELS)] = 8,
        save_video: Annotated[
            Path | None,
            typer.Option(
                help="Write the annotated video here: .mp4 (H.264 with the video extra, else mp4v), .webm (VP9), "
                ".avi (MJPEG).",
                rich_help_panel=P_OUT,
            ),
        ] = None,
        save: Annotated[
            Path | None,
            typer.Option(
                help="Annotated photos: a file for one photo (--save out.jpg), a new folder for a folder "
                "(--save outdir/).",
                rich_help_panel=P_OUT,
            ),
        ] = None,
        jsonl: Annotated[
            Path | None, typer.Option(help="One JSON object per processed frame.", rich_help_panel=P_OUT)
        ] = None,
        csv: Annotated[Path | None, typer.Option(help="One row per face per frame.", rich_help_panel=P_OUT)] = None,
        events_csv: Annotated[
            Path | None,
            typer.Option(
                help="One row per spotted micro-movement (track, region, onset/apex/offset).", rich_help_panel=P_OUT
            ),
        ] = None,
        summary_json: Annotated[
            Path | None, typer.Option(help="Write the run summary as JSON.", rich_help_panel=P_OUT)
        ] = None,
        show: Annotated[
            bool,
            typer.Option(
                help="Show the annotated frames in a window (q quit, space pause, s snapshot).", rich_help_panel=P_OUT
            ),
        ] = False,
        max_frames: Annotated[
            int | None, typer.Option(help="Stop after this many frames.", rich_help_panel=P_OUT)
        ] = None,
        serve: Annotated[
            str | None,
            typer.Option(
                help="Live view in a browser at [HOST:]PORT (PORT alone: 127.0.0.1 only): the annotated video, "
                "class bars and the per-frame results; a host beyond loopback gets a token.",
                rich_help_panel=P_OUT,
            ),
        ] = None,
        serve_token: Annotated[
            str | None,
            typer.Option(help="The live view's token (default off loopback: a random one).", rich_help_panel=P_OUT),
        ] = None,
        loop: Annotated[
            bool, typer.Option(help="Replay a video file until interrupted (kiosks, demos).", rich_help_panel=P_OUT)
        ] = False,
        track: Annotated[
            bool | None,
            typer.Option(
                "--track/--no-track",
                help="--track: an image folder is a frame sequence (ids, smoothing and micro windows across "
                "files); --no-track: frames are unrelated photos. Default: tracks for video and cameras, none "
                "for images.",
                rich_help_panel=P_DETECT,
            ),
        ] = None,
        spotting: Annotated[
            bool,
            typer.Option(
                help="Spot brief facial movements (micro-expressions) on each track, training-free: "
                "micro_events in the JSONL, reported 0.8-1.0 s after their apex (video and cameras).",
                rich_help_panel=P_MODELS,
            ),
        ] = True,
        classes: ForeignClasses = None,
        input_mean: InputMean = None,
        input_std: InputStd = None,
    ):
        """Real-time pipeline: detect, align, track, classify macro (per frame) and micro (per window) expressions.

        Given no output (and no --show or --serve), the results go to a new numbered folder (runs/run, runs/run2,
        ...): results.jsonl, summary.json and, for photos, the annotated pictures."""
        from ..pipeline import PipelineSettings, RunSettings
        from ..pipeline.loop import parse_detect_every, parse_macro_every
        from ..runtime.foreign import ForeignSpec

        frames = PipelineSettings(
            parse_detect_every(detect_every),
            max_faces,
            smoothing,
            micro_window,
            micro_stride,
            margin,
            max_age,
            track=track,
            spotting=spotting,
            micro_windows=micro_windows,
            macro_every=parse_macro_every(macro_every),
        )
        _run(
            source,
            RunSettings(
                macro=macro,
                micro=DEFAULT_MICRO if micro is None else micro,
                allow_untrained=allow_untrained,
                engine=engine,
                threads=threads,
                provider=provider,
                detector=detector,
                min_confidence=min_confidence,
                min_face=min_face,
                landmark_check=landmark_check,
                frames=frames,
                jsonl=jsonl,
                csv=csv,
                events_csv=events_csv,
                save_video=save_video,
                save=save,
                summary_json=summary_json,
                max_frames=max_frames,
                show=show,
                serve=serve,
                serve_token=serve_token,
                loop=loop,
                foreign=ForeignSpec.parse(classes, input_mean, input_std),
            ),
            quiet_default_micro=micro is None,
            run_folder=True,
        )

    @app.command()
    def demo(
        source: Annotated[str, typer.Option(help="Camera index or any source `run` takes.")] = "0",
        macro: Annotated[str, typer.Option(help="Macro model.")] = "emonas-macro",
        micro: Annotated[str, typer.Option(help="Micro model.")] = "emonas-micro",
        allow_untrained: Annotated[bool, typer.Option(help="Run untrained heads (marked untrained).")] = False,
        serve: Annotated[
            str | None,
            typer.Option(help="Show it in a browser at [HOST:]PORT instead of a window (no display needed)."),
        ] = None,
        serve_token: Annotated[str | None, typer.Option(help="The live view's token (off loopback).")] = None,
        loop: Annotated[bool, typer.Option(help="Replay a video file source until interrupted.")] = False,
    ):
        """Webcam demo with a window: q quit, space pause, s snapshot (into ./snapshots); or --serve for a browser."""
        from ..pipeline import RunSettings

        settings = RunSettings(  # otherwise `run`'s defaults
            macro=macro,
            micro=micro,
            allow_untrained=allow_untrained,
            show=serve is None,
            serve=serve,
            serve_token=serve_token,
            loop=loop,
        )
        _run(source, settings, title="emonas-edge demo (q quit, space pause, s snapshot)")

    @app.command("sample-video")
    def sample_video(
        output: Annotated[Path, typer.Argument(help="Where to write the clip (.mp4/.avi).")],
        frames: Annotated[int, typer.Option(help="Number of frames.")] = 90,
        width: Annotated[int, typer.Option(help="Frame width.")] = 640,
        height: Annotated[int, typer.Option(help="Frame height.")] = 360,
    ):
        """Write a sample clip (camera move over the bundled public-domain astronaut photo) for demos and benchmarks."""
        from ..pipeline.sample import make_sample_video

        path = make_sample_video(output, frames, width, height)
        console.print(f"wrote {path} ({frames} frames, {width}x{height})", highlight=False, markup=False)

    @app.command("crop-faces")
    def crop_faces_cmd(
        data: Annotated[Path, typer.Option(help="Folder of images (class folders or flat); searched recursively.")],
        out: Annotated[
            Path,
            typer.Option(
                help="New folder for the crops: the same tree, one .png per image with a face, plus crops.json."
            ),
        ],
        model: Annotated[
            str, typer.Option(help="Model whose input the crops match (size, gray/RGB).")
        ] = "emonas-macro",
        size: Annotated[int | None, typer.Option(help="Crop side in pixels instead of the model's input size.")] = None,
        detector: Annotated[
            str,
            typer.Option(
                help="auto (full-range MediaPipe if installed, else Haar), mediapipe (BlazeFace short-range), "
                "mediapipe-full (full-range), haar.",
                rich_help_panel=P_DETECT,
            ),
        ] = "auto",
        min_confidence: Annotated[
            float, typer.Option(help="Minimum face detection confidence.", rich_help_panel=P_DETECT)
        ] = 0.4,
        min_face: Annotated[int, typer.Option(help="Minimum face size in pixels.", rich_help_panel=P_DETECT)] = 24,
        margin: Annotated[
            float,
            typer.Option(help="Extra context around the aligned face (0.2 = 20% more).", rich_help_panel=P_DETECT),
        ] = 0.0,
        overwrite: Annotated[
            bool, typer.Option(help="Replace --out if it exists (only once the new crops are complete).")
        ] = False,
    ):
        """Crop and align the largest face of every image the way `run` does, for training on whole photos."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from ..fileio import check_writable_location
        from ..pipeline.crops import crop_faces
        from ..resolve import load_genotype

        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a new folder")
        check_writable_location(out.parent, "--out")
        config = load_genotype(model)
        with Progress(
            TextColumn("cropping"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task("crop", total=None)
            r = crop_faces(
                data,
                out,
                config,
                size=size,
                detector=detector,
                min_confidence=min_confidence,
                min_face=min_face,
                margin=margin,
                overwrite=overwrite,
                progress=lambda i, n: bar.update(task, completed=i, total=n),
            )
        t = Table(show_header=False, box=None)
        t.add_row("images", f"{r['images']:,} under {r['source']}")
        t.add_row(
            "crops written",
            f"{r['written']:,} ({r['settings']['size']}x{r['settings']['size']} "
            f"{'gray' if r['settings']['gray'] else 'RGB'}, {r['settings']['detector']})",
        )
        t.add_row("no face", f"{r['no_face']:,}")
        t.add_row("several faces", f"{r['several_faces']:,} (largest kept)")
        t.add_row("unreadable", f"{r['unreadable']:,}")
        for folder, n in r["per_folder"].items():
            t.add_row(f"  {folder}", f"{n:,}")
        console.print(t)
        console.print(f"wrote {out} (list of skipped files in {out / 'crops.json'})", highlight=False, markup=False)
