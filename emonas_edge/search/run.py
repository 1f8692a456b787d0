"""``search``: a dataset and a latency table in, a run folder and ``best.json`` out.

Everything that can be wrong with the inputs (the data, the op list, the table, the budget) is
checked before the run folder exists, so a refused search leaves nothing behind. The derived
genotype is an ordinary genotype file: ``export --genotype best.json`` takes it unchanged, and
its ``meta.search`` record says how it was found.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ModelConfig
from ..data.preprocess import Preprocessor
from ..errors import UserError
from ..fileio import (
    check_output_paths,
    check_writable_location,
    read_text_limited,
    sha256_file,
    write_json_atomic,
)
from ..genotype import OP_NAMES, Genotype
from .arch import ArchParams, ExpectedLatency
from .engine import CHECKPOINT, HISTORY, Searcher, SearchSettings, epochs_within_budget, probe_seconds
from .lut import LatencyTable, load_lut
from .space import SearchSpace


@dataclass
class SearchJob:
    """What to search on and where to write: the data side of a search (settings hold the method)."""

    data: str
    lut: str
    task: str = "macro"
    annotations: str | None = None  # micro: the clip annotation CSV (then ``data`` is the frames folder)
    ops: tuple[str, ...] | None = None  # a subset of the table's ops
    out: str | None = None  # best.json (default: <run>/best.json)
    run_dir: str | None = None  # default: runs/search/search, search2, ...
    resume: str | None = None


def _space(table: LatencyTable, job: SearchJob) -> SearchSpace:
    sp = table.space
    if job.task != sp.task:
        raise UserError(
            f"{job.lut} was built for task {sp.task!r}, not {job.task!r}: build a table with --task {job.task}"
        )
    ops = sp.ops
    if job.ops is not None:
        unknown = [op for op in job.ops if op not in OP_NAMES or op == "none"]
        if unknown:
            raise UserError(
                f"unknown operation(s) {', '.join(map(repr, unknown))} in --ops; known: "
                f"{', '.join(o for o in OP_NAMES if o != 'none')}"
            )
        outside = [op for op in job.ops if op not in sp.ops]
        if outside:
            raise UserError(
                f"operation(s) {', '.join(map(repr, outside))} are not in {job.lut}'s search space "
                f"({', '.join(sp.ops)})"
            )
        ops = tuple(dict.fromkeys(job.ops))
    return dataclasses.replace(sp, ops=ops)


def _data_config(space: SearchSpace) -> ModelConfig:
    from .space import genotype_of

    g = genotype_of([(space.ops[0], 0)] * 2 * space.nodes, [(space.ops[0], 0)] * 2 * space.nodes, space.nodes)
    return space.config(g, space.widths[0], space.depths[0])


def load_search_data(job: SearchJob, space: SearchSpace):
    config = _data_config(space)
    if job.task == "micro":
        if not job.annotations:
            raise UserError(
                "--task micro needs --annotations (the clip annotation CSV; --data is then the frames folder)"
            )
        from ..data.micro import load_micro_dataset

        ds, _ = load_micro_dataset(job.data, job.annotations, config)
    else:
        if job.annotations:
            raise UserError("--annotations is for --task micro")
        if not Path(job.data).exists():
            raise UserError(f"dataset not found: {job.data}")
        from ..data.datasets import load_dataset

        ds = load_dataset(job.data, config)
    return ds, Preprocessor(config)


def next_run_dir(root: Path = Path("runs/search"), name: str = "search") -> Path:
    n = 1
    while (root / (name if n == 1 else f"{name}{n}")).exists():
        n += 1
    return root / (name if n == 1 else f"{name}{n}")


def derive(
    arch: ArchParams, latency: ExpectedLatency, target_ms: float | None, size: tuple[int, int] | None = None
) -> tuple[Genotype, int, int, float, bool]:
    """The most likely cells; without a target, at the most likely width and depth; with one, at the
    largest (width, depth) whose prediction meets it (the cheapest one if none does).

    A weight-sharing supernet does not rank sizes fairly: the first channels and the first cells of
    every stage are trained on every step and the rest only when sampled, so small sizes look best
    to it. Measured on FER2013 (12 epochs, target 0.45 ms): supernet accuracy 25%, the most likely
    size the smallest of all (16 channels, one cell per stage, 0.14 ms). Under a budget the search
    decides the cells and the budget decides the size, as in compound scaling."""
    genotype, width, depth = arch.argmax()
    if target_ms is None:
        width, depth = size or (width, depth)  # searched at one size: derived at it
        return genotype, width, depth, latency.of(genotype, width, depth), True
    sp = arch.space
    with torch.no_grad():
        p = arch.probs()
    prob = {
        (w, d): float(p["width"][i] * p["depth"][j]) for i, w in enumerate(sp.widths) for j, d in enumerate(sp.depths)
    }
    costs = {wd: latency.of(genotype, *wd) for wd in prob}
    fits = [wd for wd in costs if costs[wd] <= target_ms]
    if fits:
        w, d = max(fits, key=lambda wd: (costs[wd], prob[wd]))
        return genotype, w, d, costs[(w, d)], True
    w, d = min(costs, key=lambda wd: costs[wd])
    return genotype, w, d, costs[(w, d)], False


def _settings_from(run: dict) -> SearchSettings:
    known = {f.name for f in dataclasses.fields(SearchSettings)}
    return SearchSettings(**{k: v for k, v in run["settings"].items() if k in known})


def run_search(
    job: SearchJob, settings: SearchSettings, log: Callable[[str], None] = print, progress: Callable | None = None
) -> dict:
    """Search, checkpointing every epoch; returns the ``best.json`` dict (also written to ``job.out``)."""
    check_output_paths({"--data": job.data, "--lut": job.lut}, {"--out": job.out})
    if job.run_dir:
        check_writable_location(job.run_dir, "--run-dir")
    resume_dir = Path(job.resume) if job.resume else None
    previous = _read_resume(resume_dir, job.lut) if resume_dir else None
    if previous is not None:
        settings = _settings_from(previous)
        job = dataclasses.replace(job, ops=tuple(previous["space"]["ops"]), task=previous["job"]["task"])
    settings = settings.check()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    table = load_lut(job.lut, backend="ort", warn=log)
    space = _space(table, job)
    data, pre = load_search_data(job, space)
    if previous is not None and previous["data_sha"] != data.fingerprint():
        raise UserError(f"--resume: the data given is not the data this search started on ({previous['job']['data']})")
    searcher_epochs = previous["epochs"] if previous else settings.epochs
    searcher = Searcher(space, table, data, pre, settings, searcher_epochs)
    if previous is None:
        epoch_s = probe_seconds(searcher)
        searcher.epochs = _agree(epochs_within_budget(epoch_s, settings.budget_hours, settings.epochs), searcher.world)
        log(f"one search epoch takes about {epoch_s / 60:.1f} min here (measured on a few steps)")
        if searcher.epochs < settings.epochs:
            log(
                f"budget {settings.budget_hours:g} h fits {searcher.epochs} of {settings.epochs} epochs "
                f"(~{epoch_s / 60:.1f} min each, measured)"
            )
        run_dir = Path(job.run_dir) if job.run_dir else next_run_dir()
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UserError(
                f"run folder {run_dir} exists and is not empty: resume it with --resume {run_dir} or choose another"
            )
        if searcher.world > 1:
            torch.distributed.barrier()  # every process checked the folder before any writes to it
        run_dir.mkdir(parents=True, exist_ok=True)
        run = {
            "job": dataclasses.asdict(job),
            "settings": dataclasses.asdict(settings),
            "space": space.to_dict(),
            "epochs": searcher.epochs,
            "data_sha": data.fingerprint(),
            "lut_sha256": sha256_file(job.lut),
            "probe_epoch_seconds": round(epoch_s, 1),
        }
    else:
        assert resume_dir is not None  # previous is only read with --resume
        run_dir = resume_dir
        run = previous
        searcher.load_state_dict(torch.load(run_dir / CHECKPOINT, weights_only=True))
        log(f"resuming {run_dir} after epoch {searcher.state.epoch} of {searcher.epochs}")
    if searcher.rank == 0:
        write_json_atomic(run_dir / "run.json", run)
    log(
        f"searching {len(searcher.part_w):,} + {len(searcher.part_a):,} held-back images, {searcher.steps} "
        "steps/epoch, "
        f"{searcher.epochs} epochs ({settings.warmup(searcher.epochs)} warm-up) -> {run_dir}"
    )
    _loop(searcher, run_dir, run, log, progress)
    return _finish(searcher, run_dir, run, job, settings, table, data)


def _loop(searcher: Searcher, run_dir: Path, run: dict, log, progress) -> None:
    while searcher.state.epoch < searcher.epochs:
        t0 = time.perf_counter()
        record = searcher.run_epoch(searcher.state.epoch, progress)
        searcher.state.epoch += 1
        searcher.state.seconds += time.perf_counter() - t0
        record["elapsed_s"] = round(searcher.state.seconds, 1)
        target, size = searcher.settings.target_ms, searcher.settings.search_size
        _, width, depth, predicted, _ = derive(searcher.arch, searcher.latency, target, size)
        record["derived"] = {"width": width, "depth": depth, "predicted_ms": round(predicted, 5)}
        searcher.state.history.append(record)
        if searcher.rank == 0:
            searcher.save(run_dir, run)
            with open(run_dir / HISTORY, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            dv = record["derived"]  # what the search would return now (a target sets the size, not the argmax)
            log(
                f"epoch {record['epoch']}/{searcher.epochs} {record['phase']}: loss {record['train_loss']:.3f} acc "
                f"{record['train_accuracy']:.3f} supernet {record['supernet_accuracy']:.3f} expected "
                f"{record['expected_ms']:.3f} ms; derived now: width {dv['width']} depth {dv['depth']} "
                f"{dv['predicted_ms']:.3f} ms; {record['seconds']:.0f} s"
            )
        if searcher.world > 1:
            torch.distributed.barrier()
        budget = searcher.settings.budget_hours
        if (
            budget
            and searcher.state.seconds + record["seconds"] > budget * 3600
            and searcher.state.epoch < searcher.epochs
        ):
            log(f"stopping after epoch {searcher.state.epoch}: the next epoch would pass the {budget:g} h budget")
            run["stopped_by_budget"] = searcher.state.epoch
            break


def _finish(
    searcher: Searcher, run_dir: Path, run: dict, job: SearchJob, settings: SearchSettings, table: LatencyTable, data
) -> dict:
    genotype, width, depth, predicted, meets = derive(
        searcher.arch, searcher.latency, settings.target_ms, settings.search_size
    )
    config = searcher.space.config(genotype, width, depth, name="searched")
    last = searcher.state.history[-1] if searcher.state.history else {}
    record = {
        "data": str(job.data),
        "annotations": job.annotations,
        "task": job.task,
        "images": len(data),
        "split": {
            "weights": len(searcher.part_w),
            "architecture": len(searcher.part_a),
            "held_out": settings.held_out,
            "seed": settings.seed,
        },
        "seed": settings.seed,
        "epochs": searcher.state.epoch,
        "epochs_planned": searcher.epochs,
        "wall_seconds": round(searcher.state.seconds, 1),
        "processes": searcher.world,
        "objective": {"target_ms": settings.target_ms, "latency_weight": settings.latency_weight, "target_met": meets},
        "lut": {
            "path": str(job.lut),
            "sha256": run["lut_sha256"],
            "cpu": table.device.get("cpu"),
            "backend": table.settings.backend,
            "provider": table.settings.provider,
            "threads": table.settings.threads,
            "precision": table.settings.precision,
        },
        "predicted_ms": round(predicted, 5),
        "width": width,
        "depth": depth,
        "supernet_accuracy": last.get("supernet_accuracy"),
        "architecture_weights": searcher.arch.summary(),
        "settings": dataclasses.asdict(settings),
        "run": str(run_dir),
        "stopped_by_budget": run.get("stopped_by_budget"),
    }
    best = config.to_dict()
    best["description"] = (
        f"Searched on {Path(job.data).name} for {table.settings.precision} {table.settings.backend} "
        f"{table.settings.threads}-thread latency on {table.device.get('cpu', 'unknown CPU')} (predicted "
        f"{predicted:.3f} ms). Untrained."
    )
    best["meta"] = {**best.get("meta", {}), "search": record}
    if searcher.rank == 0:
        write_json_atomic(run_dir / "best.json", best)
        if job.out:
            write_json_atomic(job.out, best)
    return best


def _agree(epochs: int, world: int) -> int:
    """Processes time their own probe: all run the fewest epochs any of them fits."""
    if world == 1:
        return epochs
    t = torch.tensor([epochs])
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return int(t)


def _read_resume(run_dir: Path, lut: str) -> dict:
    if not (run_dir / CHECKPOINT).is_file() or not (run_dir / "run.json").is_file():
        raise UserError(f"--resume: {run_dir} is not a search run folder (no {CHECKPOINT} / run.json)")
    run = json.loads(read_text_limited(run_dir / "run.json", "run record"))
    if sha256_file(lut) != run["lut_sha256"]:
        raise UserError(f"--resume: {lut} is not the latency table this search started with")
    return run
