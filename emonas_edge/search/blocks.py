"""The latency blocks of a cell network: the units the latency table times and the predictor adds up.

A block is what ONNX Runtime runs as one piece after export: a stem convolution (BatchNorm folded
in), a cell's 1x1 preprocessing convolution or factorized reduce, one edge operation at its
channel count, stride and resolution, a node's Add, a cell's Concat, the pooling + linear head.
Fusions (Conv+BN, Conv+ReLU) happen inside blocks, never across them: every block starts at a
ReLU or an Add/Concat boundary, which is why timing blocks as exported predicts whole networks
where summing bare PyTorch modules does not.

:func:`network_blocks` walks a config exactly as ``nn/cellnet.py`` builds it (a test holds the
two together through the block count of the exported graph); block keys are plain strings so
the table is readable JSON.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..config import ModelConfig
from ..errors import UserError


def k_stem(cin: int, cout: int, stride: int, res: int) -> str:
    return f"stem:{cin}>{cout}:s{stride}:r{res}"


def k_pre(cin: int, cout: int, res: int) -> str:
    return f"pre:{cin}>{cout}:r{res}"


def k_fr(cin: int, cout: int, res: int) -> str:
    return f"fr:{cin}>{cout}:r{res}"


def k_op(op: str, c: int, stride: int, res: int, fr_from: int | None = None) -> str | None:
    """None where the op is free after export (identity skip). ``fr_from``: the op reads a factorized
    reduce of that many channels, whose BatchNorm stays float after export (it follows a concat), so
    ONNX Runtime may run the op itself in float there (a max pool: ~190 us instead of ~10 here)."""
    if op == "skip_connect" and stride == 1:
        return None
    return f"op:{op}:c{c}:s{stride}:r{res}" + (f":fr{fr_from}" if fr_from else "")


def edge_key(op: str, j: int, *, reduction: bool, reduction_prev: bool, c_pp: int, c: int, res: int) -> str | None:
    """The block of one edge: ``op`` reading state ``j`` of a cell at this place."""
    r_out = res // 2 if reduction else res
    stride = 2 if reduction and j < 2 else 1
    return k_op(op, c, stride, res if j < 2 else r_out, c_pp if (reduction_prev and j == 0) else None)


def k_add(c: int, res: int) -> str:
    return f"add:c{c}:r{res}"


def k_concat(n: int, c: int, res: int) -> str | None:
    return None if n == 1 else f"concat:{n}x{c}:r{res}"


def k_head(c: int, classes: int, res: int) -> str:
    return f"head:{c}>{classes}:r{res}"


def cell_blocks(
    genotype_edges, concat, *, reduction: bool, reduction_prev: bool, c_pp: int, c_p: int, c: int, res: int
) -> list[str]:
    """Blocks of one cell whose inputs are at resolution ``res`` (``s0`` at 2x res after a reduction)."""
    out: list[str] = []
    idxs = [i for _, i in genotype_edges]
    if 0 in idxs or 0 in concat:
        out.append(k_fr(c_pp, c, 2 * res) if reduction_prev else k_pre(c_pp, c, res))
    if 1 in idxs or 1 in concat:
        out.append(k_pre(c_p, c, res))
    r_out = res // 2 if reduction else res
    for op, i in genotype_edges:
        key = edge_key(op, i, reduction=reduction, reduction_prev=reduction_prev, c_pp=c_pp, c=c, res=res)
        if key:
            out.append(key)
    out.extend(k_add(c, r_out) for _ in range(len(genotype_edges) // 2))
    key = k_concat(len(concat), c, r_out)
    if key:
        out.append(key)
    return out


@dataclass(frozen=True)
class CellPlace:
    """Where one cell sits: what ``cellnet`` gives it (channels, resolution of its inputs)."""

    reduction: bool
    reduction_prev: bool
    c_pp: int
    c_p: int
    c: int
    res: int


def cell_places(layers: int, init_channels: int, stem_channels: int, res: int, concat_len: int) -> list[CellPlace]:
    """The cells of a network in order, walked exactly as ``nn/cellnet.py`` builds them."""
    reduction_at = (layers // 3, 2 * layers // 3)
    c_pp, c_p, c_cur, reduction_prev = stem_channels, stem_channels, init_channels, False
    places = []
    for i in range(layers):
        reduction = i in reduction_at
        if reduction:
            c_cur *= 2
        places.append(CellPlace(reduction, reduction_prev, c_pp, c_p, c_cur, res))
        if reduction:
            res //= 2
        reduction_prev = reduction
        c_pp, c_p = c_p, concat_len * c_cur
    return places


def live_cells(places: list[CellPlace], genotype) -> list[bool]:
    """Which cells the exported network still runs. A cell whose slots all read ``s0`` skips the cell
    before it; when no later cell reads that one either, the simplified ONNX has dropped it. Measured
    on 60 random networks: 5 dead cells made the prediction 59% too high (median) before this."""
    reads = []
    for p in places:
        edges, concat = (
            (genotype.reduce, genotype.reduce_concat) if p.reduction else (genotype.normal, genotype.normal_concat)
        )
        reads.append({i for _, i in edges if i < 2} | {i for i in concat if i < 2})
    live = [False] * len(places)
    live[-1] = True  # the head reads the last cell
    for k in range(len(places) - 1, -1, -1):
        if live[k]:
            for j in reads[k]:  # s0 is cell k-2's output, s1 cell k-1's (the stem's before the first cells)
                if k - 2 + j >= 0:
                    live[k - 2 + j] = True
    return live


def network_blocks(config: ModelConfig, *, drop_dead: bool = True) -> list[str]:
    """Every block of a cell network, in order (repeats kept: each runs). ``drop_dead=False`` counts
    cells the export drops too (what the search's closed-form expectation counts)."""
    if config.family != "cell":
        raise UserError(f"{config.name}: the latency table covers cell networks only (family {config.family!r})")
    net, g = config.network, config.genotype
    if g is None:
        raise UserError(f"{config.name}: a cell network without a genotype")
    if net.get("test_time_flip"):
        raise UserError(
            f"{config.name}: the latency table times batch-1 networks; test-time flip runs a batch of two (predict "
            "without it)"
        )
    if len(g.normal_concat) != len(g.reduce_concat):
        raise UserError(
            f"{config.name}: normal and reduction cells of different widths are outside the searched spaces"
        )
    c_stem = net["stem_multiplier"] * net["init_channels"]
    blocks = [k_stem(net["in_channels"], c_stem, net["stem_stride"], net["input_size"])]
    places = cell_places(
        net["layers"], net["init_channels"], c_stem, net["input_size"] // net["stem_stride"], len(g.normal_concat)
    )
    live = live_cells(places, g) if drop_dead else [True] * len(places)
    for p, alive in zip(places, live, strict=True):
        if not alive:
            continue
        edges, concat = (g.reduce, g.reduce_concat) if p.reduction else (g.normal, g.normal_concat)
        blocks += cell_blocks(
            edges,
            concat,
            reduction=p.reduction,
            reduction_prev=p.reduction_prev,
            c_pp=p.c_pp,
            c_p=p.c_p,
            c=p.c,
            res=p.res,
        )
    last = places[-1]
    blocks.append(
        k_head(
            len(g.reduce_concat if last.reduction else g.normal_concat) * last.c,
            net["num_classes"],
            last.res // 2 if last.reduction else last.res,
        )
    )
    return blocks


def block_histogram(config: ModelConfig) -> Counter:
    return Counter(network_blocks(config))


# --------------------------------------------------------------------------- PyTorch modules of blocks


def _parse(key: str) -> tuple[str, list[str]]:
    kind, *rest = key.split(":")
    return kind, rest


def _num(s: str, prefix: str) -> int:
    if not s.startswith(prefix):
        raise ValueError(s)
    return int(s[len(prefix) :])


def block_module(key: str):
    """``(module, input shapes)`` that export to the block ``key`` at batch 1 (eval mode, BN folded)."""
    import torch
    from torch import nn

    from ..nn.ops import FactorizedReduce, ReLUConvBN, build_op

    kind, rest = _parse(key)
    if kind == "stem":
        cin, cout = map(int, rest[0].split(">"))
        stride, res = _num(rest[1], "s"), _num(rest[2], "r")
        m: nn.Module = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout)
        )
        return m, [(1, cin, res, res)]
    if kind in ("pre", "fr"):
        cin, cout = map(int, rest[0].split(">"))
        res = _num(rest[1], "r")
        m = FactorizedReduce(cin, cout) if kind == "fr" else ReLUConvBN(cin, cout, 1, 1, 0)
        return m, [(1, cin, res, res)]
    if kind == "op":  # an optional 5th field (fr<cin>) only changes the sandwich around it
        op, c, stride, res = rest[0], _num(rest[1], "c"), _num(rest[2], "s"), _num(rest[3], "r")
        return build_op(op, c, stride, True), [(1, c, res, res)]
    if kind == "add":
        c, res = _num(rest[0], "c"), _num(rest[1], "r")

        class Add(nn.Module):
            def forward(self, a, b):
                return a + b

        return Add(), [(1, c, res, res)] * 2
    if kind == "concat":
        n, c = map(int, rest[0].split("x"))
        res = _num(rest[1], "r")

        class Cat(nn.Module):
            def forward(self, *xs):
                return torch.cat(xs, dim=1)

        return Cat(), [(1, c, res, res)] * n
    if kind == "head":
        c, classes = map(int, rest[0].split(">"))
        res = _num(rest[1], "r")

        class Head(nn.Module):
            def __init__(self):
                super().__init__()
                self.pool = nn.AdaptiveAvgPool2d(1)
                self.classifier = nn.Linear(c, classes)

            def forward(self, x):
                return self.classifier(self.pool(x).flatten(1))

        return Head(), [(1, c, res, res)]
    raise ValueError(f"unknown block {key!r}")
