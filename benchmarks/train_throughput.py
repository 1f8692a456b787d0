"""Training images/s of genotypes vs a plain VGG-style CNN, same machine, same run.

Why: on a 2-core CPU the price of a teacher or student is its training throughput, and a figure
measured on another machine (the issue's ~580 images/s for a VGG-style net) does not transfer. Each
network takes Nesterov SGD steps like `emonas-edge train` (batch 128, channels-last, cross-entropy,
48x48 gray; no augmentation, EMA or distillation, which cost the same for every network); the data are
random because only time is measured here. Prints images/s and
the ratio to the VGG-style baseline.

    .venv/bin/python benchmarks/train_throughput.py [GENOTYPE.json[:key=int,...] ...] [--threads 2] [--steps 10]

A ``:key=int`` suffix overrides network settings, e.g. ``models/emonas-macro.json:init_channels=64``
or ``models/emonas-macro.json:stem_stride=1``.
"""

from __future__ import annotations

import argparse
import sys
import time

VGG = [32, 32, "M", 64, 64, "M", 128, 128, "M", 256, 256, "M"]


def vgg_style(num_classes: int = 7):
    from torch import nn

    layers, c = [], 1
    for v in VGG:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(c, num_classes))


def die(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def images_per_s(model, steps: int, batch: int = 128) -> float:
    import torch
    import torch.nn.functional as F

    model = model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 1, 48, 48).to(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,))
    for i in range(steps + 3):  # three warm-up steps
        if i == 3:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(x)
        F.cross_entropy(out[0] if isinstance(out, tuple) else out, y).backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("genotypes", nargs="*", default=["models/emonas-macro.json"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()

    import torch

    from emonas_edge.config import load_genotype_file
    from emonas_edge.errors import UserError
    from emonas_edge.macs import macs_torch
    from emonas_edge.nn.factory import count_params, create_model

    configs = []
    for g in args.genotypes:  # all checked before any timing
        path, _, spec = g.partition(":")
        try:
            overrides = {k: int(v) for k, v in (kv.split("=") for kv in spec.split(",") if kv)}
            config = load_genotype_file(path, overrides=overrides)
        except ValueError:
            die(f"{g}: overrides are key=int pairs separated by commas")
        except UserError as e:
            die(str(e))
        if config.network.get("in_channels", 1) != 1 or config.network.get("input_size", 48) != 48:
            die(f"{g}: this benchmark times 48x48 gray networks")
        configs.append((g, config))

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = vgg_style()
    base_ips = images_per_s(base, args.steps)

    def row(name: str, model, ips: float) -> None:
        print(
            f"{name:<52} {count_params(model):>9,} {macs_torch(model.eval(), (1, 48, 48)) / 1e6:>7.1f} "
            f"{ips:>7.0f} {ips / base_ips:>7.2f}"
        )

    print(f"{'network':<52} {'params':>9} {'MMACs':>7} {'img/s':>7} {'vs VGG':>7}")
    row("VGG-style 3x3 " + "-".join(map(str, VGG)), base, base_ips)
    for g, config in configs:
        model = create_model(config)
        row(g, model, images_per_s(model, args.steps))


if __name__ == "__main__":
    main()
