"""Pipeline throughput against plain decoding of the same clip, measured in one run.

    .venv/bin/python benchmarks/pipeline_fps.py --source ../shared/media/single_face.mp4
    # memory stays flat:
    .venv/bin/python benchmarks/pipeline_fps.py --source ../shared/media/single_face.mp4 --frames 10000

Decoding alone is the ceiling any pipeline on this machine can reach, so the ratio
pipeline_fps / decode_fps is comparable across machines. The pipeline runs exactly what
``emonas-edge run`` runs by default (detection every 5th-10th frame with optical flow between, align, track,
the macro model every few frames per face and whenever the face changed, training-free micro-expression
spotting, and the micro head on each spotted movement), with the untrained micro head switched on for timing only
(it runs only where a movement is spotted: rarely). The ceilings are measured in rounds taken in turn with the
pipeline's own (profile/pipeline.py), so the machine's drift moves them together.
Rendering is off unless ``--render`` (``run`` renders only for --show/--save-video).
Prints a per-stage breakdown (median ms), peak RSS, RSS over time for long runs, and last:
``pipeline_fps=<x> decode_fps=<y> detect_fps=<z> ratio=<x/y> detect_ratio=<x/z>``, where detect_fps is
decoding plus detecting every frame alone (the part no classifier can remove). Each stage is also timed
alone over the clip, so the table shows what the stages cost each other inside the pipeline.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

from emonas_edge.pipeline.loop import parse_detect_every, parse_macro_every
from emonas_edge.profile.pipeline import profile_pipeline
from emonas_edge.threads import ThreadPlan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, type=Path, help="video clip (640x360 single face for the target)")
    ap.add_argument(
        "--frames", type=int, default=None, help="pipeline frames (default: the clip 5 times); loops the clip"
    )
    ap.add_argument("--macro", default="emonas-macro")
    ap.add_argument("--micro", default="emonas-micro")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--detect-every", default="auto", help="k or auto (run's default; optical flow in between)")
    ap.add_argument(
        "--macro-every",
        default="auto",
        help="k or auto (run's default: at least every 3rd frame, and whenever the face's crop changed)",
    )
    ap.add_argument("--detector", default="auto", help="auto | mediapipe | mediapipe-full | haar")
    ap.add_argument("--render", action="store_true", help="draw the overlay too (as --show/--save-video do)")
    ap.add_argument("--threads", type=int, default=None, help="per library (default: as run decides)")
    args = ap.parse_args()
    if not args.source.is_file():
        sys.exit(f"error: {args.source}: no such clip")
    r = profile_pipeline(
        args.source,
        macro=args.macro,
        micro=args.micro,
        frames=args.frames,
        detect_every=parse_detect_every(args.detect_every),
        macro_every=parse_macro_every(args.macro_every),
        render=args.render,
        engine=args.engine,
        detector=args.detector,
        threads=args.threads,
    )
    w, h = r["frame_size"]
    st = r["settings"]
    print(
        f"clip {r['source']} {w}x{h}; cores {os.cpu_count()}; detector {st['detector']}; detect every "
        f"{st['detect_every']}; macro every {st['macro_every']} (ran on {100 * st['macro_classified']:.1f}% of faces); "
        f"render {st['render']}"
    )
    print(f"macro {st['macro']}; micro {st['micro']}")
    print(
        f"pipeline: {r['frames']} frames, faces in {r['frames_with_faces']} "
        f"({100 * r['frames_with_faces'] / max(1, r['frames']):.1f}%), "
        f"{r['tracks']} track(s), {r['fps']:.1f} frames/s; decode alone {r['decode_fps']:.0f} frames/s"
    )
    print(f"threads: {ThreadPlan(**st['threads']).describe()}")
    print("stage     median ms   alone ms   in/alone   p90 ms   share of wall time")
    for k, v in r["stages"].items():
        alone = v.get("alone_p50_ms")
        a, x = (f"{alone:8.3f}", f"{v['p50_ms'] / alone:8.2f}x") if alone else (f"{'':8}", f"{'':9}")
        print(f"  {k:<8} {v['p50_ms']:9.3f}   {a}  {x} {v['p90_ms']:8.3f}   {100 * v['share']:5.1f}%")
    if r["rss_mb"]["by_frame"]:
        print("RSS MB by frame: " + ", ".join(f"{i}: {m:.0f}" for i, m in r["rss_mb"]["by_frame"]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"rss_before_mb={r['rss_mb']['before']:.0f} rss_after_mb={r['rss_mb']['after']:.0f} peak_rss_mb={peak:.0f} "
        f"tracks_evicted={r['tracks_evicted']}"
    )
    print(
        f"pipeline_fps={r['fps']:.1f} decode_fps={r['decode_fps']:.1f} detect_fps={r['detect_fps']:.1f} "
        f"ratio={r['ratio']:.3f} detect_ratio={r['detect_ratio']:.3f}"
    )


if __name__ == "__main__":
    main()
