"""One checkpoint format: weights plus the full config, readable with ``weights_only=True``.

Checkpoints come from other people, so they are only ever loaded with
``torch.load(weights_only=True)`` (no pickled code runs). The config inside makes a
checkpoint self-describing: the network, its preprocessing and its labels are rebuilt from it.
Training adds optimizer state and the epoch under ``"train"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig, config_from_dict
from .errors import UserError
from .fileio import atomic_outputs, existing_file

FORMAT = "emonas-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: ModelConfig, **extra) -> Path:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "config": config.to_dict(), "state_dict": state, **extra}
    with atomic_outputs(path) as (tmp,):
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    p = existing_file(path, "checkpoint")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with code, random bytes...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{p} is not a readable emonas-edge checkpoint ({first[:160]})") from None
    if (
        not isinstance(payload, dict)
        or payload.get("format") != FORMAT
        or "config" not in payload
        or "state_dict" not in payload
    ):
        raise UserError(f"{p} is not an emonas-edge checkpoint (expected format {FORMAT!r} with config and state_dict)")
    return payload


def load_checkpoint(path: str | os.PathLike) -> tuple[ModelConfig, nn.Module, dict]:
    """Returns ``(config, model in eval mode, the whole payload)``."""
    from .nn import create_model

    payload = read_checkpoint(path)
    config = config_from_dict(payload["config"], f"checkpoint {path}")
    model = create_model(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise UserError(
            f"checkpoint {path}: weights do not fit its own config ({str(e).splitlines()[0][:160]})"
        ) from None
    return config, model.eval(), payload
