"""The per-frame data path: detect -> align -> track -> macro (batched) -> micro (per-track windows).

One :class:`Pipeline` holds everything computed once (backends, preprocessors, aligners,
tracker) and processes frames; :func:`run_pipeline` drives it from a source into sinks and
keeps per-stage timings, which the benchmark and the summary report.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..data.dynamic_image import dynamic_image
from ..data.preprocess import Preprocessor
from ..errors import UserError
from ..faces.align import Aligner
from ..faces.detect import Detection, FaceDetector
from ..faces.flow import FaceFlow
from ..fileio import Terminated
from ..runtime.backend import Backend
from ..threads import ThreadPlan
from .buffers import FrameRing, check_window
from .sources import Frame, Source
from .track import Tracker, iou_matrix

STAGES = ("decode", "detect", "align", "track", "macro", "micro", "spot", "render")


def _same_faces(moved: list[Detection], found: list[Detection]) -> bool:
    """Whether the flow's faces and a detection's are the same faces in the same places."""
    if len(moved) != len(found):
        return False
    if not found:
        return True
    iou = iou_matrix(np.stack([d.box for d in moved]), np.stack([d.box for d in found]))
    return bool((iou.max(axis=1) >= SAME_FACE_IOU).all() and len(set(iou.argmax(axis=1).tolist())) == len(found))


def _margin(p: np.ndarray) -> float:
    """How far the top class leads the next."""
    second, first = sorted(p.tolist())[-2:]  # a handful of classes: plain Python beats numpy's call overhead
    return first - second


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


@dataclass
class FaceResult:
    track: int
    box: np.ndarray
    score: float
    landmarks: bool
    macro: np.ndarray | None = None  # smoothed probabilities
    macro_raw: np.ndarray | None = None  # this frame's probabilities (carried from the last classified frame)
    macro_fresh: bool = False  # the macro model ran on this face on this frame (see --macro-every)
    micro: np.ndarray | None = None  # latest window's probabilities (None until the first window)
    micro_fresh: bool = False  # a window completed on this frame
    untrained: tuple[str, ...] = ()  # heads whose model was never trained: their output is not a prediction
    micro_events: list[dict] | None = None  # spotted movements decided on this frame (None: spotting off)


@dataclass
class FrameResult:
    index: int
    time: float
    faces: list[FaceResult]
    macro_classes: tuple[str, ...] | None
    micro_classes: tuple[str, ...] | None
    faces_detected: int = 0  # before --max-faces
    file: str | None = None  # the image file of the frame (image sources): rows say which photo they describe

    def class_name(self, head: str, k: int) -> str:
        """Name of class ``k`` of the ``"macro"`` or ``"micro"`` head (which must have run on this frame)."""
        classes = self.macro_classes if head == "macro" else self.micro_classes
        if classes is None:
            raise ValueError(f"frame {self.index}: no {head} model ran, so it has no {head} class names")
        return classes[k]

    def to_json(self) -> dict:
        def probs(p, classes):
            return None if p is None else {c: round(float(v), 5) for c, v in zip(classes, p, strict=False)}

        faces = []
        for f in self.faces:
            d = {
                "track": f.track,
                "box": [round(float(v), 1) for v in f.box],
                "score": round(f.score, 4),
                "landmarks": f.landmarks,
                "macro": probs(f.macro, self.macro_classes),
                "macro_raw": probs(f.macro_raw, self.macro_classes),
                "macro_new": f.macro_fresh,
                "micro": probs(f.micro, self.micro_classes),
                "micro_new": f.micro_fresh,
            }
            if f.micro_events is not None:
                d["micro_events"] = f.micro_events
            if f.untrained:
                d["untrained"] = list(f.untrained)
            faces.append(d)
        out = {"frame": self.index, "time": round(self.time, 4), "faces": faces}
        if self.file is not None:
            out = {"file": self.file, **out}
        if self.faces_detected > len(self.faces):
            out["faces_dropped"] = self.faces_detected - len(self.faces)
        return out


# "auto": detect every 5th frame (1/6 s at 30 fps), sooner when the flow loses a face; each scheduled detection
# that finds the faces where the flow had moved them (same count, IoU >= SAME_FACE_IOU each) doubles the interval, up to
# every 10th frame (a new face waits at most 1/3 s at 30 fps), and one that does not sets it back to 5
AUTO_DETECT_EVERY, AUTO_DETECT_MAX, SAME_FACE_IOU = 5, 10, 0.9
# "auto": the macro model sees each face at least every 3rd frame (every 8th while its smoothed top class leads
# the next by more than 0.2), and on every frame where the face's aligned crop differs from the one it last
# classified by a mean of more than 1.5% of full scale (3.8 gray levels; consecutive frames of a still speaker
# differ by ~1.1, a turn or a smile by 4-15). In between, the face keeps the probabilities of its last classified
# crop, so the smoothing still advances frame by frame. Measured against classifying every frame
# (profile/cadence.py, README): the same reported labels on 100% of single_face.mp4's frames, the model run on
# about a quarter of the faces
AUTO_MACRO_EVERY, SURE_MACRO_EVERY, SURE_MARGIN = 3, 8, 0.2
MACRO_CHANGE = 0.015


def parse_every(value, flag: str = "--detect-every") -> int | str:
    """``--detect-every`` / ``--macro-every``: a whole number >= 1 or ``auto``."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        raise UserError(f"{flag} must be a whole number >= 1 or 'auto', got {value!r}") from None
    if k < 1:
        raise UserError(f"{flag} must be at least 1, got {k}")
    return k


