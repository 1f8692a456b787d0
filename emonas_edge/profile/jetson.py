"""Board state and power on NVIDIA Jetson, so a latency figure can carry an energy figure.

On a Jetson the same model's speed and energy depend on the power mode (nvpmodel) and on
whether ``jetson_clocks`` pinned the clocks, so both are recorded next to every measurement.
Power comes from ``tegrastats`` because it ships with every L4T release and needs no extra
package. Its line has changed across releases (JetPack 4 ``POM_5V_IN 2150/2150``, JetPack 5/6
``VDD_IN 5010mW/5010mW``, a leading date on newer releases, GPU as ``0%@76`` or ``0%@[305,305]``),
so it is read token by token and anything unknown is ignored.

Total power is the module's input rail where tegrastats reports one: ``VDD_IN`` (TX1, TX2,
Xavier NX, Orin NX, Orin Nano), ``POM_5V_IN`` (Nano), ``VIN`` (Thor). AGX Xavier
(GPU CPU SOC CV VDDRQ SYS5V) and AGX Orin (VDD_GPU_SOC VDD_CPU_CV VIN_SYS_5V0 VDDQ_VDD2_1V8AO)
have no input rail, so their total is the sum of the rails, leaving out the unconnected ``NC``
channels, the way jetson-stats does. ``SYS5V`` and ``VIN_SYS_5V0`` supply only part of those boards,
so the parser never uses either one alone as the total. No figure includes the carrier board.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from emonas_edge.errors import UserError

INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")

_RELEASE = re.compile(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")
_TIMESTAMP = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%")  # AGX Orin on JetPack 5.1 also printed GR3D2_FREQ: not read
# "NAME cur/avg" (JetPack 4, mW implied) or "NAME curmW/avgmW"; RAM/SWAP/IRAM end in MB/kB and never match.
_RAIL = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?!\S)")
_MODE = re.compile(r"NV Power Mode:\s*(\S+)")


def parse_l4t_release(text: str | None) -> str | None:
    """``# R35 (release), REVISION: 4.1, ...`` -> ``"35.4.1"``."""
    m = _RELEASE.search(text or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def parse_nvpmodel(text: str | None) -> dict | None:
    """``nvpmodel -q`` prints the mode name, then its id on the next line."""
    lines = [line.strip() for line in (text or "").splitlines()]
    for i, line in enumerate(lines):
        m = _MODE.search(line)
        if m:
            ids = [s for s in lines[i + 1 :] if s.isdigit()]
            return {"name": m.group(1), "id": int(ids[0]) if ids else None}
    return None


def parse_jetson_clocks(text: str | None) -> bool | None:
    """``jetson_clocks --show``: pinned when every online CPU and the GPU have MinFreq == MaxFreq."""
    pinned = []
    for line in (text or "").splitlines():
        s = line.strip()
        if not (s.startswith("cpu") or s.startswith("GPU ")) or "Online=0" in s:
            continue
        lo, hi = re.search(r"MinFreq=(\d+)", s), re.search(r"MaxFreq=(\d+)", s)
        if lo and hi:
            pinned.append(lo.group(1) == hi.group(1))
    return all(pinned) if pinned else None


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _run_tool(cmd: list[str]) -> str | None:
    """Stdout of a JetPack tool, or None when it is absent, fails (e.g. needs root) or hangs."""
    # nvpmodel lives in /usr/sbin, which is often not on a user's PATH
    exe = shutil.which(cmd[0]) or shutil.which(cmd[0], path="/usr/sbin:/usr/bin")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def jetson_info(root: str | os.PathLike = "/", run: Callable[[list[str]], str | None] | None = None) -> dict | None:
    """``{"model", "l4t", "nvpmodel", "jetson_clocks"}`` for a Jetson, None for anything else.

    Files are read under ``root``. The tools run only against the live system (``root`` is "/")
    unless ``run`` is given; a missing tool or a permission error gives None for its field.
    """
    base = Path(root)
    release = _read(base / "etc/nv_tegra_release")
    model = _read(base / "proc/device-tree/model") or _read(base / "sys/firmware/devicetree/base/model")
    if release is None and "jetson" not in (model or "").lower():
        return None
    if run is None:
        run = _run_tool if base.resolve() == Path("/").resolve() else (lambda cmd: None)
    return {
        "model": model or None,
        "l4t": parse_l4t_release(release),
        "nvpmodel": parse_nvpmodel(run(["nvpmodel", "-q"])),
        "jetson_clocks": parse_jetson_clocks(run(["jetson_clocks", "--show"])),
    }


def is_jetson(root: str | os.PathLike = "/") -> bool:
    return jetson_info(root, run=lambda cmd: None) is not None


def _core(entry: str) -> int | None:
    m = re.match(r"\s*(\d+)%", entry)
    return int(m.group(1)) if m else None  # "off": core powered down


def total_power(rails: dict[str, int]) -> tuple[int | None, str | None]:
    """(mW, source): the input rail if reported, else ("sum") all rails but NC. See module doc."""
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name], name
    values = [mw for name, mw in rails.items() if name != "NC"]
    return (sum(values), "sum") if values else (None, None)


