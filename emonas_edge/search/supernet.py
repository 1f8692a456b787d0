"""The supernet: every network of a search space in one set of shared weights, one sampled path at a time.

Why single-path: on a 2-core CPU a DARTS step, which runs every candidate op of every edge, costs
as many networks as there are ops (11 here); sampling one op per node slot (GDAS's straight-through
Gumbel-softmax) makes a step cost about one network of the space. Width is shared the way
slimmable / once-for-all networks share it: every convolution holds the widest weights and a
narrower network uses their leading channels, so a sampled width costs that width's compute.
Depth is shared by running only the first ``d`` normal cells of each stage.

Edge operations come from the one registry (``nn/ops.py``) and are built exactly as ``cellnet``
builds them (DARTS search convention: BatchNorm without affine parameters, batch statistics).

Two ways to run a slot. *Sampled* (GDAS): the slot runs one op. *Partial-channel mixed*
(PC-DARTS): the slot runs every op, weighted by its probability, on ``1/partial`` of the
channels, passes the other channels through and shuffles them; its ops are built that narrow,
so the mixture of six ops costs about one full-width op. Measured on FER2013 at 32 channels,
two cells per stage (300 steps, batch 96, lr 0.05, loss with label smoothing 0.1): one fixed
path 1.88 -> 1.63; sampled ops, even among convolutions only, 1.90 -> 1.86 (every op is trained
on a third of the steps and the layers after it see another op's features each step); all ops
mixed at full width 1.87 -> 1.81 at step 100 (the fixed path's pace) but 5x a path's step cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.ops import FactorizedReduce, ReLUConvBN, build_op
from .space import SearchSpace, stage_shapes


class Width:
    """The active fraction of the widest width, read by every dynamic layer."""

    def __init__(self, full: int):
        self.full = full
        self.active = full
        self._idx: dict = {}

    def scale(self, n: int) -> int:
        return n * self.active // self.full

    def index(self, full: int, active: int, blocks: int, device) -> slice | torch.Tensor:
        """Channels of the active part when a tensor is ``blocks`` equal parts (a concat of node states)."""
        if blocks == 1 or active == full:
            return slice(0, active)
        key = (full, active, blocks, str(device))
        if key not in self._idx:
            b, a = full // blocks, active // blocks
            self._idx[key] = torch.cat([torch.arange(i * b, i * b + a) for i in range(blocks)]).to(device)
        return self._idx[key]


class DynConv2d(nn.Conv2d):
    width: Width
    in_blocks = 1
    out_blocks = 1
    scale_out = True

    def forward(self, x):
        cin = x.shape[1]
        cout = self.width.scale(self.out_channels) if self.scale_out else self.out_channels
        if self.groups > 1:  # depthwise: one filter per active channel
            return F.conv2d(x, self.weight[:cin], None, self.stride, self.padding, self.dilation, cin)
        w = self.weight[self.width.index(self.out_channels, cout, self.out_blocks, x.device)]
        if cin != self.in_channels:
            w = w[:, self.width.index(self.in_channels, cin, self.in_blocks, x.device)]
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, 1)


class DynBatchNorm2d(nn.BatchNorm2d):
    """Batch statistics always: running statistics mean nothing when every step samples another network."""

    width: Width
    blocks = 1

    def forward(self, x):
        c = x.shape[1]
        w = b = None
        if self.affine:
            idx = self.width.index(self.num_features, c, self.blocks, x.device)
            w, b = self.weight[idx], self.bias[idx]
        return F.batch_norm(x, None, None, w, b, True, 0.0, self.eps)


class DynLinear(nn.Linear):
    width: Width
    in_blocks = 1

    def forward(self, x):
        w = (
            self.weight
            if x.shape[1] == self.in_features
            else self.weight[:, self.width.index(self.in_features, x.shape[1], self.in_blocks, x.device)]
        )
        return F.linear(x, w, self.bias)


def make_dynamic(module: nn.Module, width: Width, in_blocks: int = 1, out_blocks: int = 1) -> nn.Module:
    """Swap every Conv2d / BatchNorm2d / Linear under ``module`` for its width-sliced twin (same weights)."""
    swaps = {nn.Conv2d: DynConv2d, nn.BatchNorm2d: DynBatchNorm2d, nn.Linear: DynLinear}
    targets = [module] if type(module) in swaps else []
    targets += [m for m in module.modules() if type(m) in swaps and m is not module]
    for target in targets:
        target.__class__ = swaps[type(target)]
        m = cast(Any, target)  # now one of the Dyn classes: their attributes, not nn.Module's __setattr__ types
        m.width = width
        if isinstance(m, DynConv2d):
            assert m.bias is None, "search convolutions carry no bias"
            m.in_blocks, m.out_blocks = in_blocks, out_blocks
        elif isinstance(m, DynLinear):
            m.in_blocks = in_blocks
        else:
            m.blocks = out_blocks
    for sub in module.modules():  # a factorized reduce concatenates two half-width convolutions
        if isinstance(sub, FactorizedReduce):
            cast(Any, sub.bn).blocks = 2
    return module


@dataclass
class CellChoice:
    """One sampled cell: per node, two (input, op) slots and the straight-through weight of each.

    The op is an index (sampled: run that op) or a tensor of one weight per op (mixed)."""

    slots: list  # [(node, input, op index or op weights, weight tensor)]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class PartialMix(nn.Module):
    """PC-DARTS' partial-channel mixed edge: every op on the first ``1/k`` of the channels."""

    def __init__(self, ops: list[nn.Module], k: int, stride: int):
        super().__init__()
        self.ops, self.k = nn.ModuleList(ops), k
        self.bypass = nn.MaxPool2d(2, 2) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // self.k
        xa, xb = x[:, :c], x[:, c:]
        mixed = sum(op(xa) * weights[o] for o, op in enumerate(self.ops) if not _is_zero(weights[o]))
        return channel_shuffle(torch.cat([mixed, self.bypass(xb)], 1), self.k) if self.k > 1 else mixed


