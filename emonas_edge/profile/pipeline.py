"""Profiling the whole pipeline on a clip: per-stage percentiles, end-to-end FPS, and the decode ceiling.

Decoding the clip alone is the most any pipeline can do on this machine, so FPS is also given
as a ratio to it, which travels across machines. The pipeline runs as ``emonas-edge run`` does
by default; untrained heads are switched on for timing only (their outputs are not reported).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np

from ..errors import UserError
from ..pipeline.loop import STAGES
from ..pipeline.sources import Frame, Source, VideoFileSource
from ..pipeline.track import Track


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return float("nan")


def decode_fps(path: Path, min_seconds: float = 2.0, detector=None) -> tuple[float, int]:
    """Frames/s of decoding the clip alone, or of decoding and detecting every frame with ``detector``
    (the part of the pipeline no classifier can remove: its ceiling with detection on every frame)."""
    frames, t0 = 0, time.perf_counter()
    while True:
        cap = cv2.VideoCapture(str(path))
        while True:
            ok, image = cap.read()
            if not ok:
                break
            if detector is not None:
                detector.detect(image)
            frames += 1
        cap.release()
        if time.perf_counter() - t0 >= min_seconds or frames == 0:
            break
    return frames / (time.perf_counter() - t0), frames


def stages_alone(pipeline, path: Path, frames: int = 120) -> dict[str, float]:
    """Median ms of detect, align and macro each run alone over the clip's first ``frames`` frames (one
    stage at a time, no other thread busy), to set against the same stage inside the pipeline: the
    difference is what the stages cost each other (thread pools, caches, the GIL)."""
    images = []
    with VideoFileSource(path) as src:
        for f in src:
            images.append(f)
            if len(images) >= frames:
                break

    def median_ms(fn, items) -> float:
        ns = []
        for item in items:
            t0 = time.perf_counter_ns()
            fn(item)
            ns.append(time.perf_counter_ns() - t0)
        return float(np.median(ns)) / 1e6 if ns else 0.0

    found = [(f, pipeline._select(pipeline.detector.detect(f.image))) for f in images]
    with_faces = [(f, d) for f, d in found if d]
    out = {"detect": median_ms(lambda f: pipeline.detector.detect(f.image), images)}
    if pipeline.macro is not None and with_faces:
        scratch = [Track(i, with_faces[0][1][0]) for i in range(pipeline.settings.max_faces)]
        out["align"] = median_ms(lambda fd: pipeline._align_all(fd[0], fd[1], scratch[: len(fd[1])]), with_faces)
        crops = [pipeline._macro_input(f, d).copy() for f, d in with_faces]
        out["macro"] = median_ms(lambda x: pipeline.macro.run_all(x), crops)
    return out


class LoopedVideo(Source):
    """The clip decoded again and again (decoding included in the timing) until ``total`` frames."""

    kind = "video"

    def __init__(self, path: Path, total: int, rss_every: int = 0, start: int = 0):
        self.path, self.total, self.rss_every, self.start = path, total, rss_every, start
        self.rss: list[tuple[int, float]] = []

    def __iter__(self):
        i, end = self.start, self.start + self.total  # numbered on from ``start`` (a later round)
        while i < end:
            with VideoFileSource(self.path) as src:
                for f in src:
                    if i >= end:
                        return
                    if self.rss_every and i % self.rss_every == 0:
                        self.rss.append((i, rss_mb()))
                    yield Frame(i, i / 30.0, f.image)
                    i += 1


def _stage_percentiles(ns_by_stage: dict[str, list[int]], wall_s: float) -> dict[str, dict]:
    """Per stage that ran: calls, p50/p90/p99/max in ms, and its share of the wall time."""
    stages = {}
    for k in STAGES:
        ns = ns_by_stage.get(k)
        if ns:
            ms = np.asarray(ns) / 1e6
            p50, p90, p99 = np.percentile(ms, [50, 90, 99])
            stages[k] = {
                "calls": len(ms),
                "p50_ms": round(float(p50), 4),
                "p90_ms": round(float(p90), 4),
                "p99_ms": round(float(p99), 4),
                "max_ms": round(float(ms.max()), 4),
                "share": round(float(ms.sum()) / (1000 * wall_s), 4),
            }
    return stages


ROUNDS = 5  # decode alone, decode + detect alone and the pipeline, taken in turn this many times


def _rounds(p, path: Path, total: int, render: bool) -> dict:
    """The pipeline's frames split into ``ROUNDS`` runs, each after half a second of decoding alone and of
    decoding + detecting alone: this VM's speed drifts by up to 1.5x within a minute, and a ceiling measured only before
    the pipeline put ratios of one clip anywhere from 0.20 to 0.27 (measured); taken in turn, drift moves
    the ceilings and the pipeline together. The stage times accumulate over all rounds."""
    from ..pipeline.loop import RunSummary, run_pipeline
    from ..pipeline.render import Renderer

    summary, rss = RunSummary(), []
    dec, det = [0, 0.0], [0, 0.0]  # frames, seconds
    done = 0
    for r in range(ROUNDS):
        n = (total - done) // (ROUNDS - r)
        for acc, detector in ((dec, None), (det, p.detector)):
            fps, frames = decode_fps(path, min_seconds=0.5, detector=detector)
            acc[0], acc[1] = acc[0] + frames, acc[1] + frames / fps
        if n < 1:
            continue
        src = LoopedVideo(path, n, rss_every=1000 if total >= 2000 else 0, start=done)
        part = run_pipeline(
            p, src, renderer=Renderer() if render else None, on_frame=(lambda r, i: True) if render else None
        )
        for k in ("frames", "frames_with_faces", "faces", "faces_classified", "wall_s"):
            setattr(summary, k, getattr(summary, k) + getattr(part, k))
        summary.tracks = part.tracks
        rss += src.rss
        done += n
    return {"summary": summary, "rss": rss, "decode_fps": dec[0] / dec[1], "detect_fps": det[0] / det[1]}


def profile_pipeline(
    source: str | os.PathLike,
    *,
    macro="emonas-macro",
    micro="emonas-micro",
    frames: int | None = None,
    detect_every: int | str = "auto",
    macro_every: int | str = "auto",
    render: bool = False,
    engine: str = "auto",
    detector: str = "auto",
    threads: int | None = None,
    max_faces: int = 8,
) -> dict:
    from ..environment import environment
    from ..pipeline import PipelineSettings, build_pipeline
    from ..pipeline.loop import run_pipeline

    path = Path(source)
    if not path.is_file():
        raise UserError(f"{source}: no such clip (profile-pipeline takes a video file)")
    probe = VideoFileSource(path)  # raises a UserError for undecodable files
    n_clip = probe.frame_count or 0
    h, w = probe._first.shape[:2]
    probe.close()
    total = frames or 5 * max(n_clip, 1)
    if total < 1:
        raise UserError(f"--frames must be at least 1, got {frames}")
    built = build_pipeline(
        macro,
        micro,
        allow_untrained=True,
        engine=engine,
        detector=detector,
        threads=threads,
        settings=PipelineSettings(detect_every=detect_every, max_faces=max_faces, macro_every=macro_every),
    )
    p = built.pipeline
    try:
        # warm-up, one pass of the clip: arenas, kernels, and every per-track buffer at its steady size (the first
        # 10 frames alone left the first measured round ~15% slower than the others)
        run_pipeline(p, VideoFileSource(path), max_frames=max(10, min(n_clip, 100)))
        p.times.ns.clear()
        p.frames = 0
        alone = stages_alone(p, path)
        rss0 = rss_mb()
        rounds = _rounds(p, path, total, render)
        summary = rounds["summary"]
        dfps, detfps = rounds["decode_fps"], rounds["detect_fps"]
        stages = _stage_percentiles(p.times.ns, summary.wall_s)
        for k, ms in alone.items():
            if k in stages:
                stages[k]["alone_p50_ms"] = round(ms, 4)
        fps = summary.frames / summary.wall_s
        return {
            "source": str(source),
            "frame_size": [w, h],
            "frames": summary.frames,
            "frames_with_faces": summary.frames_with_faces,
            "tracks": summary.tracks,
            "fps": round(fps, 2),
            "decode_fps": round(dfps, 2),
            "detect_fps": round(detfps, 2),
            "ratio": round(fps / dfps, 4),
            "detect_ratio": round(fps / detfps, 4),
            "stages": stages,
            "settings": {
                "detect_every": detect_every,
                "macro_every": macro_every,
                "macro_classified": round(summary.faces_classified / max(1, summary.faces), 4),
                "render": render,
                "detector": p.detector.name,
                "threads": built.threads.to_dict() if built.threads else None,
                "providers": p.providers(),
                "macro": p.macro.path if p.macro else None,
                "micro": p.micro.path if p.micro else None,
            },
            "rss_mb": {"before": round(rss0, 1), "after": round(rss_mb(), 1), "by_frame": rounds["rss"]},
            "tracks_evicted": p.tracker.evicted,
            "environment": environment(),
        }
    finally:
        p.detector.close()
