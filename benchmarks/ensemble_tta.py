"""PublicTest accuracy of checkpoints alone, with flip test-time augmentation, and as an ensemble.

    .venv/bin/python benchmarks/ensemble_tta.py emonas-macro runs/other/best.pt [...] [--data DIR]

Answers two questions before anyone pays for them at run time: does mirroring each face and
averaging help, and do these models together make a better teacher than the best one alone?
Models are built-in names or checkpoints with the same classes and input; PyTorch on the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", type=Path, default=SHARED / "datasets" / "fer2013" / "publictest")
    args = ap.parse_args()

    import torch

    from emonas_edge.resolve import load_model

    # A helper beside this script: `python benchmarks/ensemble_tta.py` puts benchmarks/ first on sys.path
    # (emonas_edge itself comes from the installed package, so nothing patches sys.path).
    from views import labelled_batch, probs

    loaded = [load_model(m) for m in args.models]
    config = loaded[0][0]
    x, y, n = labelled_batch(args.data, config)

    def acc(p: torch.Tensor) -> float:
        return float((p.argmax(1) == y).float().mean())

    total = 0
    print(f"{n:,} images from {args.data}")
    with torch.inference_mode():
        for name, (cfg, model, _) in zip(args.models, loaded, strict=True):
            if list(cfg.classes) != list(config.classes) or cfg.input_shape != config.input_shape:
                sys.exit(f"{name}: other classes or input shape than {args.models[0]}")
            model.eval()
            model.test_time_flip = False  # "top-1" is one view even for a model built with the flip
            p = probs(model, x)
            pf = probs(model, x.flip(3))
            total = total + p
            print(f"{name}: top-1 {acc(p):.4f}, with flip TTA {acc(p + pf):.4f}")
    if len(loaded) > 1:
        print(f"ensemble of {len(loaded)}: top-1 {acc(total):.4f}")


if __name__ == "__main__":
    main()
