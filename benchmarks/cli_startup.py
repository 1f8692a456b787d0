"""Start-up time of the CLI's quick commands (issue #34): ``--help``, ``ops``, ``models`` <= 0.5 s and
``info <onnx>`` <= 1.5 s wall time on this machine.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 7] [--onnx models/emonas-macro.onnx]

Each command runs as a fresh process (what a user waits for), ``--repeats`` times after one untimed run that
warms the file cache; the median is printed with the target and, because this VM's speed drifts between runs,
the ratio to the floor measured in the same run: a bare interpreter that imports typer (no command can start
faster than that). The last line holds every figure: ``help=… ops=… models=… info=… floor=…`` (seconds).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "emonas-edge"
TARGETS = {"help": 0.5, "ops": 0.5, "models": 0.5, "info": 1.5}


def wall(cmd: list[str], repeats: int) -> float:
    subprocess.run(cmd, check=True, capture_output=True)  # warm the file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--onnx", default=str(REPO / "models" / "emonas-macro.onnx"))
    args = ap.parse_args()
    commands = {
        "help": [str(CLI), "--help"],
        "ops": [str(CLI), "ops"],
        "models": [str(CLI), "models"],
        "info": [str(CLI), "info", args.onnx],
    }
    floor = wall([sys.executable, "-c", "import typer"], args.repeats)
    figures = {}
    for name, cmd in commands.items():
        figures[name] = wall(cmd, args.repeats)
        met = "met" if figures[name] <= TARGETS[name] else "NOT met"
        ratio = figures[name] / floor
        print(f"{name:7s} {figures[name]:.3f} s (target {TARGETS[name]} s: {met}); {ratio:.2f}x the floor", flush=True)
    print(f"floor   {floor:.3f} s (python -c 'import typer')")
    print(" ".join(f"{k}={v:.3f}" for k, v in {**figures, "floor": floor}.items()))


if __name__ == "__main__":
    main()
