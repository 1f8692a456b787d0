"""PublicTest accuracy of each epoch's EMA weights of a run, without and with the test-time flip.

    .venv/bin/python benchmarks/flip_by_epoch.py RUN_DIR [--epochs 1,2,...] [--data DIR]

The trainer scores each epoch as the model's config says, so a run whose config lacks
``network.test_time_flip`` is scored without the flip, while the model shipped with it is judged with
it, and the two rankings of epochs differ. Reads ``RUN_DIR/epochs/e<N>.pt``, the evaluated (EMA)
weights of each epoch that ``emonas-edge train --keep-epochs`` saves (copies of each epoch's ``last.pt``
work too: their EMA weights are used). A model trained with ``network.test_time_flip`` set is already
scored with the flip by the trainer; this script is for runs whose config did not have it.

Prints images right and accuracy per epoch; PyTorch on the CPU, as `emonas-edge evaluate` scores.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--epochs", help="comma-separated epochs (default: every epochs/e<N>.pt)")
    ap.add_argument("--data", type=Path, default=SHARED / "datasets" / "fer2013" / "publictest")
    args = ap.parse_args()

    import torch

    from emonas_edge.checkpoint import load_checkpoint, read_checkpoint

    # A helper beside this script: `python benchmarks/flip_by_epoch.py` puts benchmarks/ first on sys.path
    # (emonas_edge itself comes from the installed package, so nothing patches sys.path).
    from views import labelled_batch, probs

    files = sorted(args.run.glob("epochs/e*.pt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if args.epochs:
        files = [args.run / "epochs" / f"e{int(e)}.pt" for e in args.epochs.split(",")]
    if not files:
        sys.exit(f"no epoch checkpoints under {args.run / 'epochs'}")
    config, model, _ = load_checkpoint(files[0])
    x, y, n = labelled_batch(args.data, config)
    model.test_time_flip = False
    print(f"{n:,} images from {args.data}")
    for f in files:
        payload = read_checkpoint(f)
        model.load_state_dict(payload.get("train", {}).get("ema") or payload["state_dict"])
        model.eval()
        with torch.inference_mode():
            p, pf = probs(model, x), probs(model, x.flip(3))
        a, b = int((p.argmax(1) == y).sum()), int(((p + pf).argmax(1) == y).sum())
        print(f"{f.stem}: {a} right ({a / len(y):.4f}), with flip {b} ({b / len(y):.4f})", flush=True)


if __name__ == "__main__":
    main()