def parse_detect_every(value) -> int | str:
    return parse_every(value, "--detect-every")


def parse_macro_every(value) -> int | str:
    return parse_every(value, "--macro-every")


@dataclass
class PipelineSettings:
    # 1: detect every frame; k > 1 or "auto": detect every k-th (auto: AUTO_DETECT_EVERY) frame and move
    # the faces with optical flow in between (faces/flow.py), detecting sooner when the flow loses one.
    # "auto" (the default) is 1 where frames are unrelated photos (track False): there is nothing to follow
    detect_every: int | str = "auto"
    max_faces: int = 8
    smoothing: float = 0.6  # EMA weight of the past: 0 = no smoothing
    micro_window: int = 16
    micro_stride: int = 8
    margin: float = 0.0
    max_age: int = 15
    iou_threshold: float = 0.3
    # False: frames are unrelated photos (no ids carried, no smoothing, no micro windows); None: decided by the
    # source (tracks for video and cameras, none for still images: a folder of photos of different people must
    # not share one track and its smoothing; numbered names do not make a sequence, phone photos are numbered too)
    track: bool | None = None
    # training-free micro-expression spotting on each track (data/spotting.py); needs tracks (video, cameras)
    spotting: bool = True
    # what the micro classifier reads: "spotted" (the dynamic image of each spotted movement, from its onset to
    # its offset), "stride" (every micro_stride frames, the last micro_window frames), or "auto": spotted where
    # spotting runs, else stride
    micro_windows: str = "auto"
    # 1: the macro model runs on every face of every frame; k > 1: on each face every k-th frame; "auto" (the
    # default): at least every AUTO_MACRO_EVERY-th frame and whenever the aligned crop changed (MACRO_CHANGE).
    # Unrelated photos (track False) are always classified: each is a new track
    macro_every: int | str = "auto"

    @property
    def detect_interval(self) -> int:
        if self.detect_every == "auto":
            return 1 if self.track is False else AUTO_DETECT_EVERY
        return int(self.detect_every)

    def check(self) -> None:
        parse_detect_every(self.detect_every)
        parse_macro_every(self.macro_every)
        if self.max_faces < 1:
            raise UserError(f"--max-faces must be at least 1, got {self.max_faces}")
        if not 0.0 <= self.smoothing < 1.0:
            raise UserError(f"--smoothing must be in [0, 1), got {self.smoothing}")
        if self.max_age < 0:
            raise UserError(f"--max-age must be >= 0, got {self.max_age}")
        check_window(self.micro_window, self.micro_stride)
        if self.micro_windows not in ("auto", "spotted", "stride"):
            raise UserError(f"--micro-windows must be auto, spotted or stride, got {self.micro_windows!r}")
        if self.micro_windows == "spotted" and not self.spotting:
            raise UserError("--micro-windows spotted classifies spotted movements: drop --no-spotting")
        if self.track is False and self.detect_interval > 1:
            raise UserError(
                "--no-track needs detection on every frame (--detect-every 1): there are no tracks to carry boxes"
            )


