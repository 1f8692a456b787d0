"""The operation registry: every candidate edge operation of a cell, in one place.

Cell networks (``cellnet``) and the architecture search build their edges from this table,
so adding an operation means adding one ``@register`` function here. Each builder takes
``(channels, stride, affine)`` and returns a module that keeps the channel count and divides
the spatial size by ``stride`` (rounding up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..genotype import OP_DESCRIPTIONS


@dataclass(frozen=True)
class OpSpec:
    name: str
    build: Callable[[int, int, bool], nn.Module]
    description: str


OPS: dict[str, OpSpec] = {}


def register(name: str):
    """Registers a builder; its description lives with the names in ``genotype.OP_DESCRIPTIONS`` (torch-free,
    so ``emonas-edge ops`` and config checks never import PyTorch)."""

    def wrap(fn: Callable[[int, int, bool], nn.Module]):
        if name in OPS:
            raise ValueError(f"operation {name!r} registered twice")
        if name not in OP_DESCRIPTIONS:
            raise ValueError(f"operation {name!r} is not in genotype.OP_DESCRIPTIONS: add its name and description")
        OPS[name] = OpSpec(name, fn, OP_DESCRIPTIONS[name])
        return fn

    return wrap


def known_ops() -> list[str]:
    return list(OPS)


def build_op(name: str, channels: int, stride: int, affine: bool = True) -> nn.Module:
    return OPS[name].build(channels, stride, affine)


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Stochastic depth per sample; callers only use it in training."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel, stride, padding, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convolutions, as in DARTS."""

    def __init__(self, c_in, c_out, kernel, stride, padding, affine=True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x * 0.0
        return x[:, :, :: self.stride, :: self.stride] * 0.0


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing the odd pixels: two offset 1x1 stride-2 convs.

    Needs an even input size; config validation guarantees it.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        assert c_out % 2 == 0, "FactorizedReduce needs an even channel count"
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


@register("none")
def _none(c, stride, affine):
    return Zero(stride)


@register("max_pool_3x3")
def _max_pool(c, stride, affine):
    return nn.MaxPool2d(3, stride=stride, padding=1)


@register("avg_pool_3x3")
def _avg_pool(c, stride, affine):
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


@register("skip_connect")
def _skip(c, stride, affine):
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)


def _sep(k):
    return lambda c, stride, affine: SepConv(c, c, k, stride, k // 2, affine)


def _dil(k):
    return lambda c, stride, affine: DilConv(c, c, k, stride, k - 1, 2, affine)


register("sep_conv_3x3")(_sep(3))
register("sep_conv_5x5")(_sep(5))
register("sep_conv_7x7")(_sep(7))
register("dil_conv_3x3")(_dil(3))
register("dil_conv_5x5")(_dil(5))


@register("conv_7x1_1x7")
def _conv_7x1_1x7(c, stride, affine):
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(c, c, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(c, c, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(c, affine=affine),
    )


# Plain convolutions (as in NAS-Bench-201): several times cheaper to train on a CPU than the
# separable ones, which gives search and training room on small machines.
@register("conv_1x1")
def _conv_1x1(c, stride, affine):
    return ReLUConvBN(c, c, 1, stride, 0, affine)


@register("conv_3x3")
def _conv_3x3(c, stride, affine):
    return ReLUConvBN(c, c, 3, stride, 1, affine)


def _check_names() -> None:
    from ..genotype import OP_NAMES

    if tuple(OPS) != OP_NAMES:
        raise RuntimeError(
            f"nn/ops.py registry {tuple(OPS)} and genotype.OP_NAMES {OP_NAMES} disagree: add the new op's name to both"
        )


_check_names()
