"""What the runtime install saves on a device: installed size, cold start of `run`, pipeline memory.

    .venv/bin/python benchmarks/install_footprint.py [--clip ../shared/media/single_face.mp4] [--repeats 3]
        [--variants base,mediapipe,full] [--keep DIR]

Builds the wheel from a copy of the sources, installs it into one clean virtualenv per variant (``base``: the
runtime, no PyTorch; ``mediapipe``: plus the BlazeFace detector; ``full``: ``[train,mediapipe]``, i.e. with
PyTorch), then per variant: the size of site-packages; the cold start of ``emonas-edge run --max-frames 1``
(a fresh process each time, cache warm, median of ``--repeats``: process start, imports, model and detector
load, one frame); and the peak RSS of ``emonas-edge run`` over the whole clip (from the kernel's accounting of
the child, ``wait4``). Ratios are against ``full`` measured in the same run (this VM's speed drifts between
runs). pip installs from whatever index pip is configured with.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "THIRD_PARTY_NOTICES.md", "emonas_edge", "models"]
EXTRAS = {"base": "", "mediapipe": "[mediapipe]", "full": "[train,mediapipe]"}


def build_wheel(work: Path) -> Path:
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(work)]
    subprocess.run(cmd, check=True)
    return next(work.glob("emonas_edge-*.whl"))


def install(wheel: Path, venv: Path, variant: str) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}{EXTRAS[variant]}"], check=True)


def site_packages_mb(venv: Path) -> float:
    (sp,) = venv.glob("lib/python*/site-packages")
    return sum(f.stat().st_size for f in sp.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def run_child(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one child process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr.read().decode() if p.stderr else ''}")
    return wall, usage.ru_maxrss / 1024


def measure(venv: Path, clip: str, repeats: int, work: Path) -> dict:
    env = {**os.environ, "EMONAS_EDGE_CACHE": str(work / f"cache-{venv.name}"), "NO_COLOR": "1"}
    exe = str(venv / "bin" / "emonas-edge")
    one = [exe, "run", "--source", clip, "--max-frames", "1", "--jsonl", str(work / "one.jsonl")]
    run_child(one, env)  # fills the cache (the shipped ONNX copied in), as any first use does
    starts = [run_child(one, env)[0] for _ in range(repeats)]
    _, rss = run_child([exe, "run", "--source", clip, "--jsonl", str(work / "all.jsonl")], env)
    return {"site_mb": site_packages_mb(venv), "cold_s": statistics.median(starts), "rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", default=str(REPO.parent / "shared" / "media" / "single_face.mp4"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="base,mediapipe,full")
    ap.add_argument("--keep", help="Work folder to keep (default: a temporary one, removed).")
    args = ap.parse_args()
    variants = args.variants.split(",")
    work = Path(args.keep or tempfile.mkdtemp(prefix="footprint-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        wheel = build_wheel(work)
        rows = {}
        for v in variants:
            install(wheel, work / v, v)
            rows[v] = measure(work / v, args.clip, args.repeats, work)
        ref = rows.get("full")
        print(f"{'variant':<10} {'site-packages MB':>17} {'cold start s':>13} {'run peak RSS MB':>16}")
        for v, r in rows.items():
            ratio = (
                f"  (x full: size {r['site_mb'] / ref['site_mb']:.2f}, start {r['cold_s'] / ref['cold_s']:.2f}, "
                f"RSS {r['rss_mb'] / ref['rss_mb']:.2f})"
                if ref and v != "full"
                else ""
            )
            print(f"{v:<10} {r['site_mb']:>17.0f} {r['cold_s']:>13.2f} {r['rss_mb']:>16.0f}{ratio}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