def parse_tegrastats_line(line: str) -> dict:
    text = line.strip()
    stamp = _TIMESTAMP.match(text)
    ram = _RAM.search(text)
    if ram is None:
        raise ValueError(f"not a tegrastats line (no RAM field): {text[:80]!r}")
    cpu = _CPU.search(text)
    gpu = _GR3D.search(text)
    rails = {name: int(cur) for name, cur, _avg in _RAIL.findall(text)}
    total, source = total_power(rails)
    return {
        "timestamp": stamp.group(1) if stamp else None,
        "ram_used_mb": int(ram.group(1)),
        "ram_total_mb": int(ram.group(2)),
        "cpu_util": [_core(c) for c in cpu.group(1).split(",")] if cpu else [],
        "gpu_util": int(gpu.group(1)) if gpu else None,
        "rails": rails,
        "total_power_mw": total,
        "power_source": source,
    }


class TegrastatsSampler:
    """Runs tegrastats for the length of a ``with`` block; ``samples`` holds (monotonic s, parsed line)."""

    def __init__(
        self,
        interval_ms: int = 100,
        path: str = "tegrastats",
        command: list[str] | None = None,
        stop_timeout_s: float = 2.0,
    ):
        self.command = list(command) if command else [path, "--interval", str(int(interval_ms))]
        self.stop_timeout_s = stop_timeout_s
        self.samples: list[tuple[float, dict]] = []
        self.skipped = 0  # lines without a RAM field (blank lines, warnings)
        self.window_s: float | None = None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TegrastatsSampler:
        exe = shutil.which(self.command[0])
        if exe is None:
            raise UserError(
                f"tegrastats not found: {self.command[0]!r} is not an executable on PATH "
                "(power can be measured only on an NVIDIA Jetson)"
            )
        try:
            proc = subprocess.Popen(
                [exe, *self.command[1:]], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
            )
        except OSError as e:
            raise UserError(f"tegrastats not found: cannot start {exe!r} ({e.strerror or e})") from e
        assert proc.stdout is not None  # stdout=PIPE
        self._started = time.monotonic()
        self._proc = proc
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            now = time.monotonic()
            try:
                self.samples.append((now, parse_tegrastats_line(line)))
            except ValueError:
                self.skipped += 1

    def __exit__(self, *exc) -> None:
        proc, thread = self._proc, self._thread
        assert proc is not None and proc.stdout is not None and thread is not None, "__exit__ without __enter__"
        self.window_s = time.monotonic() - self._started
        proc.terminate()
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        thread.join(timeout=self.stop_timeout_s)
        if not thread.is_alive():
            proc.stdout.close()

    def summary(self, duration_s: float, inferences: int) -> dict:
        """Averages over the samples; energy = average power x ``duration_s`` (the timed run).

        Power is the mean of tegrastats' instantaneous readings, so it assumes evenly spaced
        samples; with no power sample the power and energy fields are None.
        """
        if duration_s <= 0 or inferences <= 0:
            raise ValueError(f"duration_s and inferences must be positive, got {duration_s} and {inferences}")
        parsed = [s for _, s in self.samples]
        powers = [s["total_power_mw"] for s in parsed if s["total_power_mw"] is not None]
        gpu = [s["gpu_util"] for s in parsed if s["gpu_util"] is not None]
        avg_mw = sum(powers) / len(powers) if powers else None
        energy_j = avg_mw / 1000.0 * duration_s if avg_mw is not None else None
        sources = sorted({s["power_source"] for s in parsed if s["power_source"]})
        return {
            "samples": len(parsed),
            "power_samples": len(powers),
            "power_source": ",".join(sources) or None,
            "avg_power_mw": avg_mw,
            "energy_j": energy_j,
            "energy_per_inference_mj": energy_j * 1000.0 / inferences if energy_j is not None else None,
            "avg_gpu_util": sum(gpu) / len(gpu) if gpu else None,
            "peak_ram_mb": max((s["ram_used_mb"] for s in parsed), default=None),
            "duration_s": duration_s,
            "inferences": inferences,
        }
