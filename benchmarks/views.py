"""Scoring PyTorch models on a labelled folder, one view and mirrored: shared by ensemble_tta.py and
flip_by_epoch.py, so both prepare faces exactly as the trainer's validation does."""

from __future__ import annotations

from pathlib import Path


def labelled_batch(data: Path, config):
    """``(x, y, n)``: every face of ``data`` preprocessed for ``config`` as one NCHW tensor, its labels."""
    import torch

    from emonas_edge.data.datasets import load_dataset
    from emonas_edge.data.preprocess import Preprocessor
    from emonas_edge.train.common import dataset_images as _to_tensor
    from emonas_edge.train.common import training_batch

    ds = load_dataset(data, config, "PublicTest", None)
    pre = Preprocessor(config)
    x = training_batch(
        _to_tensor(ds, "cpu"),
        torch.arange(len(ds)),
        torch.from_numpy(pre.unit_scale),
        torch.from_numpy(pre.shift),
        None,
        channels_last=False,
    )
    return x, torch.from_numpy(ds.labels), len(ds)


def probs(model, x):
    """Softmax of ``model`` on ``x`` in chunks of 512: as one 3,589-image batch, more time went to page
    faults on the activations (system time) than to arithmetic (gen2 alone: 60 s instead of 48 s)."""
    import torch

    return torch.cat([torch.softmax(model(c), 1) for c in x.split(512)])
