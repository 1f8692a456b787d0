"""What each added face costs: the pipeline on clips with 1, 4 and 9 moving faces, measured in one run.

    .venv/bin/python benchmarks/many_faces.py [--faces 1,4,9] [--frames 270] [--macro emonas-macro]

The clips are assembled from the real photos and clip in ../shared/media (profile/clips.py): a 3x3 grid at
1280x720, each face tile a real face that moves, the other tiles a real clip without faces, so every clip
has the same frame size and background. Faces this small in a 1280x720 frame need the full-range BlazeFace
(``--detector mediapipe-full``); the pipeline otherwise runs as ``run`` does (detection every 5th-10th frame,
optical flow between, the macro model on the faces due on each frame in one batch, the untrained micro head on
for timing); ``--macro-every 1`` classifies every face on every frame, the harder case. Prints frames/s and ms
per frame per clip, per-stage medians, and last the cost of each added face (least-squares slope of ms per frame
over faces) against the macro model's batch-1 latency, timed in the same run:
``ms_per_face=<x> macro_batch1_ms=<y> ratio=<x/y>`` (target: ratio <= 1).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from emonas_edge.profile.clips import grid_clip
from emonas_edge.profile.pipeline import profile_pipeline

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def batch1_ms(backend, x: np.ndarray, iters: int = 300) -> float:
    for _ in range(30):
        backend.run_all(x)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        backend.run_all(x)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", default="1,4,9")
    ap.add_argument("--frames", type=int, default=270, help="pipeline frames per clip (the 90-frame clip loops)")
    ap.add_argument("--macro", default="emonas-macro")
    ap.add_argument("--micro", default="emonas-micro")
    ap.add_argument("--detect-every", default="auto")
    ap.add_argument("--macro-every", default="auto", help="auto (run's default) or k; 1: every face on every frame")
    args = ap.parse_args()
    counts = [int(v) for v in args.faces.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            clip = grid_clip(MEDIA, Path(tmp) / f"faces{n}.mp4", faces=n)
            r = profile_pipeline(
                clip,
                macro=args.macro,
                micro=args.micro,
                frames=args.frames,
                detector="mediapipe-full",
                max_faces=9,
                detect_every=args.detect_every if args.detect_every == "auto" else int(args.detect_every),
                macro_every=args.macro_every if args.macro_every == "auto" else int(args.macro_every),
            )
            rows.append((n, r))
            ms = 1000.0 / r["fps"]
            stages = ", ".join(f"{k} {v['p50_ms']:.2f}" for k, v in r["stages"].items())
            ran = 100 * r["settings"]["macro_classified"]
            print(
                f"{n} face(s): {r['fps']:.1f} frames/s, {ms:.2f} ms/frame, tracks {r['tracks']}, macro model on "
                f"{ran:.0f}% of faces; median ms: {stages}"
            )
    from emonas_edge.runtime import load_backend

    macro = load_backend(args.macro, threads=1, engine="auto", spinning=False)
    x = np.random.default_rng(0).standard_normal((1, *macro.config.input_shape)).astype(np.float32)
    b1 = batch1_ms(macro, x)
    ns = np.array([n for n, _ in rows], float)
    ms = np.array([1000.0 / r["fps"] for _, r in rows])
    slope = float(np.polyfit(ns, ms, 1)[0]) if len(ns) > 1 else float("nan")
    print(f"ms_per_face={slope:.3f} macro_batch1_ms={b1:.3f} ratio={slope / b1:.2f}")


if __name__ == "__main__":
    main()
