"""The architecture distribution: what the search learns, how a path is sampled from it, what it costs.

Per cell kind (normal, reduction), each node has two slots; a slot picks one input (an earlier
state) and one operation. Both are categorical distributions with learnable logits, sampled with
GDAS's straight-through Gumbel-softmax: the forward pass runs exactly one input and one op per
slot (a step costs one network), the backward pass still reaches every logit of the slot.
Width and depth are categorical too; they change which weights run rather than scaling a
tensor, so their accuracy signal is a score-function (REINFORCE) estimate against a running
baseline, and their latency signal is exact.

Latency is differentiable in closed form: the table's prediction is a sum of block costs, so its
expectation under the distribution is a rational function of the probabilities (:class:`ExpectedLatency`).
That is what lets a penalty or a target steer every choice, not only the sampled one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..genotype import Genotype
from .blocks import cell_places, edge_key, k_add, k_concat, k_fr, k_head, k_pre, k_stem
from .lut import LatencyTable
from .space import SearchSpace, genotype_of, layers_for_depth
from .supernet import CellChoice

KINDS = ("normal", "reduce")


@dataclass
class Sample:
    """One path through the supernet (what ``SuperNet.forward`` runs)."""

    width: int
    depth: int
    normal: CellChoice
    reduce: CellChoice
    width_index: int
    depth_index: int
    log_prob: torch.Tensor | float = 0.0  # of width and depth (REINFORCE)


def _gumbel_st(logits: torch.Tensor, tau: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Straight-through Gumbel-softmax: one-hot forward, soft-sample gradient; masked logits (-inf) never win."""
    u = torch.rand(logits.shape, generator=g).clamp_(1e-10, 1 - 1e-10)
    y = F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)
    idx = y.argmax(-1)
    hard = F.one_hot(idx, logits.shape[-1]).to(y.dtype)
    return hard - y.detach() + y, idx


