"""What a training run is asked to do (:class:`TrainSettings`) and what each epoch reports (:class:`EpochRecord`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..data.augment import MIX_MODES
from ..errors import UserError, check_number

# Trained weights sit in a minimum that the from-scratch peak rate throws them out of. One epoch of
# emonas-macro-lite (67.23% PublicTest) on 600 FER2013 train images per class, sgd batch 128, 2026-12-07
# (benchmarks/finetune_lr.sh, recorded in the README's measurement table): peak lr 0.1 -> 21.5%, 0.01 -> 66.4%,
# 0.003 -> 66.7%, 0.001 -> 67.0%. A fine-tune must still be able to move towards new data, so not the lowest:
# 0.003 (3% of the from-scratch rate) keeps the weights within 0.6 points.
FINE_TUNE_LR = 0.03


@dataclass
class TrainSettings:
    epochs: int = 30
    batch: int = 128
    optimizer: str = "sgd"  # sgd (Nesterov) | adamw
    lr: float | None = None  # default: 0.1 (sgd, batch 128; scaled linearly) or 2e-3 (adamw); x FINE_TUNE_LR
    fine_tune: bool = False  # starting from trained weights: the default learning rate is FINE_TUNE_LR of that
    weight_decay: float | None = None  # default: 5e-4 (sgd) or 0.05 (adamw); never on norms/biases
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    balanced: bool = False  # class-balanced sampling (with replacement)
    aux_weight: float = 0.4  # cell networks with an auxiliary head
    augment: bool = True
    ema: float = 0.0  # e.g. 0.999: evaluate and keep an exponential moving average of the weights
    teachers: tuple[
        str, ...
    ] = ()  # checkpoints or trained built-in names to distil from (their tempered probabilities are averaged)
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
    keep_epochs: bool = (
        False  # also save each epoch's evaluated (EMA) weights as epochs/e<N>.pt (averaging, re-scoring)
    )
    eval_batch: int = 512

    def resolved(self, world: int = 1) -> TrainSettings:
        """Defaults filled in; the SGD learning rate scales with the global batch (batch x processes)."""
        resolved = copy.copy(self)
        resolved.check()
        resolved.teachers = tuple(str(t) for t in resolved.teachers)
        if resolved.lr is None:
            resolved.lr = 0.1 * resolved.batch * world / 128 if resolved.optimizer == "sgd" else 2e-3
            resolved.lr *= FINE_TUNE_LR if resolved.fine_tune else 1.0
        if resolved.weight_decay is None:
            resolved.weight_decay = 5e-4 if resolved.optimizer == "sgd" else 0.05
        return resolved

    def check(self) -> None:
        """Every bad setting is a :class:`UserError` before any data loads or model moves."""
        if self.optimizer not in ("sgd", "adamw"):
            raise UserError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        for name, value in (("--epochs", self.epochs), ("--batch", self.batch), ("--eval-batch", self.eval_batch)):
            check_number(name, value, 1)
        check_number("--max-steps", self.max_steps, 1)
        check_number("--lr", self.lr, 0, low_open=True)
        check_number("--weight-decay", self.weight_decay, 0)
        check_number("--warmup-epochs", self.warmup_epochs, 0)
        check_number("--label-smoothing", self.label_smoothing, 0, 1, high_open=True)
        check_number("--ema", self.ema, 0, 1, high_open=True)
        check_number("--aux-weight", self.aux_weight, 0)
        if self.distill not in ("offline", "online"):
            raise UserError(f"distill must be offline or online, got {self.distill!r}")
        check_number("distill alpha", self.distill_alpha, 0, 1)
        check_number("distill temperature", self.distill_temperature, 0, low_open=True)
        if self.mix not in MIX_MODES:
            raise UserError(f"mix must be one of {', '.join(MIX_MODES)}, got {self.mix!r}")
        check_number("--mix-alpha", self.mix_alpha, 0, low_open=True)
        check_number("--mix-p", self.mix_p, 0, 1)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    lr: float
    images_per_s: float
    seconds: float
    val: dict = field(default_factory=dict)
