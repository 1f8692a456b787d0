"""Profiling models: size, cost, cold start and steady-state latency per backend, precision, batch, threads.

Figures measured wrongly are worse than none, so the method is fixed: load and first inference
are timed apart from steady state; steady state comes after warm-up, over a fixed number of
calls (or a fixed duration) with the one timer of :mod:`.timing`; inputs are real preprocessed
faces (the bundled astronaut face under small variations); outliers are reported, not dropped;
every report carries the environment, and on a Jetson the power mode and tegrastats samples.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError
from .timing import Timing, summarize, time_interleaved, time_samples

if TYPE_CHECKING:
    from ..runtime.backend import Backend

BACKENDS = ("ort", "torch", "trt")


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux >= 4.0: writing 5 to clear_refs resets VmHWM); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident memory since the last reset (else since it started)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _artifact(target: str, backend: str, precision: str, calib: str | None) -> tuple[str, Path | None]:
    """The file the backend will run, building the ONNX (and its precision) through the cache if needed."""
    from ..export.formats import format_of
    from ..resolve import source_kind
    from ..runtime.compiled import cached_onnx

    if backend == "trt":
        if format_of(target) != "engine":
            raise UserError(
                "--backend trt profiles TensorRT engines: build one with `emonas-edge export --format engine` "
                f"({target} is not one)"
            )
        return str(target), Path(target)
    kind = source_kind(target)
    if backend == "torch":
        if kind == "onnx":
            raise UserError(f"{target} is an ONNX file: profile it with --backend ort")
        if precision != "fp32":
            raise UserError("--backend torch profiles fp32 only; use --backend ort for fp16/int8")
        return str(target), None
    onnx_path = Path(target) if kind == "onnx" else cached_onnx(target)
    if precision == "fp32" or kind == "onnx":
        if kind == "onnx" and precision != "fp32":
            raise UserError(
                f"{target} is already an artifact; --precision applies to models given by name, genotype or checkpoint"
            )
        return str(onnx_path), onnx_path
    from ..export.formats import artifact_name
    from ..export.metadata import config_from_metadata, load_onnx, read_metadata
    from ..export.precision import derive_precision

    config = config_from_metadata(read_metadata(load_onnx(onnx_path)), str(onnx_path))
    if config is None:
        raise UserError(f"{onnx_path} has no emonas-edge config in its metadata: --precision cannot derive from it")
    derived = onnx_path.parent / artifact_name(config.name, "onnx", precision)
    if not derived.is_file():
        if precision == "int8" and calib is None:
            raise UserError("--precision int8 needs calibration faces: --calib DIR")
        derive_precision(onnx_path, config, precision, calib=calib, max_drop=100.0)
    return str(derived), derived


def _load(spec: str, backend: str, threads: int):
    from ..runtime.loader import load_backend

    return load_backend(spec, threads=threads, engine="torch" if backend == "torch" else "onnxruntime")


def time_artifacts(
    paths: dict[str, Path], x: np.ndarray, threads: int = 1, iters: int = 2000, warmup: int = 200
) -> dict[str, Timing]:
    """ONNX files timed interleaved on the same input, so all see the same machine state."""
    from ..runtime.ort_backend import OrtBackend

    runners = {k: OrtBackend(p, "cpu", threads) for k, p in paths.items()}
    return time_interleaved({k: _call(b, x) for k, b in runners.items()}, iters=iters, warmup=warmup)


def _call(backend: Backend, x: np.ndarray) -> Callable[[], object]:
    """``backend.run(x)`` as a call of no arguments, the form the timers take."""
    return lambda: backend.run(x)


def precision_timer(config, iters: int = 600) -> Callable[[dict[str, Path]], dict[str, float]]:
    """What ``--precision auto`` ranks its candidates by: p50 ms at batch 1 on one thread, on real faces."""

    def timer(paths: dict[str, Path]) -> dict[str, float]:
        x = _inputs(config, 1)
        return {k: t.p50_ms for k, t in time_artifacts(paths, x, threads=1, iters=iters).items()}

    return timer


def _inputs(config, batch: int) -> np.ndarray:
    from ..export.parity import parity_inputs

    faces, _ = parity_inputs(config, n=8)
    reps = -(-batch // len(faces))
    return np.ascontiguousarray(np.concatenate([faces] * reps)[:batch])


def _latency_ns(backend, x: np.ndarray, iters: int | None, duration: float | None) -> np.ndarray:
    """Steady-state latencies in ns: ``iters`` calls, or as many as fit in ``duration`` seconds."""
    if duration is None:
        if iters is None:
            raise UserError("give --iters or --duration: how long to time")
        return time_samples(lambda: backend.run(x), iters=iters, warmup=0)
    ns, clock, end = [], time.perf_counter_ns, time.perf_counter() + duration
    while time.perf_counter() < end:
        start = clock()
        backend.run(x)
        ns.append(clock() - start)
    return np.asarray(ns)


def _check_run(backend: str, batch: int, threads: int, warmup: int, iters: int | None, duration: float | None) -> None:
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r} (choose from: {', '.join(BACKENDS)})")
    if (
        batch < 1
        or threads < 1
        or warmup < 0
        or (iters is not None and iters < 1)
        or (duration is not None and duration <= 0)
    ):
        raise UserError("--batch, --threads and --iters must be >= 1, --warmup >= 0, --duration > 0")


def profile_one(
    target: str,
    *,
    backend: str = "ort",
    precision: str = "fp32",
    batch: int = 1,
    threads: int = 1,
    warmup: int = 100,
    iters: int | None = 1000,
    duration: float | None = None,
    calib: str | None = None,
    sampler=None,
) -> tuple[dict, np.ndarray]:
    """One profiled run: ``(its record, its latencies in ms)``."""
    from ..resolve import model_info

    _check_run(backend, batch, threads, warmup, iters, duration)
    spec, artifact = _artifact(target, backend, precision, calib)
    if artifact is not None and artifact.suffix == ".onnx":
        from ..export.metadata import graph_precision, load_onnx

        precision = graph_precision(load_onnx(artifact))  # what the file holds, not what the flag defaulted to
    own_window = reset_peak_rss()  # each row's peak, not the running maximum of every row before it
    t0 = time.perf_counter()
    b = _load(spec, backend, threads)
    t1 = time.perf_counter()
    if b.static_batch and b.static_batch != batch:
        raise UserError(f"{spec} has a fixed batch of {b.static_batch}; it cannot be profiled at batch {batch}")
    x = _inputs(b.config, batch)
    t1b = time.perf_counter()
    b.run(x)
    t2 = time.perf_counter()
    for _ in range(warmup):
        b.run(x)

    power = None
    if sampler:
        with sampler:
            ts = time.perf_counter()
            samples = _latency_ns(b, x, iters, duration)
            elapsed = time.perf_counter() - ts
        power = sampler.summary(elapsed, len(samples) * batch)
    else:
        samples = _latency_ns(b, x, iters, duration)
    timing = summarize(samples)
    info = model_info(spec) if backend != "trt" else {"params": None, "macs": None}
    run = {
        "target": str(target),
        "artifact": str(artifact) if artifact else None,
        "backend": b.name,
        "providers": getattr(b, "providers", None),
        "precision": precision,
        "batch": batch,
        "threads": threads,
        "params": info.get("params"),
        "macs": info.get("macs"),
        "file_bytes": artifact.stat().st_size if artifact and artifact.is_file() else None,
        "trained": b.trained,
        "cold_start_ms": {"load": round(1000 * (t1 - t0), 3), "first_inference": round(1000 * (t2 - t1b), 3)},
        "iters": timing.iters,
        "warmup": warmup,
        **{k: round(v, 5) for k, v in timing.to_dict().items() if k.endswith("_ms")},
        "throughput": round(batch * 1000.0 / timing.mean_ms, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_scope": "this run" if own_window else "process (running maximum)",
        "power": power,
    }
    try:
        import torch

        if backend != "ort" and torch.cuda.is_available():
            run["gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return run, samples / 1e6


def profile(
    targets: list[str],
    *,
    backends=("ort",),
    precisions=("fp32",),
    batches=(1,),
    threads=(1,),
    warmup: int = 100,
    iters: int | None = 1000,
    duration: float | None = None,
    calib: str | None = None,
) -> tuple[dict, list[np.ndarray]]:
    """All combinations: ``(report, per-run latencies in ms)``. The report's top level mirrors the
    first run (params, macs, p50_ms, ...) for scripts."""
    from ..environment import environment
    from .jetson import TegrastatsSampler, jetson_info

    if not targets:
        raise UserError("give at least one target to profile")
    jetson = jetson_info()
    runs, latencies, skipped = [], [], []
    for t in targets:
        for be in backends:
            for pr in precisions:
                if be == "torch" and pr != "fp32":
                    # a grid such as --backend ort,torch --precision fp32,int8 is still useful without this cell
                    skipped.append(
                        {
                            "target": str(t),
                            "backend": be,
                            "precision": pr,
                            "reason": "--backend torch profiles fp32 only",
                        }
                    )
                    continue
                for bs in batches:
                    for th in threads:
                        sampler = TegrastatsSampler() if jetson else None
                        run, lat = profile_one(
                            t,
                            backend=be,
                            precision=pr,
                            batch=bs,
                            threads=th,
                            warmup=warmup,
                            iters=iters,
                            duration=duration,
                            calib=calib,
                            sampler=sampler,
                        )
                        runs.append(run)
                        latencies.append(lat)
    if not runs:
        raise UserError(
            "nothing to profile: "
            + "; ".join(sorted({f"{r['backend']} {r['precision']}: {r['reason']}" for r in skipped}))
        )
    first = runs[0]
    env = environment()
    env["jetson"] = jetson
    return {
        **{k: first[k] for k in ("params", "macs", "p50_ms", "p90_ms", "p99_ms", "throughput")},
        "runs": runs,
        "skipped": skipped,
        "environment": env,
        "method": {
            "timer": "time.perf_counter_ns",
            "warmup": warmup,
            "iters": iters,
            "duration_s": duration,
            "inputs": "bundled astronaut face, 8 variants, preprocessed per the model's metadata",
            "outliers": "kept (see max_ms, p99_ms)",
        },
    }, latencies