@dataclass
class StageTimes:
    """Nanoseconds per stage per frame; a stage that did not run on a frame records nothing for it."""

    ns: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, stage: str, dt_ns: int) -> None:
        self.ns[stage].append(dt_ns)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """``with times.stage("macro"):`` records how long the block took as one sample of ``name``."""
        t0 = time.perf_counter_ns()
        try:
            yield
        finally:
            self.ns[name].append(time.perf_counter_ns() - t0)

    def median_ms(self) -> dict[str, float]:
        return {s: float(np.median(self.ns[s])) / 1e6 if self.ns.get(s) else 0.0 for s in STAGES}

    def total_ms(self) -> dict[str, float]:
        return {s: float(np.sum(self.ns[s])) / 1e6 if self.ns.get(s) else 0.0 for s in STAGES}


class Pipeline:
    def __init__(
        self,
        detector: FaceDetector,
        macro: Backend | None = None,
        micro: Backend | None = None,
        settings: PipelineSettings | None = None,
    ):
        self.settings = settings or PipelineSettings()
        if self.settings.track is None:  # a pipeline fed frames by hand: a stream unless told otherwise
            self.settings = dataclasses.replace(self.settings, track=True)
        self.settings.check()
        if macro is None and micro is None:
            raise UserError("no classifier to run: give a macro and/or a micro model")
        self.detector, self.macro, self.micro = detector, macro, micro
        self.tracker = Tracker(self.settings.iou_threshold, self.settings.max_age)
        self.flow = FaceFlow() if self.settings.detect_interval > 1 else None
        self._since_detection = 0
        self._interval = self.settings.detect_interval  # frames from one detection to the next (auto: adapts)
        self.times = StageTimes()
        self.frames = 0
        self.thread_plan: ThreadPlan | None = None  # set by build_pipeline, which applied it
        if macro is not None:
            self._check_model(macro, "macro")
            self.macro_pre = Preprocessor(macro.config)
            self.macro_align = Aligner(macro.config, self.settings.margin, self.settings.max_faces)
            self._macro_in = np.empty(
                (self.settings.max_faces, macro.config.in_channels, macro.config.input_size, macro.config.input_size),
                np.float32,
            )
        if micro is not None:
            self._check_model(micro, "micro")
            self.micro_pre = Preprocessor(micro.config)
            self.micro_align = Aligner(micro.config, self.settings.margin, self.settings.max_faces)
            c, sz = micro.config.in_channels, micro.config.input_size
            self._micro_crop = (sz, sz) if c == 1 else (sz, sz, 3)
            self._micro_in = np.empty((self.settings.max_faces, c, sz, sz), np.float32)
        self.spotter = None
        if self.settings.spotting and self.settings.track:
            from .spotter import SPOT_SIZE, StreamSpotter

            head = macro if macro is not None else micro
            assert head is not None
            self.spotter = StreamSpotter()
            self.spot_align = Aligner(head.config, self.settings.margin, self.settings.max_faces, size=SPOT_SIZE)
        self._spotted_windows = self.spotter is not None and self.settings.micro_windows in ("auto", "spotted")

    @staticmethod
    def _check_model(b: Backend, role: str) -> None:
        if b.config.in_channels not in (1, 3):
            raise UserError(
                f"{role} model {b.path}: input has {b.config.in_channels} channels; "
                "the pipeline feeds gray (1) or RGB (3) faces"
            )

    def _select(self, dets: list[Detection]) -> list[Detection]:
        dets = sorted(dets, key=lambda d: d.area, reverse=True)  # largest first
        return dets[: self.settings.max_faces]

    def detect(self, frame: Frame, n: int) -> tuple[list[Detection], int]:
        """The faces of the ``n``-th frame of the run and ns taken: detected, or between detections moved
        there by optical flow from the last frame (a detection comes early when the flow loses a face).

        Separate from :meth:`process` so the driver can detect frame n+1 on another thread while
        frame n is classified: detection, ONNX Runtime and OpenCV all release the GIL. It keeps its own
        state (the flow's last frame and faces), so the other thread's tracks are never read here.
        """
        t0 = time.perf_counter_ns()
        flow = self.flow
        following = flow if flow is not None and n > 0 and flow.confident else None
        if following is not None and self._since_detection + 1 < self._interval:
            found = following.step(frame.image)
            self._since_detection += 1
        else:
            found = self._detect_now(frame, following)
        return found, time.perf_counter_ns() - t0

    def _detect_now(self, frame: Frame, following: FaceFlow | None) -> list[Detection]:
        """A detection frame; under ``auto``, a scheduled one also asks whether the flow had every face where the
        detector finds it (the interval doubles, up to AUTO_DETECT_MAX) or not (back to AUTO_DETECT_EVERY)."""
        auto = self.settings.detect_every == "auto"
        predicted = following.step(frame.image) if following is not None and auto else None
        found = self.detector.detect(frame.image)
        kept = self._select(found)
        if self.flow is not None:
            self.flow.reset(frame.image, kept)
        if auto:
            followed = predicted is not None and _same_faces(self._select(predicted), kept)
            self._interval = min(2 * self._interval, AUTO_DETECT_MAX) if followed else AUTO_DETECT_EVERY
        self._since_detection = 0
        return found

    _NOT_GIVEN = object()

    def process(self, frame: Frame, found=_NOT_GIVEN, detect_ns: int = 0) -> FrameResult:
        """Everything after detection; detects itself unless ``found`` comes from :meth:`detect`."""
        if found is Pipeline._NOT_GIVEN:
            found, detect_ns = self.detect(frame, self.frames)
        with self.times.stage("track"):
            tracks, dets, n_found = self._track(found)
        faces = [FaceResult(tr.id, tr.det.box, tr.det.score, tr.det.eyes is not None) for tr in tracks]
        self.times.add("detect", detect_ns)
        if faces:
            with self.times.stage("align"):
                macro_crops = self.macro_align.align(frame.image, dets) if self.macro is not None else None
                micro_ready = self._push_micro_crops(frame, dets, tracks) if self.micro is not None else []
            if self.macro is not None and macro_crops is not None:
                self._classify_macro(self.macro, macro_crops, faces, tracks)
            if self.spotter is not None:
                self._spot(frame, dets, faces, tracks)
            if self.micro is not None and self._spotted_windows:
                self._classify_spotted(self.micro, faces, tracks)
            elif self.micro is not None:
                self._classify_micro(self.micro, micro_ready, faces, tracks)
        self.frames += 1
        return FrameResult(
            frame.index,
            frame.time,
            faces,
            self.macro.classes if self.macro else None,
            self.micro.classes if self.micro else None,
            n_found,
            frame.file,
        )

    def _track(self, found: list[Detection]) -> tuple[list, list[Detection], int]:
        """``(tracks, their detections, faces found before --max-faces)``."""
        dets = self._select(found)
        if not self.settings.track:
            self.tracker.forget()
        return self.tracker.update(dets), dets, len(found)

    def providers(self) -> dict[str, list[str]]:
        """Where each stage runs: the heads' ONNX Runtime providers in preference order (TensorRT and CUDA
        first where this ONNX Runtime has them, e.g. on a Jetson), or their backend; detection is on the CPU."""
        out = {"detect": [f"{self.detector.name} (CPU)"]}
        for role, b in (("macro", self.macro), ("micro", self.micro)):
            if b is not None:
                out[role] = list(getattr(b, "providers", None) or [b.name])
        return out

    def _align_all(self, frame: Frame, dets: list[Detection], scratch: list) -> None:
        """The align stage's work, its micro crops pushed into ``scratch`` tracks' rings (profiling times the
        stage alone with it, against the pipeline's own)."""
        if self.macro is not None:
            self.macro_align.align(frame.image, dets)
        if self.micro is not None:
            self._push_micro_crops(frame, dets, scratch)

    def _macro_input(self, frame: Frame, dets: list[Detection]) -> np.ndarray:
        crops = self.macro_align.align(frame.image, dets)
        return self.macro_pre.normalize(crops, out=self._macro_in[: len(dets)])

    def _push_micro_crops(self, frame: Frame, dets: list[Detection], tracks: list) -> list[int]:
        """Add each face's crop to its track's ring; returns the faces whose window just completed."""
        crops = self.micro_align.align(frame.image, dets)
        if self._spotted_windows:  # kept by frame for the spotted movements, decided up to ~1 s later
            assert self.spotter is not None
            for i, tr in enumerate(tracks):
                history = tr.state.setdefault("micro_history", deque())
                history.append((frame.index, crops[i].copy()))
                oldest = self.spotter.oldest(tr.state)  # what no future event can reach is dropped
                while oldest is not None and history and history[0][0] < oldest:
                    history.popleft()
            return []
        ready = []
        for i, tr in enumerate(tracks):
            ring = tr.state.get("ring")
            if ring is None:
                ring = tr.state["ring"] = FrameRing(
                    self.settings.micro_window, self.settings.micro_stride, self._micro_crop
                )
            if ring.push(crops[i]):
                ready.append(i)
        return ready

    def _spot(self, frame: Frame, dets: list[Detection], faces: list[FaceResult], tracks: list) -> None:
        assert self.spotter is not None
        with self.times.stage("spot"):
            crops = self.spot_align.align(frame.image, dets)
            for i, tr in enumerate(tracks):
                faces[i].micro_events = self.spotter.push(tr.state, crops[i], frame.index, frame.time)

    def _macro_period(self, state: dict) -> int:
        """Frames between a face's classifications: ``--macro-every k``, or under ``auto`` the longer period while
        the face's smoothed label is clear."""
        every = self.settings.macro_every
        if every != "auto":
            return int(every)
        return SURE_MACRO_EVERY if _margin(state["macro"]) > SURE_MARGIN else AUTO_MACRO_EVERY

    def _macro_due(self, crops: np.ndarray, tracks: list) -> list[int]:
        """The faces the macro model must see on this frame (``--macro-every``): new tracks, those classified
        a period ago, and under ``auto`` those whose aligned crop changed since it was last classified."""
        gate = self.settings.macro_every == "auto"
        limit = MACRO_CHANGE * 255 * crops[0].size
        due = []
        for i, tr in enumerate(tracks):
            last = tr.state.get("macro_crop")
            if (
                last is None
                or tr.state["macro_age"] + 1 >= self._macro_period(tr.state)
                or (gate and cv2.norm(crops[i], last, cv2.NORM_L1) > limit)
            ):
                due.append(i)
        return due

    def _classify_macro(self, macro: Backend, crops: np.ndarray, faces: list[FaceResult], tracks: list) -> None:
        """This frame's probabilities (from this frame's crop where the face is due, else from the crop last
        classified), and per track an EMA of them (``smoothing`` = weight of the past)."""
        due = self._macro_due(crops, tracks)
        if due:
            with self.times.stage("macro"):
                x = self.macro_pre.normalize(crops[due], out=self._macro_in[: len(due)])
                probs = softmax(macro.run_all(x).astype(np.float32, copy=True))
            for i, p in zip(due, probs, strict=True):
                tracks[i].state.update(macro_crop=crops[i].copy(), macro_raw=p, macro_age=0)
                faces[i].macro_fresh = True
        a = self.settings.smoothing
        for f, tr in zip(faces, tracks, strict=True):
            if not f.macro_fresh:  # frames since the face was last classified
                tr.state["macro_age"] += 1
            p = tr.state["macro_raw"]
            prev = tr.state.get("macro")
            smoothed = p.copy() if prev is None or a == 0 else a * prev + (1.0 - a) * p
            tr.state["macro"] = smoothed
            f.macro, f.macro_raw = smoothed, p
            if not macro.trained:
                f.untrained += ("macro",)

    def _classify_spotted(self, micro: Backend, faces: list[FaceResult], tracks: list) -> None:
        """Spot-then-recognise: each movement spotted on this frame is classified from the dynamic image of its own
        frames (onset to offset); the probabilities go into the event and become the face's micro result."""
        todo = []
        for i, (f, tr) in enumerate(zip(faces, tracks, strict=True)):
            history = tr.state.get("micro_history", ())
            for e in f.micro_events or ():
                frames = [c for idx, c in history if e["onset_frame"] <= idx <= e["offset_frame"]]
                if len(frames) >= 2:
                    todo.append((i, e, np.stack(frames)))
        if todo:
            with self.times.stage("micro"):
                dyn = np.stack([dynamic_image(frames) for _, _, frames in todo])
                room = self._micro_in[: len(todo)] if len(todo) <= len(self._micro_in) else None
                x = self.micro_pre.normalize(dyn, out=room)
                probs = softmax(micro.run_all(x).astype(np.float32, copy=True))
            for (i, e, _), p in zip(todo, probs, strict=True):
                e["micro"] = {c: round(float(v), 5) for c, v in zip(micro.classes, p, strict=True)}
                if not micro.trained:
                    e["untrained"] = True
                tracks[i].state["micro"] = p
                faces[i].micro_fresh = True
        self._show_micro(micro, faces, tracks)

    @staticmethod
    def _show_micro(micro: Backend, faces: list[FaceResult], tracks: list) -> None:
        """Every face shows its track's latest micro result, marked where the head is untrained."""
        for f, tr in zip(faces, tracks, strict=True):
            f.micro = tr.state.get("micro")
            if f.micro is not None and not micro.trained:
                f.untrained += ("micro",)

    def _classify_micro(self, micro: Backend, ready: list[int], faces: list[FaceResult], tracks: list) -> None:
        """Classify the dynamic image of each completed window; every face shows its track's latest window."""
        if ready:
            with self.times.stage("micro"):
                dyn = np.stack([tracks[i].state["ring"].dynamic_image() for i in ready])
                x = self.micro_pre.normalize(dyn, out=self._micro_in[: len(ready)])
                probs = softmax(micro.run_all(x).astype(np.float32, copy=True))
                for i, p in zip(ready, probs, strict=True):
                    tracks[i].state["micro"] = p
                    faces[i].micro_fresh = True
        self._show_micro(micro, faces, tracks)


