"""What one search step costs here: PC-DARTS (the default of `emonas-edge search`), GDAS and DARTS.

    .venv/bin/python benchmarks/search_step.py [--batch 96] [--width 32] [--depth 2] [--steps 5] [--ops a,b,..]

All run the supernet of `emonas_edge/search/supernet.py`: the single-path step (`--method gdas`)
samples one input and one operation per node slot; the PC-DARTS step samples the input and runs
every operation on a quarter of the channels, weighted by the softmax of its logits; the DARTS
step runs every operation on every input of every node at full width (the original method).
Forward + backward at the given batch, interleaved, median seconds per step, and ratios (the
figures that hold across this machine's drift). A plain cell network of the sampled architecture
(`cellnet`) is timed too: a step should cost about one network.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from emonas_edge.nn import create_model
from emonas_edge.search.arch import ArchParams, Sample
from emonas_edge.search.space import SearchSpace
from emonas_edge.search.supernet import CellChoice, SuperNet


def darts_sample(space: SearchSpace, width: int, depth: int, weights: torch.Tensor) -> Sample:
    """Every (input, op) of every node, softmax-weighted: DARTS' mixed edges."""
    cells = []
    for k in range(2):
        slots = []
        for i in range(space.nodes):
            w = F.softmax(weights[k, i, : (i + 2) * len(space.ops)], 0)
            slots += [(i, j, o, w[j * len(space.ops) + o]) for j in range(i + 2) for o in range(len(space.ops))]
        cells.append(CellChoice(slots))
    return Sample(width, depth, cells[0], cells[1], 0, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ops", help="comma-separated operations (default: every registered one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ops = {"ops": tuple(args.ops.split(","))} if args.ops else {}
    space = SearchSpace(nodes=args.nodes, widths=(args.width,), depths=(args.depth,), **ops)
    net, arch = SuperNet(space), ArchParams(space)
    pc_net = SuperNet(space, partial=4)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(args.batch, 1, 48, 48), torch.randint(0, 7, (args.batch,))
    darts_w = torch.zeros(2, space.nodes, (space.nodes + 1) * len(space.ops), requires_grad=True)
    sampled = arch.sample(g, 1.0)
    genotype, _, _ = arch.argmax()
    plain = create_model(space.config(genotype, args.width, args.depth)).train()

    def single():
        F.cross_entropy(net(x, arch.sample(g, 1.0)), y).backward()

    def pc_darts():
        F.cross_entropy(pc_net(x, arch.sample(g, 1.0, mixed=True)), y).backward()

    def darts():
        F.cross_entropy(net(x, darts_sample(space, args.width, args.depth, darts_w)), y).backward()

    def cellnet():
        out = plain(x)
        F.cross_entropy(out[0] if isinstance(out, tuple) else out, y).backward()

    fns = {"pc-darts": pc_darts, "single-path": single, "darts": darts, "cellnet": cellnet}
    times = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(args.steps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
            net.zero_grad(set_to_none=True)
            pc_net.zero_grad(set_to_none=True)
            arch.zero_grad(set_to_none=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    del sampled
    print(
        f"# batch {args.batch}, width {args.width}, depth {args.depth}, {args.nodes} node(s)/cell, {len(space.ops)} "
        f"ops, {args.threads} threads"
    )
    for k, v in med.items():
        print(f"{k:12s} {v:.3f} s/step")
    print(
        f"pc-darts/cellnet={med['pc-darts'] / med['cellnet']:.2f} "
        f"single/cellnet={med['single-path'] / med['cellnet']:.2f} darts/cellnet={med['darts'] / med['cellnet']:.1f}"
    )


if __name__ == "__main__":
    main()
