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
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import read_checkpoint, save_checkpoint
from ..config import ModelConfig
from ..data.augment import MIX_MODES, AugmentSettings, augment_batch, mix_batch
from ..data.datasets import ArrayDataset
from ..data.preprocess import Preprocessor
from ..errors import UserError
from ..metrics import classification_report


@dataclass
class TrainSettings:
    epochs: int = 30
    batch: int = 128
    optimizer: str = "sgd"  # sgd (Nesterov) | adamw
    lr: float | None = None  # default: 0.1 (sgd, batch 128; scaled linearly) or 2e-3 (adamw)
    weight_decay: float | None = None  # default: 5e-4 (sgd) or 0.05 (adamw); never on norms/biases
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    balanced: bool = False  # class-balanced sampling (with replacement)
    aux_weight: float = 0.4  # cell networks with an auxiliary head
    augment: bool = True
    ema: float = 0.0  # e.g. 0.999: evaluate and keep an exponential moving average of the weights
    teachers: tuple[str, ...] = ()  # checkpoints or trained built-in names to distil from (their tempered probabilities are averaged)
    distill: str = "offline"  # offline: teacher targets computed once per run | online: on every augmented batch
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    mix: str = "none"  # none | mixup | cutmix (labels, auxiliary loss and teacher targets mixed alike)
    mix_alpha: float = 1.0  # Beta(alpha, alpha) mixing weight
    mix_p: float = 0.5  # fraction of batches mixed
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    amp: bool = False  # bfloat16 autocast
    channels_last: bool = True
    max_steps: int | None = None  # per epoch; for smoke tests
    keep_epochs: bool = False  # also save each epoch's evaluated (EMA) weights as epochs/e<N>.pt (averaging, re-scoring)
    eval_batch: int = 512

    def resolved(self, world: int = 1) -> "TrainSettings":
        """Defaults filled in; the SGD learning rate scales with the global batch (batch x processes)."""
        s = copy.copy(self)
        if s.optimizer not in ("sgd", "adamw"):
            raise UserError(f"optimizer must be sgd or adamw, got {s.optimizer!r}")
        if s.epochs < 1 or s.batch < 1:
            raise UserError("epochs and batch must be at least 1")
        if s.distill not in ("offline", "online"):
            raise UserError(f"distill must be offline or online, got {s.distill!r}")
        if not 0.0 <= s.distill_alpha <= 1.0 or s.distill_temperature <= 0:
            raise UserError("distill alpha must lie in [0, 1] and the temperature be positive")
        if s.mix not in MIX_MODES:
            raise UserError(f"mix must be one of {', '.join(MIX_MODES)}, got {s.mix!r}")
        if s.mix_alpha <= 0 or not 0.0 <= s.mix_p <= 1.0:
            raise UserError("mix alpha must be positive and mix p lie in [0, 1]")
        s.teachers = tuple(str(t) for t in s.teachers)
        if s.lr is None:
            s.lr = 0.1 * s.batch * world / 128 if s.optimizer == "sgd" else 2e-3
        if s.weight_decay is None:
            s.weight_decay = 5e-4 if s.optimizer == "sgd" else 0.05
        return s


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    lr: float
    images_per_s: float
    seconds: float
    val: dict = field(default_factory=dict)


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank() if world > 1 else 0), world


def _device(name: str, rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def _param_groups(model: torch.nn.Module, wd: float):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(1.0, t)))


