"""Does a supernet learn FER2013? Training loss of one fixed path vs sampled paths vs mixed edges.

    .venv/bin/python benchmarks/supernet_learning.py --mode fixed|gdas|gdas-conv|darts|pc-darts [--steps 300]

The supernet of `emonas_edge/search/supernet.py` at width 32, depth 2 (the FER2013 run's search
size), one node per cell, the FER2013 run's six ops, uniform architecture (the warm-up), SGD
Nesterov lr 0.05, batch 96, label smoothing 0.1, the trainer's augmentation. Prints the mean
loss and accuracy of every 50 steps: `fixed` trains one path (emonas-macro-fast's cells),
`gdas` samples one input and op per slot every step (`gdas-conv`: among the convolutions only),
`darts` mixes every op at full width, `pc-darts` on a quarter of the channels (the default).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from emonas_edge.data.datasets import load_dataset
from emonas_edge.data.preprocess import Preprocessor
from emonas_edge.search.arch import ArchParams, Sample
from emonas_edge.search.run import _data_config
from emonas_edge.search.space import SearchSpace
from emonas_edge.search.supernet import CellChoice, SuperNet
from emonas_edge.train.common import dataset_images, training_batch

OPS = ("conv_3x3", "conv_1x1", "conv_7x1_1x7", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("fixed", "gdas", "gdas-conv", "darts", "pc-darts"), default="pc-darts")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="../shared/datasets/fer2013/train")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ops = OPS[:3] if args.mode == "gdas-conv" else OPS
    space = SearchSpace(nodes=1, widths=(16, 24, 32, 40, 48), ops=ops)
    config = _data_config(space)
    data, pre = load_dataset(args.data, config), Preprocessor(config)
    images, labels = dataset_images(data, "cpu"), torch.from_numpy(data.labels)
    scale, shift = torch.from_numpy(pre.unit_scale), torch.from_numpy(pre.shift)
    partial = {"darts": 1, "pc-darts": 4}.get(args.mode)
    torch.manual_seed(0)
    net, arch = SuperNet(space, partial), ArchParams(space)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=3e-4)
    g = torch.Generator().manual_seed(0)
    conv, skip, pool = ops.index("conv_3x3"), ops.index("skip_connect") if "skip_connect" in ops else 0, 0
    pool = ops.index("max_pool_3x3") if "max_pool_3x3" in ops else conv
    fixed = Sample(
        32,
        2,
        CellChoice([(0, 1, conv, 1.0), (0, 1, skip, 1.0)]),
        CellChoice([(0, 1, conv, 1.0), (0, 1, pool, 1.0)]),
        0,
        0,
    )
    losses, hits, t0 = [], [], time.perf_counter()
    print(f"# {args.mode}: width 32, depth 2, ops {','.join(ops)}, lr {args.lr}, batch 96, {args.threads} thread(s)")
    for step in range(args.steps):
        idx = torch.randint(0, len(labels), (96,), generator=g)
        x, y = training_batch(images, idx, scale, shift, g, channels_last=False), labels[idx]
        if args.mode == "fixed":
            sample = fixed
        else:
            sample = arch.sample(g, 1.0, uniform=True, grad=False, mixed=partial is not None)
            sample.width, sample.depth = 32, 2
        out = net(x, sample)
        loss = F.cross_entropy(out, y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        losses.append(float(loss.detach()))
        hits.append(float((out.argmax(1) == y).float().mean()))
        if step % 50 == 49:
            print(
                f"step {step + 1}: loss {np.mean(losses[-50:]):.3f} acc {np.mean(hits[-50:]):.3f} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
