"""The search loop: supernet weights on one part of the training data, the architecture on the other.

Every step trains the supernet's weights on a path sampled from the current distribution (during
the warm-up: from the uniform one, so every op learns before any is judged), then, after the
warm-up, updates the architecture on a batch of the held-back part with the latency objective.
The method decides what a path is: ``pc-darts`` (default) samples each slot's input and mixes all
of its ops on a quarter of the channels; ``gdas`` samples one op per slot (see ``supernet``).
Each epoch ends with a checkpoint (weights, architecture, both optimizers, baseline, history)
and randomness is re-seeded from ``(seed, epoch)``, so a resumed run takes exactly the steps
an uninterrupted one would. Under ``torchrun`` every process samples the same path (same seed)
and gradients are averaged by hand, which is what DDP does and what a sampled path needs
(DDP's bucketing assumes every parameter gets a gradient every step).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.augment import AugmentSettings
from ..data.datasets import ArrayDataset
from ..data.preprocess import Preprocessor
from ..errors import UserError
from ..fileio import atomic_outputs
from ..train.common import (
    dataset_images,
    init_distributed,
    training_batch,
    warmup_cosine_lr,
)
from .arch import ArchParams, ExpectedLatency, Sample
from .lut import LatencyTable
from .space import SearchSpace
from .supernet import CellChoice, SuperNet

CHECKPOINT = "search.pt"
METHODS = ("pc-darts", "gdas")
HISTORY = "history.jsonl"


@dataclass
class SearchSettings:
    epochs: int = 30
    warmup_epochs: int = 5  # weights only, uniform paths (capped at a quarter of the epochs)
    batch: int = 96
    lr: float = 0.05
    weight_decay: float = 3e-4
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    tau_start: float = 5.0
    tau_end: float = 0.5
    latency_weight: float | None = None  # penalty mode: CE + w * log(E[latency] / reference)
    target_ms: float | None = None  # target mode: CE + target_weight * |log(E[latency] / target)|
    target_weight: float = 1.0
    held_out: float = 0.2
    seed: int = 0
    threads: int | None = None
    budget_hours: float | None = None
    max_steps: int | None = None  # per epoch (tests, probes)
    augment: bool = True
    label_smoothing: float = 0.1
    eval_limit: int = 2000  # held-back images scored per epoch (the supernet accuracy of the argmax path)
    # (width, depth) the supernet runs at, or None to sample sizes too. Measured on FER2013: with sampled
    # sizes the supernet's loss stayed at ln 7 for 3 epochs; at one size it learns. The size
    # distribution then follows the latency objective alone, and a target picks the derived size.
    search_size: tuple[int, int] | None = None
    method: str = "pc-darts"  # or "gdas"
    partial_channels: int = 4  # pc-darts: ops run on 1/partial_channels of each edge's channels

    @property
    def partial(self) -> int | None:
        return self.partial_channels if self.method == "pc-darts" else None

    def check(self) -> SearchSettings:
        if self.latency_weight is not None and self.target_ms is not None:
            raise UserError("give either --target-latency-ms or --latency-weight, not both")
        if self.latency_weight is None and self.target_ms is None:
            self.latency_weight = 0.1
        if self.latency_weight is not None and self.latency_weight < 0:
            raise UserError(f"--latency-weight must be >= 0, got {self.latency_weight}")
        if self.target_ms is not None and not self.target_ms > 0:
            raise UserError(f"--target-latency-ms must be positive, got {self.target_ms}")
        if self.epochs < 1 or self.batch < 2 or not 0.05 <= self.held_out <= 0.5:
            raise UserError("--epochs must be >= 1, --batch >= 2 and the held-back fraction within [0.05, 0.5]")
        if self.search_size is not None:
            self.search_size = (int(self.search_size[0]), int(self.search_size[1]))
        if self.method not in METHODS:
            raise UserError(f"unknown search method {self.method!r}; known: {', '.join(METHODS)}")
        if self.method == "pc-darts" and not 1 <= self.partial_channels <= 16:
            raise UserError(f"--partial-channels must be within 1..16, got {self.partial_channels}")
        if self.budget_hours is not None and not self.budget_hours > 0:
            raise UserError(f"--budget-hours must be positive, got {self.budget_hours}")
        return self

    def warmup(self, epochs: int | None = None) -> int:
        """Warm-up epochs of a run of ``epochs`` (the run's own count, which a budget may have cut)."""
        return min(self.warmup_epochs, (self.epochs if epochs is None else epochs) // 4)


def split_held_out(labels: np.ndarray, fraction: float, seed: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (weights part, architecture part) indices of the training data."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    counts = np.bincount(labels, minlength=num_classes)
    present = [c for c in range(num_classes) if counts[c]]
    if len(labels) < 20 or len(present) < 2 or any(counts[c] < 5 for c in present):
        small = ", ".join(f"{counts[c]}" for c in present)
        raise UserError(
            f"the dataset is too small to split into weight and architecture parts ({len(labels)} images, per class "
            f"{small}): "
            "a search needs at least 20 images, 2 classes and 5 images per class present"
        )
    for c in present:
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(fraction * len(idx))))
        b.append(idx[:k])
        a.append(idx[k:])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


@dataclass
class SearchState:
    """Everything a resumed run needs, in plain tensors and lists (loads with ``weights_only``)."""

    epoch: int = 0
    history: list = field(default_factory=list)
    baseline: float | None = None
    seconds: float = 0.0


class Searcher:
    """One search run over ``data`` (uint8 images at the space's input spec)."""

    def __init__(
        self,
        space: SearchSpace,
        table: LatencyTable,
        data: ArrayDataset,
        pre: Preprocessor,
        settings: SearchSettings,
        epochs: int,
    ):
        self.space, self.table, self.settings, self.epochs = space, table, settings, epochs
        self.rank, self.world = init_distributed()
        if settings.search_size is not None and (
            settings.search_size[0] not in space.widths or settings.search_size[1] not in space.depths
        ):
            raise UserError(
                f"--search-size {settings.search_size[0]},{settings.search_size[1]} is not a size of the table's space "
                f"(widths {', '.join(map(str, space.widths))}; depths {', '.join(map(str, space.depths))})"
            )
        self._check_partial(space, settings)
        torch.manual_seed(settings.seed)
        self.net = SuperNet(space, settings.partial)
        self.arch = ArchParams(space)
        self.latency = ExpectedLatency(space, table)
        self.opt = torch.optim.SGD(
            self.net.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, nesterov=True
        )
        self.arch_opt = torch.optim.Adam(
            self.arch.parameters(), lr=settings.arch_lr, betas=(0.5, 0.999), weight_decay=settings.arch_weight_decay
        )
        self.part_w, self.part_a = split_held_out(data.labels, settings.held_out, settings.seed, space.num_classes)
        self.images = dataset_images(data, "cpu")
        self.labels = torch.from_numpy(data.labels)
        self.unit_scale = torch.from_numpy(pre.unit_scale)
        self.shift = torch.from_numpy(pre.shift)
        self.state = SearchState(history=[])
        n = len(self.part_w)
        self.steps = max(1, n // (settings.batch * self.world))
        if settings.max_steps:
            self.steps = min(self.steps, settings.max_steps)
        with torch.no_grad():
            self.reference_ms = float(
                self.latency.per_width_depth(self.arch).min()
            )  # penalty scale: the cheapest width/depth

    @staticmethod
    def _check_partial(space: SearchSpace, settings: SearchSettings) -> None:
        k = settings.partial
        widths = space.widths if settings.search_size is None else (settings.search_size[0], max(space.widths))
        if k and any(w % k for w in widths):
            raise UserError(
                f"--partial-channels {k} does not divide the width(s) {', '.join(str(w) for w in widths if w % k)} "
                "of the search: choose a divisor or --search-size at a divisible width"
            )

    # ----------------------------------------------------------------- one step of each kind

    def sample(self, g: torch.Generator, tau: float, *, uniform: bool = False, grad: bool = True) -> Sample:
        """A path from the architecture distribution, at the fixed search size when there is one."""
        sample = self.arch.sample(g, tau, uniform=uniform, grad=grad, mixed=self.settings.partial is not None)
        if self.settings.search_size is not None:
            sample.width, sample.depth = self.settings.search_size
            sample.log_prob = 0.0
        return sample

    def _batch(
        self, part: np.ndarray, order: torch.Tensor, step: int, g: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.settings.batch
        gb = batch * self.world
        pos = torch.arange(step * gb, (step + 1) * gb) % len(order)
        idx = torch.from_numpy(part)[order[pos]][self.rank * batch : (self.rank + 1) * batch]
        x = training_batch(
            self.images,
            idx,
            self.unit_scale,
            self.shift,
            g if self.settings.augment else None,
            AugmentSettings(),
            channels_last=False,
        )
        return x, self.labels[idx]

    def _average_grads(self, params) -> None:
        if self.world > 1:
            for p in params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.world

    def weight_step(self, x, y, sample: Sample, lr: float) -> tuple[float, int]:
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.net.train()
        logits = self.net(x, sample)
        loss = F.cross_entropy(logits, y, label_smoothing=self.settings.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self._average_grads(self.net.parameters())
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
        self.opt.step()
        return float(loss.detach()), int((logits.argmax(1) == y).sum())

    def latency_penalty(self) -> tuple[torch.Tensor, torch.Tensor]:
        expected = self.latency(self.arch)
        if self.settings.target_ms is not None:
            return self.settings.target_weight * torch.log(expected / self.settings.target_ms).abs(), expected
        assert self.settings.latency_weight is not None  # check() sets it when no target is given
        return self.settings.latency_weight * torch.log(expected / self.reference_ms), expected

    def arch_step(self, x, y, g: torch.Generator, tau: float) -> dict:
        sample = self.sample(g, tau)
        self.net.train()
        logits = self.net(x, sample)
        ce = F.cross_entropy(logits, y)
        penalty, expected = self.latency_penalty()
        advantage = float(ce.detach()) - (
            self.state.baseline if self.state.baseline is not None else float(ce.detach())
        )
        self.state.baseline = (
            float(ce.detach()) if self.state.baseline is None else 0.9 * self.state.baseline + 0.1 * float(ce.detach())
        )
        loss = ce + penalty.float() + advantage * sample.log_prob
        self.arch_opt.zero_grad(set_to_none=True)
        self.net.zero_grad(set_to_none=True)
        loss.backward()
        self._average_grads(self.arch.parameters())
        self.arch_opt.step()
        self.net.zero_grad(set_to_none=True)
        return {"ce": float(ce.detach()), "expected_ms": float(expected.detach())}

    # ----------------------------------------------------------------- epochs

    def tau(self, epoch: int) -> float:
        t = epoch / max(1, self.epochs - 1)
        return self.settings.tau_start * (self.settings.tau_end / self.settings.tau_start) ** t

    def run_epoch(self, epoch: int, progress: Callable | None = None) -> dict:
        settings = self.settings
        g = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
        g_arch = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch + 500_009)
        torch.manual_seed(settings.seed * 1_000_003 + epoch + 1)
        order_w = torch.randperm(len(self.part_w), generator=g)
        order_a = torch.randperm(len(self.part_a), generator=g)
        searching = epoch >= settings.warmup(self.epochs)
        tau = self.tau(epoch)
        total = self.epochs * self.steps
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        arch_log = []
        for step in range(self.steps):
            lr = warmup_cosine_lr(epoch * self.steps + step, total, self.steps, settings.lr)
            x, y = self._batch(self.part_w, order_w, step, g)
            sample = self.sample(g_arch, tau, uniform=not searching, grad=False)
            loss, ok = self.weight_step(x, y, sample, lr)
            loss_sum, correct, seen = loss_sum + loss * len(y), correct + ok, seen + len(y)
            if searching:
                xa, ya = self._batch(self.part_a, order_a, step, g)
                arch_log.append(self.arch_step(xa, ya, g_arch, tau))
            if progress is not None and self.rank == 0:
                progress(epoch, step + 1, self.steps, loss_sum / seen, correct / seen)
        seconds = time.perf_counter() - t0
        genotype, width, depth = self.arch.argmax()
        record = {
            "epoch": epoch + 1,
            "phase": "search" if searching else "warm-up",
            "tau": round(tau, 4),
            "lr": lr,
            "train_loss": round(loss_sum / max(seen, 1), 5),
            "train_accuracy": round(correct / max(seen, 1), 5),
            "arch_ce": round(float(np.mean([a["ce"] for a in arch_log])), 5) if arch_log else None,
            "expected_ms": round(float(self.latency(self.arch).detach()), 5),
            "argmax": {
                "width": width,
                "depth": depth,
                "normal": [list(e) for e in genotype.normal],
                "reduce": [list(e) for e in genotype.reduce],
                "predicted_ms": round(self.latency.of(genotype, width, depth), 5),
            },
            "supernet_accuracy": round(self.evaluate(), 5),
            "arch": self.arch.summary(),
            "seconds": round(seconds, 2),
        }
        return record

    @torch.no_grad()
    def evaluate(self) -> float:
        """Held-back accuracy of the most likely path (pc-darts: its inputs with every op mixed, the network
        its weights were trained as; one op alone at a weight of one is a network it never ran), BatchNorm on batch
        statistics (the supernet keeps no running ones)."""
        genotype, width, depth = self.arch.argmax()
        width, depth = self.settings.search_size or (width, depth)
        ops = {op: i for i, op in enumerate(self.space.ops)}

        def choice(edges):
            return CellChoice([(n // 2, j, ops[op], 1.0) for n, (op, j) in enumerate(edges)])

        def mixture(kind: int, edges):  # the likeliest inputs, every op at its probability: what was trained
            mix = torch.softmax(self.arch.alpha[kind], -1)
            return CellChoice([(n // 2, j, mix[n // 2, n % 2], 1.0) for n, (_, j) in enumerate(edges)])

        if self.settings.partial:
            sample = Sample(width, depth, mixture(0, genotype.normal), mixture(1, genotype.reduce), 0, 0)
        else:
            sample = Sample(width, depth, choice(genotype.normal), choice(genotype.reduce), 0, 0)
        # a fixed random subset: the parts are sorted by index and a folder dataset by class, and batches of
        # one class normalised on their own statistics score far below chance (8% measured on FER2013)
        g = torch.Generator().manual_seed(self.settings.seed)
        part = self.part_a[torch.randperm(len(self.part_a), generator=g)[: self.settings.eval_limit].numpy()]
        correct = 0
        for i in range(0, len(part), 256):
            idx = torch.from_numpy(part[i : i + 256])
            x = training_batch(self.images, idx, self.unit_scale, self.shift, None, channels_last=False)
            correct += int((self.net(x, sample).argmax(1) == self.labels[idx]).sum())
        return correct / max(1, len(part))

    # ----------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "arch": self.arch.state_dict(),
            "opt": self.opt.state_dict(),
            "arch_opt": self.arch_opt.state_dict(),
            "epoch": self.state.epoch,
            "history": json.dumps(self.state.history),
            "baseline": self.state.baseline,
            "seconds": self.state.seconds,
        }

    def load_state_dict(self, d: dict) -> None:
        self.net.load_state_dict(d["net"])
        self.arch.load_state_dict(d["arch"])
        self.opt.load_state_dict(d["opt"])
        self.arch_opt.load_state_dict(d["arch_opt"])
        self.state = SearchState(int(d["epoch"]), json.loads(d["history"]), d["baseline"], float(d["seconds"]))

    def save(self, run_dir: Path, extra: dict) -> None:
        with atomic_outputs(run_dir / CHECKPOINT) as (tmp,):
            torch.save({**self.state_dict(), "run": json.dumps(extra)}, tmp)


def probe_seconds(searcher: Searcher, steps: int = 3) -> float:
    """Seconds one searching epoch will take, from a few steps on a copy (the run itself is untouched)."""
    import copy

    probe = copy.deepcopy(searcher)
    g = torch.Generator().manual_seed(12345)
    order_w, order_a = torch.randperm(len(probe.part_w), generator=g), torch.randperm(len(probe.part_a), generator=g)
    times = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        x, y = probe._batch(probe.part_w, order_w, step, g)
        probe.weight_step(x, y, probe.sample(g, 1.0, uniform=True, grad=False), 1e-3)
        xa, ya = probe._batch(probe.part_a, order_a, step, g)
        probe.arch_step(xa, ya, g, 1.0)
        if step:  # the first step pays one-off allocation costs
            times.append(time.perf_counter() - t0)
    t_eval = time.perf_counter()
    probe.settings.eval_limit = min(probe.settings.eval_limit, 256)
    probe.evaluate()
    eval_s = (time.perf_counter() - t_eval) * min(searcher.settings.eval_limit, len(searcher.part_a)) / 256
    return float(np.median(times)) * searcher.steps + eval_s


def epochs_within_budget(epoch_seconds: float, budget_hours: float | None, epochs: int) -> int:
    if budget_hours is None:
        return epochs
    fit = int(budget_hours * 3600 // epoch_seconds)
    if fit < 1:
        raise UserError(
            f"a budget of {budget_hours:g} h is less than one search epoch here (about {epoch_seconds / 60:.1f} min "
            "measured)"
        )
    return min(epochs, fit)
