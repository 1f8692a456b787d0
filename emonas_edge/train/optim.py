"""The optimizer the trainer builds and the moving average of the weights it can evaluate instead."""

from __future__ import annotations

import torch

from .settings import TrainSettings


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only: decaying norms and biases hurts small networks."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """``settings`` must be resolved (learning rate and weight decay filled in)."""
    lr, weight_decay = settings.lr, settings.weight_decay
    if lr is None or weight_decay is None:
        raise ValueError("make_optimizer needs resolved settings (lr and weight_decay set): call settings.resolved()")
    groups = param_groups(model, weight_decay)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


class WeightEMA:
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
