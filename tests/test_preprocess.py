"""One preprocessing: what training feeds the network equals what inference feeds it."""

import numpy as np
import torch

from emonas_edge.config import config_from_dict
from emonas_edge.data.preprocess import Preprocessor
from emonas_edge.train.trainer import _to_tensor, training_batch
from emonas_edge.data.datasets import ArrayDataset


def _config(channels):
    return config_from_dict({
        "name": "p", "normal": [["conv_3x3", 1], ["skip_connect", 1]], "normal_concat": [2],
        "reduce": [["conv_3x3", 1], ["max_pool_3x3", 1]], "reduce_concat": [2],
        "network": {"in_channels": channels, "input_size": 16, "init_channels": 4, "layers": 3},
        "preprocess": {"grayscale": channels == 1, "mean": [0.3] * channels, "std": [0.2] * channels},
    })


def test_training_batch_without_augmentation_equals_inference_preprocessing():
    for channels in (1, 3):
        cfg = _config(channels)
        pre = Preprocessor(cfg)
        rng = np.random.default_rng(channels)
        shape = (5, 16, 16) if channels == 1 else (5, 16, 16, 3)
        imgs = rng.integers(0, 256, size=shape, dtype=np.uint8)
        ds = ArrayDataset(imgs, np.zeros(5, np.int64), cfg.classes, "test")
        got = training_batch(_to_tensor(ds, "cpu"), torch.arange(5), torch.from_numpy(pre.unit_scale), torch.from_numpy(pre.shift), None, channels_last=False)
        np.testing.assert_allclose(got.numpy(), pre.normalize(imgs), rtol=1e-6, atol=1e-6)
        # and it is the documented (x / 255 - mean) / std
        ref = (imgs.astype(np.float64) / 255 - 0.3) / 0.2
        ref = ref[:, None] if channels == 1 else ref.transpose(0, 3, 1, 2)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_augmented_batch_stays_in_normalised_range():
    cfg = _config(1)
    pre = Preprocessor(cfg)
    imgs = np.random.default_rng(0).integers(0, 256, size=(8, 16, 16), dtype=np.uint8)
    ds = ArrayDataset(imgs, np.zeros(8, np.int64), cfg.classes, "test")
    g = torch.Generator().manual_seed(0)
    x = training_batch(_to_tensor(ds, "cpu"), torch.arange(8), torch.from_numpy(pre.unit_scale), torch.from_numpy(pre.shift), g)
    lo, hi = (0 - 0.3) / 0.2, (1 - 0.3) / 0.2
    assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5
    assert x.std() > 0.5  # not collapsed to a constant (the double-scaling bug did that)
