"""Training any config on an in-memory dataset, resumable at every epoch boundary.

Designed for small machines first: data lives in RAM as uint8, augmentation is batched on
tensors, memory format is channels-last, and every epoch writes ``last.pt`` (weights, config,
optimizer, epoch, history, EMA) so a run killed at the end of a working period continues
exactly where it stopped with ``resume=True``. Randomness is re-seeded from ``(seed, epoch)``
at each epoch start, which is what makes a resumed run take the same next step as an
uninterrupted one. Started under ``torchrun``, the same code runs distributed data parallel.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import save_checkpoint
from ..config import ModelConfig
from ..data.augment import AugmentSettings, mix_batch
from ..data.datasets import ArrayDataset
from ..data.preprocess import Preprocessor
from ..errors import CheckFailed, UserError
from .common import dataset_images, evaluate_arrays, init_distributed, training_batch, training_device, warmup_cosine_lr
from .distill import (
    cached_targets,
    distillation_loss,
    load_teachers,
    online_targets,
    store_targets,
    targets_key,
    teacher_targets,
)
from .optim import WeightEMA, make_optimizer
from .resume import (
    RunProgress,
    check_fresh_run_dir,
    check_resumed_data,
    check_resumed_teachers,
    restore_from_last,
)
from .settings import EpochRecord, TrainSettings

__all__ = ["train", "Trainer", "TrainSettings", "EpochRecord", "evaluate_arrays", "training_batch", "teacher_targets"]

# progress(epoch, step, steps, loss, accuracy, images_per_s)
Progress = Callable[[int, int, int, float, float, float], None]


def mixed_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, partner: torch.Tensor | None, lam: float, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy against the labels of a batch blended with ``partner``-shuffled copies by weight ``lam``."""
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    if partner is None:
        return loss
    return lam * loss + (1 - lam) * F.cross_entropy(logits.float(), y[partner], label_smoothing=label_smoothing)


