"""Loading a pipeline once (:func:`build_pipeline`) and running it over a source into outputs (:func:`run`).

These are what the CLI (``emonas-edge run``, ``emonas-edge demo``) and the scripts in ``demos/``
call. Models are any artifact :func:`~emonas_edge.runtime.load_backend` takes; their input spec
comes from their own config or ONNX metadata. :class:`RunSettings` gathers every option of a run
in one object, checked once before anything is opened.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..faces.detect import create_detector
from ..fileio import check_output_paths
from ..runtime.foreign import ForeignSpec
from ..threads import ThreadPlan, plan_threads
from .loop import Pipeline, PipelineSettings, RunSummary, run_pipeline
from .sources import open_source


@dataclass
class LoadedPipeline:
    """A pipeline with its models and detector loaded, and what the user should know about them."""

    pipeline: Pipeline
    notes: list[str] = field(default_factory=list)
    threads: ThreadPlan | None = None  # what each library was allowed (reported by run and profile-pipeline)


@dataclass
class RunSettings:
    """Every option of ``emonas-edge run`` but the source: models, detector, per-frame settings, outputs."""

    macro: str | os.PathLike | None = "emonas-macro"
    micro: str | os.PathLike | None = "emonas-micro"
    allow_untrained: bool = False
    engine: str = "auto"
    threads: int | None = None  # per library; None: decided from the cores (threads.plan_threads)
    provider: str | None = None
    detector: str = "auto"
    min_confidence: float = 0.4
    min_face: int = 24
    landmark_check: bool = True
    frames: PipelineSettings = field(default_factory=PipelineSettings)
    jsonl: str | os.PathLike | None = None
    csv: str | os.PathLike | None = None
    events_csv: str | os.PathLike | None = None  # one row per spotted micro-movement
    save_video: str | os.PathLike | None = None
    save: str | os.PathLike | None = None  # annotated photos: a file for one photo, a new folder for a folder
    summary_json: str | os.PathLike | None = None
    max_frames: int | None = None
    show: bool = False  # a window (the CLI's); needs a display
    serve: str | None = None  # [HOST:]PORT of a live view in the browser (serve.LiveServer)
    serve_token: str | None = None  # required off loopback (a random one is made when not given)
    loop: bool = False  # replay a video file until the run is stopped
    foreign: ForeignSpec | None = None  # --classes etc.: the --macro .onnx file was made elsewhere

    def check(self, source=None) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError(f"--max-frames must be at least 1, got {self.max_frames}")
        if self.serve_token is not None and self.serve is None:
            raise UserError("--serve-token guards a live view: give --serve [HOST:]PORT too")
        self.frames.check()
        check_output_paths(
            {"--source": source, "--macro": self.macro, "--micro": self.micro},
            {
                "--jsonl": self.jsonl,
                "--csv": self.csv,
                "--events-csv": self.events_csv,
                "--save-video": self.save_video,
                "--save": self.save if _is_file_target(self.save) else None,  # a folder is checked when opened
                "--summary-json": self.summary_json,
            },
        )

    def build(self, photos: bool = False) -> LoadedPipeline:
        return build_pipeline(
            self.macro,
            self.micro,
            detector=self.detector,
            min_confidence=self.min_confidence,
            min_face=self.min_face,
            allow_untrained=self.allow_untrained,
            threads=self.threads,
            provider=self.provider,
            engine=self.engine,
            landmark_check=self.landmark_check,
            settings=self.frames,
            photos=photos,
            macro_foreign=self.foreign,
        )


def _load_head(role: str, spec, allow_untrained: bool, notes: list[str], **backend_options):
    """The backend of one head, or None when it is turned off or untrained (and not allowed)."""
    from ..deps import has_torch
    from ..runtime import load_backend

    if spec is None or str(spec).lower() in ("", "none", "off"):
        return None
    if _untrained_builtin(spec):  # known without building it (which needs PyTorch: no ONNX ships for it)
        if not allow_untrained:
            notes.append(
                f"{role} head off: {spec} has no trained weights (--allow-untrained runs it, marked untrained)"
            )
            return None
        if not has_torch():
            notes.append(
                f"{role} head off: {spec} has no trained weights, and building it untrained needs PyTorch "
                "(pip install 'emonas-edge[train]')"
            )
            return None
    b = load_backend(spec, **backend_options)
    if b.config.task != role:
        notes.append(f"{role} model {spec} was built for the {b.config.task} task")
    if not b.trained and not allow_untrained:
        notes.append(f"{role} head off: {spec} has no trained weights (--allow-untrained runs it, marked untrained)")
        return None
    if not b.trained:
        notes.append(f"{role} head runs UNTRAINED ({spec}): its output is marked untrained and is not a prediction")
    return b


def _untrained_builtin(spec) -> bool:
    from ..resolve import builtin_entry

    entry = builtin_entry(spec)
    return entry is not None and entry.weights is None


def build_pipeline(
    macro: str | os.PathLike | None = "emonas-macro",
    micro: str | os.PathLike | None = "emonas-micro",
    *,
    detector: str = "auto",
    min_confidence: float = 0.4,
    min_face: int = 24,
    allow_untrained: bool = False,
    threads: int | None = None,
    provider: str | None = None,
    engine: str = "auto",
    landmark_check: bool = True,
    settings: PipelineSettings | None = None,
    photos: bool = False,
    macro_foreign: ForeignSpec | None = None,
) -> LoadedPipeline:
    """Load models and detector once. A model whose config says ``trained: false`` is left out
    unless ``allow_untrained`` (then every result of it is marked untrained).

    ``photos``: the source is still images, so ``detector="auto"`` takes the full-range BlazeFace
    (photos hold faces of any size and there is no frame rate to keep up with) and, unless the
    settings say ``track=True``, every photo is on its own (no shared ids, smoothing or windows).
    """
    notes: list[str] = []
    plan = plan_threads(threads)
    plan.apply()
    options = dict(provider=provider, threads=plan.onnxruntime, engine=engine, spinning=plan.spinning)
    macro_backend = _load_head("macro", macro, allow_untrained, notes, **options, foreign=macro_foreign)
    micro_backend = _load_head("micro", micro, allow_untrained, notes, **options)
    if macro_backend is None and micro_backend is None:
        raise UserError(
            "no classifier left to run: " + "; ".join(notes) if notes else "no classifier given (--macro/--micro)"
        )
    settings = settings or PipelineSettings()
    if settings.track is None:  # still images are unrelated photos unless the user says they are a sequence
        settings = dataclasses.replace(settings, track=not photos)
        if photos and settings.detect_interval > 1:
            raise UserError("--detect-every > 1 carries boxes along tracks: for photos give --track too")
    det = create_detector(detector, min_confidence, min_face, landmark_check, auto_full_range=photos)
    try:
        p = Pipeline(det, macro_backend, micro_backend, settings)
    except BaseException:
        det.close()
        raise
    if det.name == "haar" and detector == "auto":
        notes.append("mediapipe not installed: using the OpenCV Haar cascade (no eye landmarks, fewer faces found)")
    p.thread_plan = plan
    return LoadedPipeline(p, notes, plan)


def _close_all(outputs: list, failed: bool, ok: bool) -> None:
    """Close every output even when one fails to (all or none: a failure at close drops the rest too)."""
    fault, published = None, []
    for out in outputs:
        keep = not failed and fault is None and (ok or out.frames > 0)
        try:
            out.close(keep=keep)
            if keep:
                published.append(out.path)
        except UserError as e:
            fault = fault or e
    if fault is not None:
        for path in published:  # published before the fault: withdrawn
            path.unlink(missing_ok=True)
        raise fault


def run(
    source,
    built: LoadedPipeline | None = None,
    *,
    jsonl: str | os.PathLike | None = None,
    csv: str | os.PathLike | None = None,
    events_csv: str | os.PathLike | None = None,
    save_video: str | os.PathLike | None = None,
    save: str | os.PathLike | None = None,
    max_frames: int | None = None,
    on_frame=None,
    render: bool | None = None,
    **build_kw,
) -> RunSummary:
    """Run the pipeline over ``source`` (camera index, URL, video, image or folder) into the outputs.

    Outputs are finalised whatever happens; a source lost mid-run raises :class:`SourceLost`
    after that, with the summary so far as ``.summary``.
    """
    from .render import Renderer
    from .sinks import CsvSink, EventsCsvSink, JsonlSink, OutputError, PhotoSink, VideoSink
    from .sources import ImageSource, Source

    if not isinstance(source, Source):
        outs = {"--jsonl": jsonl, "--csv": csv, "--events-csv": events_csv, "--save-video": save_video}
        check_output_paths({"--source": source}, {**outs, "--save": save if _is_file_target(save) else None})
    src = source if isinstance(source, Source) else open_source(source)  # bad sources fail before models load
    if save is not None and src.kind != "image":
        src.close()
        raise UserError(f"--save writes annotated photos; {src.description} is a {src.kind} source: use --save-video")
    try:
        built = built or build_pipeline(**{"photos": src.kind == "image", **build_kw})
    except BaseException:
        src.close()
        raise
    p = built.pipeline
    sinks: list = []
    video = photos = None
    ok = False
    output_failed = False
    try:
        if jsonl:
            sinks.append(JsonlSink(jsonl))
        if csv:
            sinks.append(CsvSink(csv, p.macro.classes if p.macro else None, p.micro.classes if p.micro else None))
        if events_csv:
            if p.spotter is None:
                raise UserError("--events-csv holds spotted micro-movements: spotting is off (photos or --no-spotting)")
            sinks.append(EventsCsvSink(events_csv))
        if save_video:
            video = VideoSink(save_video, src.fps)
        if save is not None:
            assert isinstance(src, ImageSource)
            single = src.paths[0] if len(src.paths) == 1 and Path(src.description).is_file() else None
            photos = PhotoSink(save, single)
            on_frame = _also_save(photos, on_frame)
        need_render = render if render is not None else (video is not None or on_frame is not None)
        renderer = Renderer(stamp=src.kind != "image") if need_render else None  # photos: no frame rate to show
        summary = run_pipeline(p, src, sinks, renderer, video, max_frames, on_frame)
        if video is not None:
            summary.video_codec = video.codec
            if video.note:
                summary.warnings.append(video.note)
        ok = True
        if summary.frames == 0:
            raise UserError(f"{source}: no frames could be read")
        return summary
    except OutputError:
        output_failed = True
        raise
    finally:
        src.close()
        # outputs so far are valid even when the source failed or the run was stopped: keep them (a video with
        # no frames and files from a run that never started are dropped); when an output failed, none is kept
        _close_all([s for s in [*sinks, video, photos] if s is not None], output_failed, ok)


def _is_file_target(save) -> bool:
    """``--save x.jpg`` names a file (checked against the inputs like any output); anything else is a folder."""
    from .sinks import IMAGE_WRITE_SUFFIXES

    return save is not None and Path(str(save)).suffix.lower() in IMAGE_WRITE_SUFFIXES


def _also_save(photos, on_frame):
    """``on_frame`` that first writes the annotated photo (every photo is drawn: nothing is skipped)."""

    def hook(result, image):
        photos.write(result, image)
        return on_frame(result, image) if on_frame is not None else None

    return hook
