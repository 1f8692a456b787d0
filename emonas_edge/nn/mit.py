"""Mix-Transformer (SegFormer MiT) backbone with a multiscale fusion head, for expressions.

MiT suits faces at small sizes: overlapping patch embeddings keep local texture, spatial-
reduction attention keeps attention cheap, and Mix-FFN's depthwise 3x3 conv replaces
positional encodings, so any input size >= 32 works without interpolating position tables.
The fusion block is SegFormer's all-MLP decoder turned into a classifier: every stage is
projected to one width, upsampled to the first stage's grid, concatenated and fused.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MIT_VARIANTS as VARIANTS  # noqa: F401  (re-exported: the table lives with the settings)
from ..config import ModelConfig, mit_grids
from .flip import FlipAveraged

MLP_RATIO = 4


class OverlapPatchEmbed(nn.Module):
    def __init__(self, c_in: int, dim: int, patch: int, stride: int, grid: int):
        super().__init__()
        self.proj = nn.Conv2d(c_in, dim, patch, stride=stride, padding=patch // 2)
        self.norm = nn.LayerNorm(dim)
        self.shape = (-1, dim, grid * grid)  # reshape, not flatten: flatten exports as a Shape/Slice/Concat chain

    def forward(self, x):
        return self.norm(self.proj(x).reshape(self.shape).transpose(1, 2))


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a map shrunk by ``sr`` in each direction."""

    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, stride=sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, h: int, w: int):
        # h, w and the width are Python ints fixed by the config, the batch is -1: the export then holds
        # no Shape/Gather/Concat chains computing sizes at run time (about half the graph's nodes before)
        c, d = self.q.in_features, self.q.in_features // self.heads
        q = self.q(x).reshape(-1, h * w, self.heads, d).transpose(1, 2)
        if self.sr_ratio > 1:
            y = x.transpose(1, 2).reshape(-1, c, h, w)
            y = self.norm(self.sr(y).reshape(-1, c, self._kv_len(h, w)).transpose(1, 2))
        else:
            y = x
        k, v = self.kv(y).reshape(-1, self._kv_len(h, w), 2, self.heads, d).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, h * w, c)
        return self.proj(out)

    def _kv_len(self, h: int, w: int) -> int:
        r = self.sr_ratio
        return h * w if r == 1 else ((h - r) // r + 1) * ((w - r) // r + 1)


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, h: int, w: int):
        x = self.fc1(x)
        hidden = self.fc1.out_features
        x = self.dwconv(x.transpose(1, 2).reshape(-1, hidden, h, w)).reshape(-1, hidden, h * w).transpose(1, 2)
        return self.fc2(self.act(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, dim * MLP_RATIO)
        self.drop_path = drop_path

    def _dp(self, x):
        if not self.training or self.drop_path <= 0:
            return x
        keep = 1 - self.drop_path
        mask = torch.empty(x.shape[0], 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x / keep * mask

    def forward(self, x, h: int, w: int):
        x = x + self._dp(self.attn(self.norm1(x), h, w))
        return x + self._dp(self.mlp(self.norm2(x), h, w))


class MiTStage(nn.Module):
    def __init__(self, c_in, dim, depth, heads, sr, patch, stride, dpr, grid: int):
        super().__init__()
        self.embed = OverlapPatchEmbed(c_in, dim, patch, stride, grid)
        self.blocks = nn.ModuleList(Block(dim, heads, sr, p) for p in dpr)
        self.norm = nn.LayerNorm(dim)
        self.dim, self.grid = dim, grid  # the token grid's side at the config's input size

    def forward(self, x):
        h = w = self.grid
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x, h, w)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(-1, self.dim, h, w)


class MultiscaleFusion(nn.Module):
    def __init__(self, dims, width: int, grids: list[int]):
        super().__init__()
        # every stage is upsampled to the first stage's grid: by a whole factor where the grids allow
        # (the export's Resize then takes constant scales, not sizes computed from Shape at run time)
        self.size = (grids[0], grids[0])
        self.factors = [grids[0] // g if grids[0] % g == 0 else None for g in grids]
        self.proj = nn.ModuleList(nn.Conv2d(d, width, 1) for d in dims)
        self.fuse = nn.Sequential(
            nn.Conv2d(width * len(dims), width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        ups = []
        for i, (p, f) in enumerate(zip(self.proj, feats, strict=True)):
            y, k = p(f), self.factors[i]
            if i > 0 and k is not None:
                y = F.interpolate(y, scale_factor=float(k), mode="bilinear", align_corners=False)
            elif i > 0:
                y = F.interpolate(y, size=self.size, mode="bilinear", align_corners=False)
            ups.append(y)
        return self.fuse(torch.cat(ups, dim=1))


class MiTClassifier(FlipAveraged, nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        net = config.network
        self.test_time_flip = net["test_time_flip"]
        total = sum(net["depths"])  # dims/depths/heads/decoder: the variant's unless the config overrides them
        dpr = [net["drop_path"] * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        grids = mit_grids(net["input_size"])  # sizes are fixed by the config, so the graph computes none
        c_in, k = net["in_channels"], 0
        for s, (dim, depth, heads) in enumerate(zip(net["dims"], net["depths"], net["heads"], strict=True)):
            patch, stride = (7, 4) if s == 0 else (3, 2)
            sr, grid = net["sr_ratios"][s], grids[s]
            self.stages.append(MiTStage(c_in, dim, depth, heads, sr, patch, stride, dpr[k : k + depth], grid))
            c_in, k = dim, k + depth
        # Without fusion (the ablation) the classifier sees the last stage only.
        self.fusion = MultiscaleFusion(net["dims"], net["decoder"], grids) if net["fusion"] else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(net["dropout"]) if net["dropout"] > 0 else nn.Identity()
        width = net["decoder"] if net["fusion"] else net["dims"][-1]
        self.classifier = nn.Linear(width, net["num_classes"])
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        y = self.pool(self.fusion(feats) if self.fusion is not None else x).flatten(1)
        return self.classifier(self.dropout(y))
