"""Does watching slow the pipeline? `run --serve` FPS with no viewer vs N concurrent viewers on loopback.

    .venv/bin/python benchmarks/serve_load.py [--viewers 20] [--frames 600] [--rounds 2] [--clip ...]

Each round runs ``emonas-edge run --serve 0 --loop --max-frames F`` twice, interleaved: once unwatched,
once with ``--viewers`` clients that each pull frames as fast as they can (the page's long poll) and
read the event stream. The figure is the run's own summary FPS; the ratio watched / unwatched is what
to compare (this VM drifts ~1.5x between runs). The issue's target: within 10% (ratio >= 0.90).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / ".venv" / "bin" / "emonas-edge"


def viewer(base: str, stop: threading.Event, counts: list[int], i: int) -> None:
    seq = 0
    events = urllib.request.urlopen(base + "/events", timeout=30) if i % 2 == 0 else None
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"{base}/frame.jpg?after={seq}", timeout=10) as r:
                if r.status == 200:
                    seq = int(r.headers["X-Seq"])
                    r.read()
                    counts[i] += 1
            if events is not None:
                events.readline()
        except OSError:
            return


def one_run(clip: str, frames: int, viewers: int, work: Path) -> tuple[float, list[int]]:
    summary = work / f"s{viewers}.json"
    cmd = [str(CLI), "run", "--source", clip, "--loop", "--max-frames", str(frames), "--micro", "none"]
    cmd += ["--serve", "0", "--summary-json", str(summary)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    base = ""
    for line in p.stdout:
        m = re.search(r"live view: (http://\S+)", line)
        if m:
            base = m.group(1).rstrip("/")
            break
    stop, counts = threading.Event(), [0] * viewers
    threads = [threading.Thread(target=viewer, args=(base, stop, counts, i), daemon=True) for i in range(viewers)]
    for t in threads:
        t.start()
    p.wait()
    stop.set()
    return json.loads(summary.read_text())["fps"], counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", default=str(REPO.parent / "shared" / "media" / "single_face.mp4"))
    ap.add_argument("--viewers", type=int, default=20)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    alone, watched, seen = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            alone.append(one_run(args.clip, args.frames, 0, Path(tmp))[0])
            fps, counts = one_run(args.clip, args.frames, args.viewers, Path(tmp))
            watched.append(fps)
            seen.append(statistics.median(counts))
            time.sleep(1)
    a, w = statistics.median(alone), statistics.median(watched)
    print(f"fps unwatched {a:.1f} (runs {', '.join(f'{v:.1f}' for v in alone)})")
    print(f"fps with {args.viewers} viewers {w:.1f} (runs {', '.join(f'{v:.1f}' for v in watched)})")
    print(f"frames each viewer received (median) {statistics.median(seen):.0f} of {args.frames}")
    print(f"ratio watched/unwatched {w / a:.2f} (target >= 0.90)")


if __name__ == "__main__":
    main()
