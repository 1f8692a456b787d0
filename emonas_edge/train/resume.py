"""Continuing a run from its ``last.pt``: the model to train, and the optimizer, EMA and history to restore.

``last.pt`` holds the raw weights, the config, the optimizer state, the epoch, the history, the
best score so far, the EMA weights and the teachers' fingerprints: everything the next epoch
needs to take the same step an uninterrupted run would have taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import read_checkpoint
from ..config import ModelConfig
from ..errors import UserError
from .optim import WeightEMA


@dataclass
class RunProgress:
    """Where a run stands at an epoch boundary."""

    epochs_done: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"accuracy": -1.0, "epoch": None})
    teacher_fingerprints: list[str] | None = None  # None: a run saved before fingerprints were kept
    data_fingerprint: str | None = None  # None: a run saved before the data's was kept


def check_resumed_data(progress: RunProgress, fingerprint: str, data: str) -> None:
    if progress.data_fingerprint is not None and progress.data_fingerprint != fingerprint:
        raise UserError(
            f"--resume: the training data given ({data}) is not the data this run started with; resume with the same "
            "--data (and --limit-per-class)"
        )


def restore_from_last(
    last_path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: WeightEMA | None,
    device: torch.device,
) -> RunProgress:
    """Load ``last_path``'s weights, optimizer and EMA state into the objects given; return where the run stood."""
    if not last_path.is_file():
        raise UserError(f"--resume: no checkpoint at {last_path}")
    payload = read_checkpoint(last_path)
    state = payload.get("train") or {}
    if "optimizer" not in state:
        raise UserError(f"{last_path} holds no training state to resume from")
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None and state.get("ema") is not None:
        ema.state = {k: v.to(device) for k, v in state["ema"].items()}
    return RunProgress(state["epoch"], state["history"], state["best"], state.get("teachers"), state.get("data"))


def check_resumed_teachers(progress: RunProgress, fingerprints: list[str], names: tuple[str, ...]) -> None:
    """A resumed distillation run must learn from the weights it started with, whatever the files are called now."""
    if progress.teacher_fingerprints is not None and sorted(progress.teacher_fingerprints) != sorted(fingerprints):
        raise UserError(
            f"--resume: the teachers given ({', '.join(names) or 'none'}) are not the ones this run started with "
            f"(their weights differ); resume with the same teacher files"
        )


RUN_FILES = ("last.pt", "best.pt", "history.jsonl", "summary.json")


def check_fresh_run_dir(out_dir: Path) -> None:
    """A new run never writes over another run's checkpoints and history."""
    held = [name for name in RUN_FILES if (out_dir / name).exists()]
    if held:
        raise UserError(
            f"{out_dir} already holds a training run ({', '.join(held)}): --resume to continue it, or choose "
            "another --out"
        )


def model_to_train(
    model: str, out_dir: Path, resume: bool, scratch: bool
) -> tuple[ModelConfig, torch.nn.Module, str | None]:
    """``(config, network, note)`` for ``emonas-edge train``: what a run starts from.

    Resuming rebuilds the architecture from ``last.pt`` (its weights are loaded by the trainer),
    so a run continues even if ``--model`` now names something else. A trained name or checkpoint
    is fine-tuned unless ``scratch``; ``note`` says which happened, for the user.
    """
    from ..config import config_from_dict
    from ..nn import create_model
    from ..resolve import architecture_key, load_genotype, load_model

    last = Path(out_dir) / "last.pt"
    if resume and last.is_file():
        config = config_from_dict(read_checkpoint(last)["config"], str(last)).replace(trained=False)
        if architecture_key(load_genotype(model)) != architecture_key(config):
            raise UserError(
                f"--resume: {model} is not the architecture of the run in {out_dir}: resume with the model it "
                "started from, or train into another --out"
            )
        return config, create_model(config), None
    if not resume:
        check_fresh_run_dir(Path(out_dir))
    config, net, weights = load_model(model)
    if config.trained and scratch:
        config = _own_name(config.replace(trained=False), "scratch")
        return (
            config,
            create_model(config),
            f"training {model}'s architecture from random weights (--scratch), as {config.name}",
        )
    if config.trained:
        config = _own_name(config, "ft")
        return (
            config,
            net,
            f"fine-tuning the trained weights of {model} ({weights}) as {config.name}; --scratch starts from random "
            "weights instead",
        )
    return config, net, None


def _own_name(config: ModelConfig, suffix: str) -> ModelConfig:
    """A built-in's weights changed by training are no longer that built-in: a new name keeps their export from
    overwriting the built-in's file (``export`` names files after the model) and says where they came from."""
    from ..zoo import builtin

    return config.replace(name=f"{config.name}-{suffix}") if builtin(config.name) is not None else config


def fine_tuning(config: ModelConfig, resume: bool) -> bool:
    """Whether the run starts from trained weights (so its default learning rate is the fine-tuning one). A
    resumed run keeps what it started as: its ``last.pt`` config says, in the settings it recorded."""
    if resume:
        return bool(config.meta.get("training", {}).get("settings", {}).get("fine_tune", False))
    return config.trained