class ArchParams(nn.Module):
    """Logits of every choice: ``alpha`` ops and ``gamma`` inputs [kind, node, slot, ...], ``beta_*`` width
    and depth."""

    valid: torch.Tensor  # [kind, node, slot, input]: which inputs a node may read (earlier states only)

    def __init__(self, space: SearchSpace):
        super().__init__()
        n = space.nodes
        self.space = space
        self.alpha = nn.Parameter(torch.zeros(2, n, 2, len(space.ops)))
        self.gamma = nn.Parameter(torch.zeros(2, n, 2, n + 1))
        self.beta_width = nn.Parameter(torch.zeros(len(space.widths)))
        self.beta_depth = nn.Parameter(torch.zeros(len(space.depths)))
        valid = torch.tensor([[j < i + 2 for j in range(n + 1)] for i in range(n)])
        self.register_buffer("valid", valid[None, :, None, :].expand(2, n, 2, n + 1).clone(), persistent=False)

    def input_logits(self) -> torch.Tensor:
        return self.gamma.masked_fill(~self.valid, float("-inf"))

    def probs(self) -> dict[str, torch.Tensor]:
        return {
            "ops": F.softmax(self.alpha, -1),
            "inputs": F.softmax(self.input_logits(), -1),
            "width": F.softmax(self.beta_width, -1),
            "depth": F.softmax(self.beta_depth, -1),
        }

    def sample(
        self, g: torch.Generator, tau: float, *, uniform: bool = False, grad: bool = True, mixed: bool = False
    ) -> Sample:
        """A path; ``uniform`` ignores the learnt logits (weight warm-up), ``grad=False`` gives plain weights of 1.
        ``mixed``: each slot gets every op's probability (a partial-channel supernet runs them all) instead
        of one sampled op; inputs, width and depth are sampled either way."""
        alpha = torch.zeros_like(self.alpha) if uniform else self.alpha
        gamma = self.gamma.detach() * 0 if uniform else self.gamma
        inputs_logits = gamma.masked_fill(~self.valid, float("-inf"))
        with torch.set_grad_enabled(grad and not uniform):
            w_op, i_op = _gumbel_st(alpha, tau, g)
            w_in, i_in = _gumbel_st(inputs_logits, tau, g)
            bw = torch.zeros_like(self.beta_width) if uniform else self.beta_width
            bd = torch.zeros_like(self.beta_depth) if uniform else self.beta_depth
            wi = int(torch.multinomial(F.softmax(bw.detach(), -1), 1, generator=g))
            di = int(torch.multinomial(F.softmax(bd.detach(), -1), 1, generator=g))
            log_prob = F.log_softmax(bw, -1)[wi] + F.log_softmax(bd, -1)[di] if grad and not uniform else 0.0
            op_mix = F.softmax(alpha, -1) if grad and not uniform else F.softmax(alpha.detach(), -1)
        cells = []
        for k in range(2):
            slots: list[tuple] = []
            for i in range(self.space.nodes):
                for s in range(2):
                    j, o = int(i_in[k, i, s]), int(i_op[k, i, s])
                    learnt = grad and not uniform
                    if mixed:  # the op's weight is in the mixture; the slot's weight is its input's
                        slots.append((i, j, op_mix[k, i, s], w_in[k, i, s, j] if learnt else 1.0))
                    else:
                        slots.append((i, j, o, w_in[k, i, s, j] * w_op[k, i, s, o] if learnt else 1.0))
            cells.append(CellChoice(slots))
        return Sample(self.space.widths[wi], self.space.depths[di], cells[0], cells[1], wi, di, log_prob)

    def edge_log_probs(self) -> torch.Tensor:
        """log P(an edge) [kind, node, input, op], in float64: P is the mean over a node's two slots of
        P(input) P(op). The slots share their edges' modules, so what a node learns is this distribution
        over edges; the derived cell keeps its two most likely edges and the latency objective prices
        that pair. Logs, because a strong penalty drives the runner-up edges below float underflow while
        their *order* still decides the derived second edge. Inputs a node may not read get -1e30
        (not -inf, whose gradients are NaN)."""
        log_op = F.log_softmax(self.alpha.double(), -1)
        log_in = F.log_softmax(self.gamma.double().masked_fill(~self.valid, -1e30), -1)
        joint = log_in[..., :, None] + log_op[..., None, :]  # [kind, node, slot, input, op]
        return torch.logsumexp(joint, 2) - math.log(2)

    def argmax(self) -> tuple[Genotype, int, int]:
        """The most likely genotype, width and depth.

        Per node, the two most likely *different* (input, op) edges, as DARTS keeps a node's two strongest
        edges: a node's two slots share their edges' weights (one module per input and op), so in the
        supernet the same edge twice is that one module doubled, and a slot-by-slot argmax, whose two
        slots learn alike, would return it as two separately weighted copies. Input and op may repeat
        on their own: conv_3x3 and skip_connect on one input is a residual block."""
        with torch.no_grad():
            q = self.edge_log_probs()
            n_ops = len(self.space.ops)
            cells: list[list[tuple[str, int]]] = [[], []]
            for k in range(2):
                for i in range(self.space.nodes):
                    top = torch.topk(q[k, i, : i + 2].flatten(), 2).indices  # the node's valid inputs only
                    cells[k] += [(self.space.ops[int(t) % n_ops], int(t) // n_ops) for t in top]
            return (
                genotype_of(cells[0], cells[1], self.space.nodes),
                self.space.widths[int(self.beta_width.argmax())],
                self.space.depths[int(self.beta_depth.argmax())],
            )

    def summary(self) -> dict:
        """Probabilities as plain lists, for the per-epoch log and the search record."""
        p = self.probs()
        sp = self.space
        out: dict[str, object] = {
            "width": dict(zip(map(str, sp.widths), _r(p["width"]), strict=True)),
            "depth": dict(zip(map(str, sp.depths), _r(p["depth"]), strict=True)),
        }
        for k, kind in enumerate(KINDS):
            out[kind] = [
                {
                    "node": i,
                    "slot": s,
                    "ops": dict(zip(sp.ops, _r(p["ops"][k, i, s]), strict=True)),
                    "inputs": _r(p["inputs"][k, i, s, : i + 2]),
                }
                for i in range(sp.nodes)
                for s in range(2)
            ]
        return out


def _then(log_q: torch.Tensor) -> torch.Tensor:
    """P(second edge f | first edge e) [.., e, f] = q_f / sum over g != e of q_g, 0 on the diagonal, from
    log probabilities (1 - q_e cancels to 0 once one edge holds nearly all the mass)."""
    n = log_q.shape[-1]
    others = log_q[..., None, :].expand(*log_q.shape, n).masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
    return (others - torch.logsumexp(others, -1, keepdim=True)).exp()


def _pair_sum(q: torch.Tensor, then: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """E[cost(e) + cost(f)] for e drawn from q, then f != e from q renormalised (sampling without
    replacement), over the last axis; ``cost`` [..., edge] broadcasts against ``q``."""
    first = (q * cost).sum(-1)
    second = (q * (then * cost[..., None, :]).sum(-1)).sum(-1)
    return first + second


def _pair_within(q: torch.Tensor, then: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """P(both edges of the pair drawn as in :func:`_pair_sum` are ``allowed``)."""
    a = allowed.to(q.dtype)
    return (q * a * (then * a).sum(-1)).sum(-1)


def _r(t: torch.Tensor) -> list[float]:
    return [round(float(v), 4) for v in t.detach()]


class ExpectedLatency:
    """E[predicted latency] of the distribution, differentiable in every logit.

    For each (width, depth) the table's block costs are summed into per-cell-kind tensors
    ``edges[node, input, op]`` and preprocessing costs. A node's cost is that of two *different* edges
    drawn in turn from its edge distribution (:meth:`ArchParams.edge_probs`), the pair the derivation
    keeps: pricing two independent slots instead let a strong penalty pile both slots on the cheapest
    edge and left the derived second edge to chance (a test caught networks 10% above the cheapest).
    A cell reads input 0 (or 1) unless no node's pair reads it. Everything else is constant.
    """

    def __init__(self, space: SearchSpace, table: LatencyTable):
        self.space, self.table = space, table
        n, n_ops = space.nodes, len(space.ops)
        wd = [(w, d) for w in space.widths for d in space.depths]
        self.const = torch.zeros(len(space.widths), len(space.depths), dtype=torch.float64)
        self.edges = torch.zeros(len(space.widths), len(space.depths), 2, n, n + 1, n_ops, dtype=torch.float64)
        self.pre = torch.zeros(len(space.widths), len(space.depths), 2, 2, dtype=torch.float64)  # [.., kind, input]
        for w, d in wd:
            wi, di = space.widths.index(w), space.depths.index(d)
            self._fill(wi, di, w, d)

    def _cost(self, key: str | None) -> float:
        return 0.0 if key is None else self.table.raw_ms([key]) - self.table.overhead_ms

    def _fill(self, wi: int, di: int, width: int, depth: int) -> None:
        sp, n = self.space, self.space.nodes
        stem = sp.multiplier * width
        places = cell_places(layers_for_depth(depth), width, stem, sp.input_size // sp.stem_stride, n)
        const = self._cost(k_stem(sp.in_channels, stem, sp.stem_stride, sp.input_size))
        for p in places:
            k = 1 if p.reduction else 0
            r_out = p.res // 2 if p.reduction else p.res
            self.pre[wi, di, k, 0] += self._cost(
                k_fr(p.c_pp, p.c, 2 * p.res) if p.reduction_prev else k_pre(p.c_pp, p.c, p.res)
            )
            self.pre[wi, di, k, 1] += self._cost(k_pre(p.c_p, p.c, p.res))
            const += n * self._cost(k_add(p.c, r_out)) + self._cost(k_concat(n, p.c, r_out))
            key = partial(
                edge_key, reduction=p.reduction, reduction_prev=p.reduction_prev, c_pp=p.c_pp, c=p.c, res=p.res
            )
            for i in range(n):
                for j in range(i + 2):
                    for o, op in enumerate(sp.ops):
                        self.edges[wi, di, k, i, j, o] += self._cost(key(op, j))
        last = places[-1]
        const += self._cost(k_head(n * last.c, sp.num_classes, last.res // 2 if last.reduction else last.res))
        self.const[wi, di] = const

    def per_width_depth(self, arch: ArchParams) -> torch.Tensor:
        """Predicted ms for each (width, depth) given the cell distributions."""
        log_q = arch.edge_log_probs().flatten(-2)  # [kind, node, edge]; edge = input * n_ops + op
        q, then = log_q.exp(), _then(log_q)
        edge = _pair_sum(q, then, self.edges.flatten(-2)).sum((-1, -2))
        reads = torch.arange(q.shape[-1]) // len(self.space.ops)
        avoid = torch.stack([_pair_within(q, then, reads != u) for u in (0, 1)], -1)  # [kind, node, u]
        uses = 1 - avoid.prod(1)  # [kind, input]: a cell reads input u unless every node's pair avoids it
        pre = torch.einsum("ku,wdku->wd", uses, self.pre)
        raw = self.table.overhead_ms + self.const + edge + pre
        return self.table.a + self.table.b * raw

    def __call__(self, arch: ArchParams) -> torch.Tensor:
        p = arch.probs()
        return torch.einsum("w,d,wd->", p["width"].double(), p["depth"].double(), self.per_width_depth(arch))

    def of(self, genotype: Genotype, width: int, depth: int) -> float:
        """Predicted ms of one derived network (the table's own network prediction)."""
        return self.table.predict_ms(self.space.config(genotype, width, depth))
