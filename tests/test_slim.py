"""Slimming (structured width pruning) of cell networks: exactness, channel choice, refusals, CLI.

The exactness test is the one that matters: a slimmed network must compute exactly what the
original computes when the dropped channels are forced to zero, whatever the chunking of
concatenated cell outputs and the stem width; anything else means weights were sliced wrongly.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from emonas_edge.checkpoint import load_checkpoint
from emonas_edge.config import config_from_dict
from emonas_edge.errors import UserError
from emonas_edge.nn import count_params, create_model
from emonas_edge.train.slim import slim_cell_network

ROOT = Path(__file__).resolve().parents[1]

SHIPPED_GRAPH = {
    "name": "g1",
    "task": "macro",
    "family": "cell",
    "normal": [["conv_3x3", 1], ["skip_connect", 1]],
    "normal_concat": [2],
    "reduce": [["conv_3x3", 1], ["max_pool_3x3", 1]],
    "reduce_concat": [2],
    "network": {
        "in_channels": 1,
        "input_size": 48,
        "init_channels": 8,
        "layers": 5,
        "stem_stride": 2,
        "stem_multiplier": 1,
    },
}
TWO_NODES = {  # concatenated outputs (chunks), a 1x1 and pooling ops, a wider stem
    "name": "g2",
    "task": "macro",
    "family": "cell",
    "normal": [["conv_3x3", 1], ["skip_connect", 1], ["conv_1x1", 2], ["avg_pool_3x3", 1]],
    "normal_concat": [2, 3],
    "reduce": [["conv_3x3", 1], ["max_pool_3x3", 1], ["conv_3x3", 2], ["skip_connect", 2]],
    "reduce_concat": [2, 3],
    "network": {
        "in_channels": 1,
        "input_size": 32,
        "init_channels": 8,
        "layers": 4,
        "stem_stride": 1,
        "stem_multiplier": 2,
    },
}


def random_network(genotype: dict, seed: int = 0):
    """Random weights with non-trivial batch-norm statistics and affines, marked trained."""
    config = config_from_dict({**genotype, "trained": True})
    torch.manual_seed(seed)
    net = create_model(config)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return config, net.eval()


def images(n: int, size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def masked_logits(net, keep: list[list[int]], x: torch.Tensor) -> torch.Tensor:
    """The original network with every channel not in ``keep`` forced to zero where it is made."""

    def mask_of(idx, width):
        m = torch.zeros(width)
        m[idx] = 1
        return m.view(1, -1, 1, 1)

    hooks = []

    def zero_outside(module, idx):
        hooks.append(module.register_forward_hook(lambda mod, i, o: o * mask_of(idx, o.shape[1])))

    zero_outside(net.stem, keep[0])
    for i, cell in enumerate(net.cells):
        zero_outside(cell.preprocess1, keep[i + 1])
        for op in cell.ops:
            if any(isinstance(m, torch.nn.Conv2d) for m in op.modules()):
                zero_outside(op, keep[i + 1])
    try:
        with torch.no_grad():
            return net(x)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("genotype,channels", [(SHIPPED_GRAPH, 4), (SHIPPED_GRAPH, 8), (TWO_NODES, 6)])
def test_slimmed_network_is_the_original_with_the_dropped_channels_zeroed(genotype, channels):
    config, net = random_network(genotype)
    size = config.network["input_size"]
    new_config, small, rep = slim_cell_network(config, net, channels, images(64, size), recalibrate=False)
    assert (
        new_config.network["init_channels"] == channels
        and small.classifier.in_features < net.classifier.in_features
        or channels == 8
    )
    assert rep["params_after"] == count_params(small) <= count_params(net)
    x = torch.randn(4, 1, size, size)
    with torch.no_grad():
        got = small(x)
    want = masked_logits(net, rep["kept"], x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if channels == config.network["init_channels"]:
        with torch.no_grad():
            torch.testing.assert_close(got, net(x), atol=1e-5, rtol=1e-5)
    else:  # and it is not a trivial equality: zeroing those channels changes the original's output
        with torch.no_grad():
            assert (net(x) - want).abs().max() > 1e-3


def test_the_channels_nobody_reads_are_the_ones_dropped():
    config, net = random_network(SHIPPED_GRAPH)
    with torch.no_grad():
        net.cells[0].preprocess1[1].weight[:, [2, 6]] = 0  # stem channels 2 and 6 feed nothing
        net.classifier.weight[:, 30] = 0  # nor does the last cell's channel 30
    new_config, _, rep = slim_cell_network(config, net, 6, images(64, 48), recalibrate=False, name="g1-small")
    assert new_config.name == "g1-small" and new_config.meta["slimmed_from"]["name"] == "g1"
    assert len(rep["kept"][0]) == 6 and not {2, 6} & set(rep["kept"][0])
    assert len(rep["kept"][-1]) == 24 and 30 not in rep["kept"][-1]


def test_the_flip_setting_is_kept_unless_given():
    config, net = random_network(SHIPPED_GRAPH)
    flip_config = config.replace(network={**config.network, "test_time_flip": True}, meta={"selection": "epoch 3"})
    x = images(64, 48)
    kept, _, _ = slim_cell_network(flip_config, net, 6, x, recalibrate=False)
    off, small, _ = slim_cell_network(flip_config, net, 6, x, recalibrate=False, test_time_flip=False)
    on, _, _ = slim_cell_network(config, net, 6, x, recalibrate=False, test_time_flip=True)
    assert (
        kept.network["test_time_flip"] is True
        and off.network["test_time_flip"] is False
        and small.test_time_flip is False
    )
    assert on.network["test_time_flip"] is True
    assert "selection" not in kept.meta and kept.meta["slimmed_from"]["name"] == config.name


def test_recalibrated_batch_norm_matches_the_slimmed_networks_own_statistics():
    config, net = random_network(SHIPPED_GRAPH)
    data = images(96, 48)
    _, small, _ = slim_cell_network(config, net, 6, data, recalibrate=True)
    # the stem's BN must now hold the mean of its convolution's output over exactly those images
    x = torch.from_numpy(data).float().unsqueeze(1) / 255 * 2 - 1  # the genotype's mean 0.5 / std 0.5
    with torch.no_grad():
        conv = small.stem[0](x)
    torch.testing.assert_close(small.stem[1].running_mean, conv.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)
    assert not small.training


def _with(genotype: dict, **changes) -> dict:
    g = copy.deepcopy(genotype)
    for k, v in changes.items():
        if k == "network":
            g["network"].update(v)
        else:
            g[k] = v
    return g


@pytest.mark.parametrize(
    "genotype,channels,fragment",
    [
        (
            _with(SHIPPED_GRAPH, normal=[["sep_conv_3x3", 1], ["skip_connect", 1]]),
            4,
            "'sep_conv_3x3' cannot be slimmed",
        ),
        (_with(SHIPPED_GRAPH, normal=[["conv_3x3", 0], ["skip_connect", 1]]), 4, "reads input 0"),
        (_with(SHIPPED_GRAPH, reduce=[["skip_connect", 1], ["max_pool_3x3", 1]]), 4, "factorized reduce"),
        (_with(SHIPPED_GRAPH, network={"auxiliary": True}), 4, "auxiliary head"),
        (SHIPPED_GRAPH, 9, "between 1 and the network's init_channels (8)"),
        (SHIPPED_GRAPH, 0, "between 1 and"),
    ],
)
def test_networks_that_cannot_be_slimmed_exactly_are_refused(genotype, channels, fragment):
    config, net = random_network(genotype)
    with pytest.raises(UserError, match=re.escape(fragment)):
        slim_cell_network(config, net, channels, images(8, 48), recalibrate=False)


def test_mit_networks_are_refused():
    config = config_from_dict({"name": "m", "task": "macro", "family": "mit", "trained": True})
    with pytest.raises(UserError, match="only cell networks"):
        slim_cell_network(config, create_model(config), 4, images(8, config.network["input_size"]))


# ---------------------------------------------------------------------------------------------
# The console script, on the shipped model and real FER2013 images
# ---------------------------------------------------------------------------------------------


def cli_env(tmp_path: Path) -> dict:
    """Wide lines (one-line errors stay one line), a decode cache of the test's own, one thread."""
    return {"COLUMNS": "200", "EMONAS_EDGE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_cli_slims_the_shipped_model_and_the_result_fine_tunes(cli, tmp_path, shared):
    train_dir, val_dir = shared / "datasets/fer2013/train", shared / "datasets/fer2013/publictest"
    out = tmp_path / "slim32.pt"
    proc = cli(
        "slim",
        "--model",
        "emonas-macro",
        "--channels",
        32,
        "--data",
        train_dir,
        "--val",
        val_dir,
        "--limit-per-class",
        40,
        "--out",
        out,
        "--threads",
        1,
        "--no-test-time-flip",
        cwd=tmp_path,
        env=cli_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    config, small, _ = load_checkpoint(out)
    # emonas-macro runs with the flip; --no-test-time-flip turns it off; its selection note is not inherited
    assert config.network["test_time_flip"] is False and "selection" not in config.meta
    shipped_config, shipped, _ = load_checkpoint(ROOT / "models" / "emonas-macro.pt")
    assert config.network["init_channels"] == 32 and config.trained and config.name == "emonas-macro-c32"
    assert config.meta["slimmed_from"]["init_channels"] == shipped_config.network["init_channels"] == 40
    assert count_params(small) < 0.7 * count_params(shipped)  # (32/40)^2 of most weights
    acc = float(re.search(r"before fine-tuning: accuracy ([0-9.]+)", proc.stdout).group(1))
    assert acc > 0.35, proc.stdout  # 7 classes: chance is 0.14; the kept channels still recognise expressions

    tuned = tmp_path / "ft"
    proc = cli(
        "train",
        "--model",
        out,
        "--data",
        train_dir,
        "--out",
        tuned,
        "--epochs",
        1,
        "--max-steps",
        2,
        "--limit-per-class",
        10,
        "--batch",
        16,
        "--threads",
        1,
        cwd=tmp_path,
        env=cli_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "fine-tuning the trained weights" in proc.stdout
    assert load_checkpoint(tuned / "last.pt")[0].network["init_channels"] == 32


def test_cli_refuses_to_slim_random_weights(cli, tmp_path):
    proc = cli(
        "slim",
        "--model",
        ROOT / "models" / "emonas-macro.json",
        "--channels",
        24,
        "--data",
        tmp_path,
        "--out",
        tmp_path / "s.pt",
        cwd=tmp_path,
        env=cli_env(tmp_path),
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no trained weights" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "s.pt").exists()
