"""``create_model``: the one place a config becomes a network."""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig


def create_model(config: ModelConfig) -> nn.Module:
    if config.family == "cell":
        from .cellnet import CellNetwork

        return CellNetwork(config)
    if config.family == "mit":
        from .mit import MiTClassifier

        return MiTClassifier(config)
    raise ValueError(f"unknown family {config.family!r}")  # config validation makes this unreachable


def count_params(model: nn.Module, include_aux: bool = False) -> int:
    """Parameters of the deployed network (the training-only auxiliary head is left out)."""
    return sum(p.numel() for n, p in model.named_parameters() if include_aux or not n.startswith("aux_head."))