class _EMA:
    """Weights (and BN statistics) averaged over steps; the decay warms up as (1+t)/(10+t) so the
    random initial weights are forgotten within the first few hundred steps."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.state[k].copy_(v)


def evaluate_arrays(model: torch.nn.Module, images: torch.Tensor, labels: np.ndarray, pre: Preprocessor, classes, batch: int = 512, channels_last: bool = False) -> dict:
    """Metrics of a PyTorch model on uint8 NCHW images (no augmentation)."""
    model.eval()
    preds = []
    scale = torch.from_numpy(pre.scale).to(images.device)
    shift = torch.from_numpy(pre.shift).to(images.device)
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = images[i : i + batch].float() * scale + shift
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = model(x)
            preds.append(out.argmax(1).cpu())
    y_pred = torch.cat(preds).numpy()
    return classification_report(labels, y_pred, classes)


def training_batch(images: torch.Tensor, idx: torch.Tensor, unit_scale: torch.Tensor, shift: torch.Tensor,
                   g: torch.Generator | None, aug: AugmentSettings = AugmentSettings(), channels_last: bool = True) -> torch.Tensor:
    """uint8 NCHW images -> the normalised network input; with ``g=None`` exactly what
    :class:`Preprocessor` gives at inference (the tests hold the two together)."""
    x = images[idx].float().div_(255)
    if g is not None:
        x = augment_batch(x, g, aug)
    x = x * unit_scale + shift
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def teacher_targets(teachers: list[torch.nn.Module], images: torch.Tensor, unit_scale: torch.Tensor, shift: torch.Tensor,
                    temperature: float, batch: int = 512, channels_last: bool = True) -> torch.Tensor:
    """Tempered class probabilities of the teachers on every clean image and its mirror, averaged.

    Why offline: on a CPU an online teacher costs a forward pass per augmented image (+50% time
    for a teacher as large as the student); one pass over the clean images costs about one epoch's
    forward passes once. Averaging the mirror makes the target valid for flipped views too; the
    other augmentations are small (a few degrees, pixels, an erased patch), which is what lets
    a clean-image target stand in for the view's own.
    """
    parts = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            idx = torch.arange(i, min(i + batch, len(images)), device=images.device)
            x = training_batch(images, idx, unit_scale, shift, None, channels_last=channels_last)
            parts.append(((_online_targets(teachers, x, temperature) + _online_targets(teachers, x.flip(3), temperature)) / 2).cpu())
    return torch.cat(parts).to(images.device)


def teacher_fingerprint(teacher: torch.nn.Module) -> str:
    """SHA-256 of a teacher's weights, whatever file or built-in name they came from.

    A resumed distillation run recomputes its targets from the teachers it is given; if a file
    or a built-in name now holds other weights, the second half of the run would silently learn
    from another teacher. The fingerprints saved with the run let ``--resume`` refuse that.
    """
    h = hashlib.sha256()
    for k, v in sorted(teacher.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _online_targets(teachers: list[torch.nn.Module], x: torch.Tensor, temperature: float) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([F.softmax(t(x).float() / temperature, 1) for t in teachers]).mean(0)


def _to_tensor(ds: ArrayDataset, device) -> torch.Tensor:
    imgs = torch.from_numpy(ds.images)
    imgs = imgs.unsqueeze(1) if imgs.ndim == 3 else imgs.permute(0, 3, 1, 2)
    return imgs.contiguous().to(device)


def train(
    config: ModelConfig,
    model: torch.nn.Module,
    train_data: ArrayDataset,
    val_data: ArrayDataset | None,
    out_dir: str | os.PathLike,
    settings: TrainSettings = TrainSettings(),
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable | None = None,
) -> dict:
    """Train and return a summary; checkpoints go to ``out_dir/{last,best}.pt``.

    ``progress(epoch, step, steps, loss, acc, img_s)`` is called every few steps (the CLI draws
    a progress bar with it).
    """
    rank, world = _dist()
    s = settings.resolved(world)
    device = _device(s.device, rank)
    if s.threads:
        torch.set_num_threads(s.threads)
    out = Path(out_dir)
    last_path, best_path = out / "last.pt", out / "best.pt"
    if list(train_data.classes) != list(config.classes):
        raise UserError(f"training data classes {list(train_data.classes)} differ from the model's {list(config.classes)}")

    model = model.to(device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = (
        torch.optim.SGD(_param_groups(model, s.weight_decay), lr=s.lr, momentum=0.9, nesterov=True)
        if s.optimizer == "sgd"
        else torch.optim.AdamW(_param_groups(model, s.weight_decay), lr=s.lr, betas=(0.9, 0.999))
    )
    ema = _EMA(model, s.ema) if s.ema > 0 else None
    start_epoch, history, best = 0, [], {"accuracy": -1.0, "epoch": None}
    if resume:
        if not last_path.is_file():
            raise UserError(f"--resume: no checkpoint at {last_path}")
        payload = read_checkpoint(last_path)
        tr = payload.get("train") or {}
        if "optimizer" not in tr:
            raise UserError(f"{last_path} holds no training state to resume from")
        model.load_state_dict(payload["state_dict"])
        opt.load_state_dict(tr["optimizer"])
        if ema is not None and tr.get("ema") is not None:
            ema.state = {k: v.to(device) for k, v in tr["ema"].items()}
        start_epoch, history, best = tr["epoch"], tr["history"], tr["best"]
        if start_epoch >= s.epochs:
            log(f"already trained {start_epoch} of {s.epochs} epochs")

    teachers, fingerprints = [], []
    for path in s.teachers:
        from ..resolve import load_model

        tconfig, teacher, _ = load_model(path)  # a checkpoint or a trained built-in name
        if list(tconfig.classes) != list(config.classes) or tconfig.input_shape != config.input_shape:
            raise UserError(f"teacher {path} has other classes or input shape than the student")
        if not tconfig.trained:
            raise UserError(f"teacher {path} holds untrained weights")
        fingerprints.append(teacher_fingerprint(teacher))
        teacher = teacher.to(device).eval()
        teachers.append(teacher.to(memory_format=torch.channels_last) if s.channels_last else teacher)

    if resume and tr.get("teachers") is not None and sorted(tr["teachers"]) != sorted(fingerprints):
        raise UserError(
            f"--resume: the teachers given ({', '.join(s.teachers) or 'none'}) are not the ones this run started with "
            f"(their weights differ); resume with the same teacher files"
        )

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    pre = Preprocessor(config)
    unit_scale = torch.from_numpy(pre.unit_scale).to(device)
    shift = torch.from_numpy(pre.shift).to(device)
    images = _to_tensor(train_data, device)
    labels = torch.from_numpy(train_data.labels).to(device)
    val_images = _to_tensor(val_data, device) if val_data is not None else None
    n = len(labels)
    global_batch = s.batch * world
    steps_per_epoch = n // global_batch if n >= global_batch else 1
    if s.max_steps:
        steps_per_epoch = min(steps_per_epoch, s.max_steps)
    total_steps = steps_per_epoch * s.epochs
    warmup = int(s.warmup_epochs * steps_per_epoch)
    class_w = None
    if s.balanced:
        counts = torch.bincount(labels.cpu(), minlength=len(config.classes)).float()
        class_w = (1.0 / counts.clamp(min=1))[labels.cpu()]
    soft_targets = None
    if teachers and s.distill == "offline":
        t0 = time.perf_counter()
        soft_targets = teacher_targets(teachers, images, unit_scale, shift, s.distill_temperature, s.eval_batch, s.channels_last)
        log(f"teacher targets for {n:,} images from {len(teachers)} teacher(s) (with mirrors) in {time.perf_counter() - t0:.0f} s")
    aug = AugmentSettings()
    drop_path_max = float(config.network.get("drop_path", 0.0))
    trained_config = config.replace(trained=True)

    for epoch in range(start_epoch, s.epochs):
        g = torch.Generator().manual_seed(s.seed * 1_000_003 + epoch)
        torch.manual_seed(s.seed * 1_000_003 + epoch + 1)  # dropout / drop-path
        if hasattr(model, "drop_path_prob"):
            model.drop_path_prob = drop_path_max * epoch / s.epochs
        order = torch.multinomial(class_w, n, replacement=True, generator=g) if class_w is not None else torch.randperm(n, generator=g)
        net.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for step in range(steps_per_epoch):
            gstep = epoch * steps_per_epoch + step
            lr = lr_at(gstep, total_steps, warmup, s.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[step * global_batch : (step + 1) * global_batch]
            if len(idx) < global_batch:  # tiny datasets: wrap around
                idx = torch.cat([idx, order[: global_batch - len(idx)]])
            idx = idx[rank * s.batch : (rank + 1) * s.batch].to(device)
            x = training_batch(images, idx, unit_scale, shift, g if s.augment else None, aug, s.channels_last)
            y = labels[idx]
            partner, lam = None, 1.0
            if s.mix != "none":
                x, partner, lam = mix_batch(x, g, s.mix, s.mix_alpha, s.mix_p)
                if s.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)

            def ce(out: torch.Tensor) -> torch.Tensor:
                loss = F.cross_entropy(out.float(), y, label_smoothing=s.label_smoothing)
                if partner is None:
                    return loss
                return lam * loss + (1 - lam) * F.cross_entropy(out.float(), y[partner], label_smoothing=s.label_smoothing)

            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.amp):
                outputs = net(x)
                logits, aux = outputs if isinstance(outputs, tuple) else (outputs, None)
                loss = ce(logits)
                if aux is not None:
                    loss = loss + s.aux_weight * ce(aux)
                if teachers:
                    temp = s.distill_temperature
                    if soft_targets is None:  # online: the teachers see the mixed image itself
                        target = _online_targets(teachers, x, temp)
                    else:
                        target = soft_targets[idx]
                        if partner is not None:
                            target = lam * target + (1 - lam) * target[partner]
                    kd = F.kl_div(F.log_softmax(logits.float() / temp, 1), target, reduction="batchmean") * temp * temp
                    loss = (1 - s.distill_alpha) * loss + s.distill_alpha * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            if ema is not None:
                ema.update(model, gstep)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if progress is not None and rank == 0 and (step % 10 == 0 or step == steps_per_epoch - 1):
                progress(epoch, step + 1, steps_per_epoch, loss_sum / seen, correct / seen, seen * world / (time.perf_counter() - t0))
        seconds = time.perf_counter() - t0
        record = EpochRecord(epoch + 1, loss_sum / max(seen, 1), correct / max(seen, 1), lr, seen * world / seconds, round(seconds, 2))

        if rank == 0:
            eval_model = model
            if ema is not None:
                eval_model = copy.deepcopy(model)
                eval_model.load_state_dict(ema.state)
            if val_images is not None:
                rep = evaluate_arrays(eval_model, val_images, val_data.labels, pre, config.classes, s.eval_batch, s.channels_last)
                record.val = {"accuracy": rep["accuracy"], "uf1": rep["uf1"], "uar": rep["uar"]}
            history.append(asdict(record))
            improved = val_images is None or record.val["accuracy"] > best["accuracy"]
            if improved:
                best = {"accuracy": record.val.get("accuracy", -1.0), "epoch": epoch + 1, "uf1": record.val.get("uf1"), "uar": record.val.get("uar")}
            meta = dict(config.meta)
            meta["training"] = {
                "train_data": train_data.source,
                "val_data": val_data.source if val_data is not None else None,
                "epochs_done": epoch + 1,
                "epochs": s.epochs,
                "val": record.val,
                "settings": asdict(s),
            }
            cfg = trained_config.replace(meta=meta)
            eval_model.cpu()
            deploy_state = eval_model
            train_state = {
                "epoch": epoch + 1,
                "optimizer": opt.state_dict(),
                "history": history,
                "best": best,
                "ema": {k: v.cpu() for k, v in ema.state.items()} if ema is not None else None,
                "teachers": fingerprints,
            }
            # last.pt keeps the raw weights (resuming needs them); best.pt the evaluated (EMA) ones.
            model.cpu()
            save_checkpoint(last_path, model, cfg, train=train_state)
            model.to(device)
            if improved:
                save_checkpoint(best_path, deploy_state, cfg, train={"epoch": epoch + 1, "history": history, "best": best})
            if s.keep_epochs:
                # best.pt is picked by one score; keeping every epoch lets a run be re-scored or averaged later
                (out / "epochs").mkdir(exist_ok=True)
                save_checkpoint(out / "epochs" / f"e{epoch + 1}.pt", deploy_state, cfg, train={"epoch": epoch + 1, "val": record.val})
            eval_model.to(device)
            with open(out / "history.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(record)) + "\n")
            val_txt = f" val acc {record.val['accuracy']:.4f} UF1 {record.val['uf1']:.4f}" if record.val else ""
            log(
                f"epoch {epoch + 1}/{s.epochs}: loss {record.train_loss:.4f} acc {record.train_accuracy:.4f}{val_txt} "
                f"lr {lr:.4g} {record.images_per_s:.0f} img/s {seconds:.0f} s{' *' if improved and record.val else ''}"
            )
        if world > 1:
            torch.distributed.barrier()
    summary = {"epochs": s.epochs, "best": best, "history": history, "out_dir": str(out), "last": str(last_path), "best_checkpoint": str(best_path)}
    if rank == 0:
        from ..fileio import write_json_atomic

        write_json_atomic(out / "summary.json", summary)
    return summary
