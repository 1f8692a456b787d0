"""Pipeline throughput against plain decoding of the same clip, measured in one run.

    .venv/bin/python benchmarks/pipeline_fps.py --source ../shared/media/single_face.mp4
    .venv/bin/python benchmarks/pipeline_fps.py --source ../shared/media/single_face.mp4 --frames 10000   # memory stays flat

Decoding alone is the ceiling any pipeline on this machine can reach, so the ratio
pipeline_fps / decode_fps is comparable across machines. The pipeline runs exactly what
``emonas-edge run`` runs by default (detect every frame, align, track, macro per frame, micro
dynamic image every 8 frames per face), with the untrained micro head switched on for timing
only. Rendering is off unless ``--render`` (``run`` renders only for --show/--save-video).
Prints a per-stage breakdown (median ms), peak RSS, RSS over time for long runs, and last:
``pipeline_fps=<x> decode_fps=<y> ratio=<x/y>``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emonas_edge.pipeline import PipelineSettings, build_pipeline  # noqa: E402
from emonas_edge.pipeline.loop import run_pipeline  # noqa: E402
from emonas_edge.pipeline.render import Renderer  # noqa: E402
from emonas_edge.pipeline.sources import Frame, Source, VideoFileSource  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def decode_fps(path: Path, min_seconds: float = 2.0) -> tuple[float, int]:
    frames, t0 = 0, time.perf_counter()
    while True:
        cap = cv2.VideoCapture(str(path))
        while True:
            ok, _ = cap.read()
            if not ok:
                break
            frames += 1
        cap.release()
        if time.perf_counter() - t0 >= min_seconds:
            break
    return frames / (time.perf_counter() - t0), frames


class LoopedVideo(Source):
    """The clip decoded again and again (decode cost included) until ``total`` frames."""

    def __init__(self, path: Path, total: int, rss_every: int = 0):
        self.path, self.total, self.rss_every = path, total, rss_every
        self.rss: list[tuple[int, float]] = []

    def __iter__(self):
        i = 0
        while i < self.total:
            with VideoFileSource(self.path) as src:
                for f in src:
                    if i >= self.total:
                        return
                    if self.rss_every and i % self.rss_every == 0:
                        self.rss.append((i, rss_mb()))
                    yield Frame(i, i / 30.0, f.image)
                    i += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, type=Path, help="video clip (640x360 single face for the target)")
    ap.add_argument("--frames", type=int, default=None, help="pipeline frames (default: the clip 5 times); loops the clip")
    ap.add_argument("--macro", default="emonas-macro")
    ap.add_argument("--micro", default="emonas-micro")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--detect-every", type=int, default=1)
    ap.add_argument("--render", action="store_true", help="draw the overlay too (as --show/--save-video do)")
    args = ap.parse_args()
    if not args.source.is_file():
        sys.exit(f"error: {args.source}: no such clip")

    cap = cv2.VideoCapture(str(args.source))
    n_clip = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    total = args.frames or 5 * max(n_clip, 1)
    print(f"clip {args.source} {w}x{h}, {n_clip} frames; cores {os.cpu_count()}; pipeline frames {total}")

    built = build_pipeline(args.macro, args.micro, allow_untrained=True, engine=args.engine,
                           settings=PipelineSettings(detect_every=args.detect_every))
    p = built.pipeline
    print(f"detector {p.detector.name}; macro {p.macro.path if p.macro else 'off'}; micro {p.micro.path if p.micro else 'off'}")
    # warm-up: first calls allocate arenas and pick kernels; not part of either figure
    run_pipeline(p, VideoFileSource(args.source), max_frames=10)
    p.times.ns.clear()
    p.frames = 0

    dfps, dframes = decode_fps(args.source)
    rss_before = rss_mb()
    src = LoopedVideo(args.source, total, rss_every=1000 if total >= 2000 else 0)
    s = run_pipeline(p, src, renderer=Renderer() if args.render else None, on_frame=(lambda r, i: True) if args.render else None)
    rss_after = rss_mb()
    pfps = s.frames / s.wall_s

    print(f"decode alone: {dframes} frames, {dfps:.0f} frames/s")
    print(f"pipeline: {s.frames} frames, faces in {s.frames_with_faces} ({100 * s.frames_with_faces / max(1, s.frames):.1f}%), "
          f"{s.tracks} track(s), {pfps:.1f} frames/s")
    med = p.times.median_ms()
    tot = p.times.total_ms()
    print("stage     median ms   share of wall time")
    for k in med:
        print(f"  {k:<8} {med[k]:9.3f}   {100 * tot[k] / (1000 * s.wall_s):5.1f}%")
    if src.rss:
        print("RSS MB by frame: " + ", ".join(f"{i}: {m:.0f}" for i, m in src.rss))
    print(f"rss_before_mb={rss_before:.0f} rss_after_mb={rss_after:.0f} peak_rss_mb={peak_rss_mb():.0f} tracks_evicted={p.tracker.evicted}")
    p.detector.close()
    print(f"pipeline_fps={pfps:.1f} decode_fps={dfps:.1f} ratio={pfps / dfps:.3f}")


if __name__ == "__main__":
    main()
