"""One preprocessing: what training feeds the network equals what inference feeds it."""

import numpy as np
import pytest
import torch

from emonas_edge.config import config_from_dict
from emonas_edge.data.datasets import ArrayDataset
from emonas_edge.data.preprocess import Preprocessor
from emonas_edge.train.common import dataset_images, training_batch


def _config(channels):
    return config_from_dict(
        {
            "name": "p",
            "normal": [["conv_3x3", 1], ["skip_connect", 1]],
            "normal_concat": [2],
            "reduce": [["conv_3x3", 1], ["max_pool_3x3", 1]],
            "reduce_concat": [2],
            "network": {"in_channels": channels, "input_size": 16, "init_channels": 4, "layers": 3},
            "preprocess": {"grayscale": channels == 1, "mean": [0.3] * channels, "std": [0.2] * channels},
        }
    )


def test_training_batch_without_augmentation_equals_inference_preprocessing():
    for channels in (1, 3):
        cfg = _config(channels)
        pre = Preprocessor(cfg)
        rng = np.random.default_rng(channels)
        shape = (5, 16, 16) if channels == 1 else (5, 16, 16, 3)
        imgs = rng.integers(0, 256, size=shape, dtype=np.uint8)
        ds = ArrayDataset(imgs, np.zeros(5, np.int64), cfg.classes, "test")
        got = training_batch(
            dataset_images(ds, "cpu"),
            torch.arange(5),
            torch.from_numpy(pre.unit_scale),
            torch.from_numpy(pre.shift),
            None,
            channels_last=False,
        )
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
    x = training_batch(
        dataset_images(ds, "cpu"), torch.arange(8), torch.from_numpy(pre.unit_scale), torch.from_numpy(pre.shift), g
    )
    lo, hi = (0 - 0.3) / 0.2, (1 - 0.3) / 0.2
    assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5
    assert x.std() > 0.5  # not collapsed to a constant (the double-scaling bug did that)


def _batch(n=6, c=1, h=12, w=10):
    return torch.from_numpy(np.random.default_rng(1).random((n, c, h, w), dtype=np.float32))


def test_mixup_blends_each_image_with_its_partner():
    from emonas_edge.data.augment import mix_batch

    x = _batch()
    out, partner, lam = mix_batch(x, torch.Generator().manual_seed(0), "mixup", alpha=1.0, p=1.0)
    assert partner is not None and sorted(partner.tolist()) == list(range(6)) and 0 < lam < 1
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[partner])
    again = mix_batch(x, torch.Generator().manual_seed(0), "mixup", alpha=1.0, p=1.0)
    assert again[2] == lam and torch.equal(again[1], partner)  # the draws come from the generator only


def test_cutmix_pastes_one_box_and_lam_is_the_area_left():
    from emonas_edge.data.augment import mix_batch

    x = _batch()
    seen = set()
    for seed in range(20):
        out, partner, lam = mix_batch(x, torch.Generator().manual_seed(seed), "cutmix", alpha=1.0, p=1.0)
        box = (out != x).any(0).any(0)  # where any image changed
        # every image took that box from its partner and kept the rest
        assert torch.equal(out[:, :, box], x[partner][:, :, box])
        assert torch.equal(out[:, :, ~box], x[:, :, ~box])
        assert lam == pytest.approx(1 - int(box.sum()) / box.numel(), abs=1e-12)
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        if len(rows):
            assert int(box.sum()) == len(rows) * len(cols)  # a rectangle
            assert rows.tolist() == list(range(rows.min(), rows.max() + 1))
        seen.add(round(lam, 3))
    assert len(seen) > 5  # the box size varies


def test_mixing_off_or_unlucky_leaves_the_batch_alone():
    from emonas_edge.data.augment import mix_batch

    x = _batch()
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    assert mix_batch(x, g, "none") == (x, None, 1.0)
    assert torch.equal(g.get_state(), state)  # "none" draws nothing: unmixed runs keep their streams
    out, partner, lam = mix_batch(x, g, "cutmix", p=0.0)
    assert out is x and partner is None and lam == 1.0
    with pytest.raises(ValueError, match="mix mode"):
        mix_batch(x, g, "mosaic")