class Trainer:
    """One training run: built once (device, optimizer, resume, teachers, data on the device), then :meth:`fit`."""

    def __init__(
        self,
        config: ModelConfig,
        model: torch.nn.Module,
        train_data: ArrayDataset,
        val_data: ArrayDataset | None,
        out_dir: str | os.PathLike,
        settings: TrainSettings,
        resume: bool,
        log: Callable[[str], None],
        progress: Progress | None,
    ):
        self.rank, self.world = init_distributed()
        self.settings = settings = settings.resolved(self.world)
        self.device = training_device(settings.device, self.rank)
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.out = Path(out_dir)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        if list(train_data.classes) != list(config.classes):
            raise UserError(
                f"training data classes {list(train_data.classes)} differ from the model's {list(config.classes)}"
            )
        self.config, self.train_data, self.val_data, self.log, self.progress = (
            config,
            train_data,
            val_data,
            log,
            progress,
        )

        self.model = model.to(self.device)
        if settings.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
        self.optimizer = make_optimizer(self.model, settings)
        self.ema = WeightEMA(self.model, settings.ema) if settings.ema > 0 else None
        self.state = RunProgress()
        if resume:
            self.state = restore_from_last(self.last_path, self.model, self.optimizer, self.ema, self.device)
            if self.state.epochs_done >= settings.epochs:
                log(f"already trained {self.state.epochs_done} of {settings.epochs} epochs")
        self.teachers, self.fingerprints = load_teachers(settings.teachers, config, self.device, settings.channels_last)
        self.data_fingerprint = train_data.fingerprint()
        if resume:
            check_resumed_teachers(self.state, self.fingerprints, settings.teachers)
            check_resumed_data(self.state, self.data_fingerprint, train_data.source)
        elif self.rank == 0:
            check_fresh_run_dir(self.out)
        self.net = self.model
        if self.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self._put_data_on_device()

    def _put_data_on_device(self) -> None:
        """Images, labels, schedule, sampling weights and offline teacher targets: everything epochs reuse."""
        settings, device = self.settings, self.device
        self.pre = Preprocessor(self.config)
        self.unit_scale = torch.from_numpy(self.pre.unit_scale).to(device)
        self.shift = torch.from_numpy(self.pre.shift).to(device)
        self.images = dataset_images(self.train_data, device)
        self.labels = torch.from_numpy(self.train_data.labels).to(device)
        self.val_images = dataset_images(self.val_data, device) if self.val_data is not None else None
        n = len(self.labels)
        self.global_batch = settings.batch * self.world
        self.steps_per_epoch = n // self.global_batch if n >= self.global_batch else 1
        if settings.max_steps:
            self.steps_per_epoch = min(self.steps_per_epoch, settings.max_steps)
        self.total_steps = self.steps_per_epoch * settings.epochs
        self.warmup_steps = int(settings.warmup_epochs * self.steps_per_epoch)
        self.class_weights = None
        if settings.balanced:
            counts = torch.bincount(self.labels.cpu(), minlength=len(self.config.classes)).float()
            self.class_weights = (1.0 / counts.clamp(min=1))[self.labels.cpu()]
        self.soft_targets: torch.Tensor | None = None
        if self.teachers and settings.distill == "offline":
            self._offline_targets(n)
        self.augment = AugmentSettings()
        self.drop_path_max = float(self.config.network.get("drop_path", 0.0))

    def _offline_targets(self, n: int) -> None:
        settings, t0 = self.settings, time.perf_counter()
        key = targets_key(self.fingerprints, self.images, self.shift, settings.distill_temperature)
        cached = cached_targets(key, n)
        if cached is not None:
            self.soft_targets = cached.to(self.device)
            self.log(f"teacher targets for {n:,} images from the cache (the same teachers and images as before)")
            return
        targets = teacher_targets(
            self.teachers,
            self.images,
            self.unit_scale,
            self.shift,
            settings.distill_temperature,
            settings.eval_batch,
            settings.channels_last,
        )
        store_targets(key, targets)
        self.soft_targets = targets
        self.log(
            f"teacher targets for {n:,} images from {len(self.teachers)} teacher(s) (with mirrors) "
            f"in {time.perf_counter() - t0:.0f} s"
        )

    def fit(self) -> dict:
        """Train the remaining epochs; return the run's summary (also written to ``summary.json`` by rank 0)."""
        for epoch in range(self.state.epochs_done, self.settings.epochs):
            record = self._train_epoch(epoch)
            if self.rank == 0:
                self._finish_epoch(epoch, record)
            if self.world > 1:
                torch.distributed.barrier()
        summary = {
            "epochs": self.settings.epochs,
            "best": self.state.best,
            "history": self.state.history,
            "out_dir": str(self.out),
            "last": str(self.last_path),
            "best_checkpoint": str(self.best_path),
        }
        if self.rank == 0:
            from ..fileio import write_json_atomic

            write_json_atomic(self.out / "summary.json", summary)
        return summary

    def _train_epoch(self, epoch: int) -> EpochRecord:
        settings, n = self.settings, len(self.labels)
        g = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
        torch.manual_seed(settings.seed * 1_000_003 + epoch + 1)  # dropout / drop-path
        if hasattr(self.model, "drop_path_prob"):
            # a plain float attribute, which torch's typed Module.__setattr__ does not declare
            setattr(self.model, "drop_path_prob", self.drop_path_max * epoch / settings.epochs)  # noqa: B010
        if self.class_weights is not None:
            order = torch.multinomial(self.class_weights, n, replacement=True, generator=g)
        else:
            order = torch.randperm(n, generator=g)
        self.net.train()
        t0 = time.perf_counter()
        base_lr = float(settings.lr or 0.0)  # resolved: always set
        loss_sum, correct, seen, lr = 0.0, 0, 0, base_lr
        for step in range(self.steps_per_epoch):
            global_step = epoch * self.steps_per_epoch + step
            lr = warmup_cosine_lr(global_step, self.total_steps, self.warmup_steps, base_lr)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss, logits, y = self._step(self._batch_indices(order, step), g, global_step)
            value = float(loss.detach())
            if not math.isfinite(value):  # weights are now non-finite too: stop before any of them is saved
                raise CheckFailed(
                    f"the training loss became {value} at epoch {epoch + 1}, step {step + 1}: training stopped, "
                    "nothing saved from this epoch (lower --lr?)"
                )
            loss_sum += value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if self.progress is not None and self.rank == 0 and (step % 10 == 0 or step == self.steps_per_epoch - 1):
                self.progress(
                    epoch,
                    step + 1,
                    self.steps_per_epoch,
                    loss_sum / seen,
                    correct / seen,
                    seen * self.world / (time.perf_counter() - t0),
                )
        seconds = time.perf_counter() - t0
        return EpochRecord(
            epoch + 1,
            loss_sum / max(seen, 1),
            correct / max(seen, 1),
            lr,
            seen * self.world / seconds,
            round(seconds, 2),
        )

    def _batch_indices(self, order: torch.Tensor, step: int) -> torch.Tensor:
        """This process's share of the ``step``-th global batch of the epoch's ``order``."""
        idx = order[step * self.global_batch : (step + 1) * self.global_batch]
        if len(idx) < self.global_batch:  # tiny datasets: wrap around
            idx = torch.cat([idx, order[: self.global_batch - len(idx)]])
        return idx[self.rank * self.settings.batch : (self.rank + 1) * self.settings.batch].to(self.device)

    def _step(
        self, idx: torch.Tensor, g: torch.Generator, global_step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step on the images ``idx``; returns ``(loss, logits, labels)``."""
        settings = self.settings
        x = training_batch(
            self.images,
            idx,
            self.unit_scale,
            self.shift,
            g if settings.augment else None,
            self.augment,
            settings.channels_last,
        )
        y = self.labels[idx]
        partner, lam = None, 1.0
        if settings.mix != "none":
            x, partner, lam = mix_batch(x, g, settings.mix, settings.mix_alpha, settings.mix_p)
            if settings.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=settings.amp):
            outputs = self.net(x)
            logits, aux = outputs if isinstance(outputs, tuple) else (outputs, None)
            loss = mixed_cross_entropy(logits, y, partner, lam, settings.label_smoothing)
            if aux is not None:
                loss = loss + settings.aux_weight * mixed_cross_entropy(aux, y, partner, lam, settings.label_smoothing)
            if self.teachers:
                kd = distillation_loss(logits, self._teacher_target(x, idx, partner, lam), settings.distill_temperature)
                loss = (1 - settings.distill_alpha) * loss + settings.distill_alpha * kd
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, global_step)
        return loss, logits, y

    def _teacher_target(
        self, x: torch.Tensor, idx: torch.Tensor, partner: torch.Tensor | None, lam: float
    ) -> torch.Tensor:
        if self.soft_targets is None:  # online: the teachers see the mixed image itself
            return online_targets(self.teachers, x, self.settings.distill_temperature)
        target = self.soft_targets[idx]
        return target if partner is None else lam * target + (1 - lam) * target[partner]

    def _finish_epoch(self, epoch: int, record: EpochRecord) -> None:
        """Rank 0: score the evaluated weights, keep the best, write checkpoints and history, say how it went."""
        eval_model = self.model
        if self.ema is not None:
            eval_model = copy.deepcopy(self.model)
            eval_model.load_state_dict(self.ema.state)
        if self.val_images is not None and self.val_data is not None:
            rep = evaluate_arrays(
                eval_model,
                self.val_images,
                self.val_data.labels,
                self.pre,
                self.config.classes,
                self.settings.eval_batch,
                self.settings.channels_last,
            )
            record.val = {"accuracy": rep["accuracy"], "uf1": rep["uf1"], "uar": rep["uar"]}
        self.state.history.append(asdict(record))
        improved = self.val_images is None or record.val["accuracy"] > self.state.best["accuracy"]
        if improved:
            self.state.best = {
                "accuracy": record.val.get("accuracy", -1.0),
                "epoch": epoch + 1,
                "uf1": record.val.get("uf1"),
                "uar": record.val.get("uar"),
            }
        self._save_checkpoints(epoch, record, eval_model, improved)
        with open(self.out / "history.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(record)) + "\n")
        val_txt = f" val acc {record.val['accuracy']:.4f} UF1 {record.val['uf1']:.4f}" if record.val else ""
        star = " *" if improved and record.val else ""
        self.log(
            f"epoch {epoch + 1}/{self.settings.epochs}: loss {record.train_loss:.4f} acc {record.train_accuracy:.4f}"
            f"{val_txt} lr {record.lr:.4g} {record.images_per_s:.0f} img/s {record.seconds:.0f} s{star}"
        )

    def _trained_config(self, epoch: int, record: EpochRecord) -> ModelConfig:
        """The config saved with this epoch's weights: trained, and with where and how they were trained."""
        meta = dict(self.config.meta)
        meta["training"] = {
            "train_data": self.train_data.source,
            "val_data": self.val_data.source if self.val_data is not None else None,
            "epochs_done": epoch + 1,
            "epochs": self.settings.epochs,
            "val": record.val,
            "settings": asdict(self.settings),
        }
        return self.config.replace(trained=True, meta=meta)

    def _save_checkpoints(self, epoch: int, record: EpochRecord, eval_model: torch.nn.Module, improved: bool) -> None:
        """last.pt keeps the raw weights (resuming needs them); best.pt and epochs/ the evaluated (EMA) ones."""
        config, state = self._trained_config(epoch, record), self.state
        eval_model.cpu()
        train_state = {
            "epoch": epoch + 1,
            "optimizer": self.optimizer.state_dict(),
            "history": state.history,
            "best": state.best,
            "ema": {k: v.cpu() for k, v in self.ema.state.items()} if self.ema is not None else None,
            "teachers": self.fingerprints,
            "data": self.data_fingerprint,
        }
        self.model.cpu()
        save_checkpoint(self.last_path, self.model, config, train=train_state)
        self.model.to(self.device)
        if improved:
            save_checkpoint(
                self.best_path,
                eval_model,
                config,
                train={"epoch": epoch + 1, "history": state.history, "best": state.best},
            )
        if self.settings.keep_epochs:
            # best.pt is picked by one score; keeping every epoch lets a run be re-scored or averaged later
            (self.out / "epochs").mkdir(exist_ok=True)
            save_checkpoint(
                self.out / "epochs" / f"e{epoch + 1}.pt",
                eval_model,
                config,
                train={"epoch": epoch + 1, "val": record.val},
            )
        eval_model.to(self.device)


def train(
    config: ModelConfig,
    model: torch.nn.Module,
    train_data: ArrayDataset,
    val_data: ArrayDataset | None,
    out_dir: str | os.PathLike,
    settings: TrainSettings | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> dict:
    """Train and return a summary; checkpoints go to ``out_dir/{last,best}.pt``.

    ``progress(epoch, step, steps, loss, acc, img_s)`` is called every few steps (the CLI draws
    a progress bar with it).
    """
    return Trainer(
        config, model, train_data, val_data, out_dir, settings or TrainSettings(), resume, log, progress
    ).fit()
