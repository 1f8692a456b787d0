"""How well the latency table predicts whole networks on this machine.

Builds a table for the search space (as `emonas-edge search lut` does), then times N random
networks of the space plus any searched genotypes given, each exported, simplified and
quantized exactly like the table's blocks, and compares. Both sides are in anchor units of
their session (a fixed network timed in every group; this VM drifts ~1.5-2x within minutes),
and the table's linear correction is fitted on separate calibration networks, never on the
networks scored here. Last line: ``spearman=... within10=... n=...``.

    .venv/bin/python benchmarks/latency_predictor.py --precision int8 --nodes 1 --widths 16,20,24,28,32,40 \
        [--genotype runs/search/search/best.json]

Target (issue #28): within +-10% for >= 90% of networks and Spearman >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from emonas_edge.config import load_genotype_file
from emonas_edge.environment import environment
from emonas_edge.search.lut import LutSettings, build_lut, random_configs, save_lut, time_networks
from emonas_edge.search.space import DEFAULT_OPS, SearchSpace


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(float)


def spearman(a, b) -> float:
    return float(np.corrcoef(_ranks(np.asarray(a)), _ranks(np.asarray(b)))[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", default="int8", choices=("fp32", "int8"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--widths", default="16,20,24,28,32,40")
    ap.add_argument("--depths", default="1,2,3")
    ap.add_argument("--ops", default=",".join(DEFAULT_OPS))
    ap.add_argument("--networks", type=int, default=60)
    ap.add_argument("--calibration", type=int, default=12)
    ap.add_argument("--genotype", action="append", default=[], help="searched best.json files to include")
    ap.add_argument("--save-lut", type=Path)
    ap.add_argument("--json", type=Path, help="write every network's predicted and measured ms here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    space = SearchSpace(
        nodes=args.nodes,
        widths=tuple(int(w) for w in args.widths.split(",")),
        depths=tuple(int(d) for d in args.depths.split(",")),
        ops=tuple(args.ops.split(",")),
    )
    settings = LutSettings(precision=args.precision, threads=args.threads, calibration_networks=args.calibration)
    table = build_lut(
        space, settings, lambda what, i, n: print(f"\r{what} {i}/{n}", end="", file=sys.stderr, flush=True)
    )
    if args.save_lut:
        save_lut(table, args.save_lut)
    configs = random_configs(space, args.networks, seed=1)
    for g in args.genotype:
        c = load_genotype_file(g)
        configs.append(c.replace(network={**c.network, "test_time_flip": False}))
    measured = np.array(
        time_networks(
            configs, space, settings, lambda i, n: print(f"\rnetworks {i}/{n}", end="", file=sys.stderr, flush=True)
        )
    )
    print(file=sys.stderr)
    predicted = np.array([table.predict_ms(c) for c in configs])
    err = predicted / measured - 1
    env = environment()
    print(
        f"# {env['cpu']}, {env['cpu_count']} cores, onnxruntime {env['packages']['onnxruntime']}, {args.precision}, "
        f"{args.threads} thread(s); "
        f"table {len(table.blocks)} blocks in {table.seconds:.0f} s, fit measured = {table.a:.4f} + {table.b:.3f} x "
        f"sum on {args.calibration} networks"
    )
    print(
        f"# |error| median {100 * np.median(np.abs(err)):.1f}%, 90th percentile "
        f"{100 * np.quantile(np.abs(err), 0.9):.1f}%, "
        f"worst {100 * np.abs(err).max():.1f}%; measured {measured.min():.3f}-{measured.max():.3f} ms"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "name": c.name,
                        "width": c.network["init_channels"],
                        "layers": c.network["layers"],
                        "predicted_ms": float(p),
                        "measured_ms": float(m),
                    }
                    for c, p, m in zip(configs, predicted, measured, strict=True)
                ],
                indent=1,
            )
        )
    print(f"spearman={spearman(predicted, measured):.3f} within10={np.mean(np.abs(err) <= 0.10):.2f} n={len(configs)}")


if __name__ == "__main__":
    main()
