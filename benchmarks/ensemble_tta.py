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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", type=Path, default=SHARED / "datasets" / "fer2013" / "publictest")
    args = ap.parse_args()

    import torch

    from emonas_edge.api import load_model
    from emonas_edge.data.datasets import load_dataset
    from emonas_edge.data.preprocess import Preprocessor
    from emonas_edge.train.trainer import _to_tensor, training_batch

    loaded = [load_model(m) for m in args.models]
    config = loaded[0][0]
    ds = load_dataset(args.data, config, "PublicTest", None)
    pre = Preprocessor(config)
    images = _to_tensor(ds, "cpu")
    x = training_batch(images, torch.arange(len(images)), torch.from_numpy(pre.unit_scale), torch.from_numpy(pre.shift), None, channels_last=False)
    y = torch.from_numpy(ds.labels)

    def probs(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        # Chunks of 512: as one 3,589-image batch, more time went to page faults on the activations
        # (system time) than to arithmetic; gen2 alone took 60 s instead of 48 s here.
        return torch.cat([torch.softmax(model(c), 1) for c in batch.split(512)])

    def acc(p: torch.Tensor) -> float:
        return float((p.argmax(1) == y).float().mean())

    total = 0
    print(f"{len(ds):,} images from {args.data}")
    with torch.inference_mode():
        for name, (cfg, model, _) in zip(args.models, loaded):
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