@dataclass
class RunSummary:
    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0
    faces_classified: int = 0  # faces the macro model ran on (the others kept their last result: --macro-every)
    tracks: int = 0
    wall_s: float = 0.0
    labels: Counter = field(default_factory=Counter)
    micro_labels: Counter = field(default_factory=Counter)
    micro_events: int = 0  # spotted micro-movements (training-free spotting)
    error: str | None = None
    stages_ms: dict = field(default_factory=dict)
    skipped_files: list[str] = field(default_factory=list)  # image files that could not be read
    warnings: list[str] = field(default_factory=list)  # e.g. a video that ended before its announced length
    threads: ThreadPlan | None = None  # what each library was allowed
    providers: dict = field(default_factory=dict)  # where each stage ran (ONNX Runtime providers, in order)
    video_codec: str | None = None  # of --save-video (h264/vp9 play in browsers; mp4v/mjpeg do not)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def count(self, result: FrameResult) -> None:
        """One processed frame: its faces and their (trained) labels."""
        self.frames += 1
        if not result.faces:
            return
        self.frames_with_faces += 1
        self.faces += len(result.faces)
        for f in result.faces:
            self.faces_classified += f.macro_fresh
            if f.macro is not None and "macro" not in f.untrained:
                self.labels[result.class_name("macro", int(f.macro.argmax()))] += 1
            if f.micro_fresh and f.micro is not None and "micro" not in f.untrained:
                self.micro_labels[result.class_name("micro", int(np.argmax(f.micro)))] += 1
            self.micro_events += len(f.micro_events or ())

    def close(self, pipeline: Pipeline, source: Source, wall_s: float) -> None:
        """What is known once the run has stopped, however it stopped."""
        self.wall_s = wall_s
        self.tracks = pipeline.tracker.created
        self.stages_ms = pipeline.times.median_ms()
        self.threads = pipeline.thread_plan
        self.providers = pipeline.providers()
        self.skipped_files = [str(f) for f in getattr(source, "unreadable", [])]
        early = getattr(source, "stopped_early", lambda: None)()
        if early:
            self.warnings.append(early)

    def to_json(self) -> dict:
        return {
            "frames": self.frames,
            "frames_with_faces": self.frames_with_faces,
            "faces": self.faces,
            "faces_classified": self.faces_classified,
            "tracks": self.tracks,
            "fps": round(self.fps, 2),
            "macro_labels": dict(self.labels.most_common()),
            "micro_labels": dict(self.micro_labels.most_common()),
            "micro_events": self.micro_events,
            "stages_median_ms": {k: round(v, 3) for k, v in self.stages_ms.items()},
            "skipped_files": {"count": len(self.skipped_files), "files": self.skipped_files},
            "warnings": self.warnings,
            "threads": self.threads.to_dict() if self.threads else None,
            "providers": self.providers,
            "video_codec": self.video_codec,
            "error": self.error,
        }