def _is_zero(w) -> bool:
    return not w.requires_grad and float(w) == 0.0


def _edge_op(op: str, c: int, stride: int) -> nn.Module:
    """The registry's op; a pooling gets DARTS' BatchNorm (no affine) after it, so that a path
    switching between a pooling (raw activations) and a convolution (normalised) feeds the layers
    after it inputs of one scale. Without it the loss rose at once (2.0 -> 2.6 in 60 steps, uniform
    ops, fixed size); with it, it fell for 120 steps (1.96 -> 1.88) but rose over longer runs too
    (README, "The FER2013 run")."""
    m = build_op(op, c, stride, False)
    return nn.Sequential(m, nn.BatchNorm2d(c, affine=False)) if "pool" in op else m


class SearchCell(nn.Module):
    def __init__(
        self,
        space: SearchSpace,
        width: Width,
        c_pp: int,
        c_p: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
        partial: int | None = None,
    ):
        super().__init__()
        m = space.multiplier
        self.reduction, self.nodes = reduction, space.nodes
        pre0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.pre0 = make_dynamic(pre0, width, in_blocks=m)
        self.pre1 = make_dynamic(ReLUConvBN(c_p, c, 1, 1, 0, affine=False), width, in_blocks=m)
        # edges[node][input]: the ops of an edge, shared by the node's two slots (DARTS' per-edge weights);
        # sampled: a list of full-width ops; partial: a PartialMix of ops 1/partial as wide
        self.partial = partial
        k = partial or 1
        if c % k:
            raise ValueError(f"{c} channels do not split into {k} parts")

        def edge(stride: int) -> nn.Module:
            ops = [make_dynamic(_edge_op(op, c // k, stride), width) for op in space.ops]
            return PartialMix(ops, k, stride) if partial else nn.ModuleList(ops)

        self.edges = nn.ModuleList(
            nn.ModuleList(edge(2 if reduction and j < 2 else 1) for j in range(i + 2)) for i in range(space.nodes)
        )

    def forward(self, s0, s1, choice: CellChoice):
        uses = {j for _, j, _, _ in choice.slots}
        states = [self.pre0(s0) if 0 in uses else None, self.pre1(s1) if 1 in uses else None]
        edges = cast(Any, self.edges)  # edges[node][input][op], nested ModuleLists
        for i in range(self.nodes):
            total = None
            for node, j, o, w in choice.slots:
                if node == i:
                    h = (edges[i][j](states[j], o) if self.partial else edges[i][j][o](states[j])) * w
                    total = h if total is None else total + h
            states.append(total)
        return torch.cat([s for s in states[2:] if s is not None], dim=1)  # every node has two slots


class SuperNet(nn.Module):
    """All networks of ``space``; ``forward(x, sample)`` runs the sampled one."""

    def __init__(self, space: SearchSpace, partial: int | None = None):
        super().__init__()
        self.space, self.partial = space, partial
        m, wmax, dmax = space.multiplier, max(space.widths), max(space.depths)
        self.width = Width(wmax)
        self.stem = make_dynamic(
            nn.Sequential(
                nn.Conv2d(space.in_channels, m * wmax, 3, stride=space.stem_stride, padding=1, bias=False),
                nn.BatchNorm2d(m * wmax),
            ),
            self.width,
            out_blocks=m,
        )
        cast(DynConv2d, cast(nn.Sequential, self.stem)[0]).scale_out = True
        self.stages = nn.ModuleList()
        self.reductions = nn.ModuleList()
        c_prev = m * wmax
        for k, (c, _res) in enumerate(stage_shapes(space, wmax)):
            if k > 0:
                self.reductions.append(SearchCell(space, self.width, c_prev, c_prev, c, True, False, partial))
            cells = nn.ModuleList(
                SearchCell(
                    space,
                    self.width,
                    c_prev if (k > 0 and n == 0) else m * c,
                    m * c,
                    c,
                    False,
                    k > 0 and n == 0,
                    partial,
                )
                for n in range(dmax)
            )
            self.stages.append(cells)
            c_prev = m * c
        self.classifier = make_dynamic(nn.Linear(c_prev, space.num_classes), self.width, in_blocks=m)

    def forward(self, x, sample):
        """``sample``: width, depth, normal and reduce :class:`CellChoice` (see ``ArchSampler``)."""
        self.width.active = sample.width
        s0 = s1 = self.stem(x)
        for k, cells in enumerate(cast(list[nn.ModuleList], self.stages)):
            if k > 0:
                s0, s1 = s1, self.reductions[k - 1](s0, s1, sample.reduce)
            for cell in cells[: sample.depth]:
                s0, s1 = s1, cell(s0, s1, sample.normal)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        self.width.active = self.width.full
        return logits
