"""DARTS-style cell network for face frames (macro) and dynamic images (micro).

Differences from the CIFAR original, because faces are not CIFAR: the stem takes 1 or 3
channels and may stride by 2 for larger inputs, and the auxiliary head pools adaptively so it
works at any supported input size (the DARTS head assumed an 8x8 map). Training returns
``(logits, aux_logits)`` when the auxiliary head is on; eval and export return logits only.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..genotype import Genotype
from .flip import FlipAveraged
from .ops import FactorizedReduce, ReLUConvBN, build_op, drop_path


class Cell(nn.Module):
    def __init__(
        self, genotype: Genotype, c_prev_prev: int, c_prev: int, c: int, reduction: bool, reduction_prev: bool
    ):
        super().__init__()
        self.reduction = reduction
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        # An input no edge or concat reads costs nothing: searched cells often ignore c_{k-2}.
        uses0 = any(idx == 0 for _, idx in edges) or 0 in self.concat
        uses1 = any(idx == 1 for _, idx in edges) or 1 in self.concat
        self.preprocess0 = (
            (FactorizedReduce(c_prev_prev, c) if reduction_prev else ReLUConvBN(c_prev_prev, c, 1, 1, 0))
            if uses0
            else None
        )
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0) if uses1 else None
        self.indices = [idx for _, idx in edges]
        self.ops = nn.ModuleList(build_op(op, c, 2 if reduction and idx < 2 else 1, True) for op, idx in edges)
        self.multiplier = len(self.concat)
        self.steps = len(edges) // 2

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states: list[torch.Tensor | None] = [
            self.preprocess0(s0) if self.preprocess0 is not None else None,
            self.preprocess1(s1) if self.preprocess1 is not None else None,
        ]
        for i in range(self.steps):
            total = None
            for j in (2 * i, 2 * i + 1):
                op = self.ops[j]
                h = op(states[self.indices[j]])
                if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        # None only for an input that no edge or concat reads (__init__), so the filter drops nothing
        return torch.cat([s for i in self.concat if (s := states[i]) is not None], dim=1)


class AuxiliaryHead(nn.Module):
    """Size-agnostic version of DARTS' auxiliary head (adaptive pooling to 2x2)."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class CellNetwork(FlipAveraged, nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        net = config.network
        g = config.genotype
        assert g is not None
        layers = net["layers"]
        c = net["init_channels"]
        c_stem = net["stem_multiplier"] * c
        self.drop_path_prob = 0.0  # set per epoch by the trainer, from config.network["drop_path"]
        self.test_time_flip = net["test_time_flip"]
        self.stem = nn.Sequential(
            nn.Conv2d(net["in_channels"], c_stem, 3, stride=net["stem_stride"], padding=1, bias=False),
            nn.BatchNorm2d(c_stem),
        )
        self.reduction_at = (layers // 3, 2 * layers // 3)
        c_pp, c_p, c_cur = c_stem, c_stem, c
        reduction_prev = False
        self.cells = nn.ModuleList()
        c_aux = 0  # set at the second reduction, which every depth has (2 * layers // 3 < layers)
        for i in range(layers):
            reduction = i in self.reduction_at
            if reduction:
                c_cur *= 2
            cell = Cell(g, c_pp, c_p, c_cur, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_cur
            if i == self.reduction_at[1]:
                c_aux = c_p
        self.aux_index = self.reduction_at[1]
        self.aux_head = AuxiliaryHead(c_aux, net["num_classes"]) if net["auxiliary"] else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(net["dropout"]) if net["dropout"] > 0 else nn.Identity()
        self.classifier = nn.Linear(c_p, net["num_classes"])

    def _forward(self, x: torch.Tensor):
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.aux_head is not None and self.training:
                aux = self.aux_head(s1)
        logits = self.classifier(self.dropout(self.pool(s1).flatten(1)))
        if aux is not None:
            return logits, aux
        return logits