class StopAtFrameEnd:
    """Ctrl-C and SIGTERM during a run finish the frame in hand, then stop (a second one stops at once), so
    the outputs end on a whole frame and the summary counts exactly what they hold. Main thread only;
    elsewhere signals are left alone."""

    def __init__(self):
        self.requested: int | None = None
        self._old: dict = {}

    def _handler(self, signum, frame):  # noqa: ARG002
        if self.requested is not None:  # the second signal: do not wait for the frame
            self.requested = None
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.requested = signum

    def __enter__(self):
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread
            self._old = {}
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def raise_if_requested(self) -> None:
        if self.requested is not None:
            raise Terminated if self.requested == signal.SIGTERM else KeyboardInterrupt


def run_pipeline(
    pipeline: Pipeline,
    source: Source,
    sinks=(),
    renderer=None,
    video=None,
    max_frames: int | None = None,
    on_frame=None,
) -> RunSummary:
    """Drive ``pipeline`` over ``source``. Sinks get every result; the renderer draws for ``video``/``on_frame``.

    ``on_frame(result, image)`` may return False to stop (the window's quit key); its optional attribute
    ``wants_image()`` says whether this frame's picture is wanted (``image`` is None when not).
    """
    from .reader import FILE_AHEAD, LIVE_AHEAD, FrameReader

    summary = RunSummary()
    start = time.perf_counter()
    # two stages on two cores: decode + detect, read ahead on a thread of its own, beside align ... sinks
    # an on_frame hook may say when it takes no picture (a live view nobody watches): no drawing then
    wants_image = getattr(on_frame, "wants_image", None) or (lambda: on_frame is not None)
    reader = FrameReader(source, pipeline.detect, LIVE_AHEAD if source.live else FILE_AHEAD, max_frames)
    stop = StopAtFrameEnd()
    try:
        with stop:
            while not stop.requested:
                item = reader.get()
                if item is None:
                    break
                frame, dec_ns, found, det_ns = item
                pipeline.times.add("decode", dec_ns)
                result = pipeline.process(frame, found, det_ns)
                for s in sinks:
                    s.write(result)
                image = None
                if renderer is not None and (video is not None or wants_image()):
                    with pipeline.times.stage("render"):
                        elapsed = time.perf_counter() - start
                        image = renderer.draw(
                            frame.image, result, fps=(summary.frames + 1) / elapsed if elapsed > 0 else 0.0
                        )
                        if video is not None:
                            video.write(image)
                summary.count(result)
                if on_frame is not None and on_frame(result, image) is False:
                    break
        stop.raise_if_requested()  # after the last whole frame: outputs and summary agree frame for frame
    except (UserError, KeyboardInterrupt, Terminated) as e:  # a lost source, Ctrl-C, SIGTERM
        if not isinstance(e, UserError):
            summary.error = "terminated" if isinstance(e, Terminated) else "interrupted"
        e.summary = summary  # type: ignore[union-attr]  # what was done before the stop, for the caller's report
        raise
    finally:
        reader.close()  # a read in flight finishes before the caller closes the source
        summary.close(pipeline, source, time.perf_counter() - start)
    return summary
