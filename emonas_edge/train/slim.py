"""Structured width pruning of a trained cell network ("slimming").

A wider network trains to a better optimum than a narrow one on FER2013, but the narrow one is what
fits the parameter and latency budget. Keeping the most useful channels of the wide network and
fine-tuning (with the wide network as a teacher) starts the narrow one far closer to that optimum
than random weights do, and costs tens of epochs instead of a hundred.

Which cells can be slimmed: every tensor a cell passes around (its preprocessed input, each node,
the concatenated output in chunks of ``C``) shares one channel index, because identity edges add
them channel by channel; the 1x1 ``preprocess1`` of the next cell re-mixes channels, so each cell
(and the stem) chooses its own subset independently. That holds when no edge reads the cell's
``c_{k-2}`` input (its factorized reduce would tie two cells) and every edge operation is a plain
conv-BN, an identity or a pooling; anything else is refused rather than pruned approximately.

Channel importance is measured, not guessed: ``rms(relu(activation_c)) * ||W_consumer[:, c]||``
on real images, i.e. how much each channel feeds the layer that reads it. Batch-norm statistics
are then re-estimated on real images because removing input channels shifts every later
layer's activations.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..data.preprocess import Preprocessor
from ..errors import UserError
from ..nn.cellnet import Cell, CellNetwork

SLIMMABLE_OPS = {"conv_3x3", "conv_1x1", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "none"}


def _check(config: ModelConfig, model: nn.Module, channels: int) -> None:
    if config.family != "cell" or config.genotype is None:
        raise UserError(f"only cell networks can be slimmed ({config.name} is family {config.family!r})")
    g = config.genotype
    for kind, edges, concat in (("normal", g.normal, g.normal_concat), ("reduce", g.reduce, g.reduce_concat)):
        for op, idx in edges:
            if op not in SLIMMABLE_OPS:
                raise UserError(
                    f"{config.name}: {kind} cell op {op!r} cannot be slimmed "
                    f"(supported: {', '.join(sorted(SLIMMABLE_OPS))})"
                )
            if idx == 0:
                raise UserError(
                    f"{config.name}: a {kind} cell edge reads input 0 (c_k-2); "
                    "only cells that read c_k-1 alone can be slimmed"
                )
            if kind == "reduce" and op == "skip_connect" and idx < 2:
                raise UserError(
                    f"{config.name}: skip_connect on a reduction edge is a factorized reduce, which cannot be slimmed"
                )
        if 0 in concat:
            raise UserError(
                f"{config.name}: the {kind} cell concatenates input 0; only cells that read c_k-1 alone can be slimmed"
            )
    if config.network.get("auxiliary"):
        raise UserError(f"{config.name} has an auxiliary head; slim a network trained without one")
    old = int(config.network["init_channels"])
    if not 0 < channels <= old:
        raise UserError(f"--channels must be between 1 and the network's init_channels ({old}), got {channels}")


def _stem_bn(model: CellNetwork) -> nn.BatchNorm2d:
    """The batch norm that ends the stem: its width is the stem's."""
    bn = model.stem[1]
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"the stem of a cell network ends with a BatchNorm2d, not {type(bn).__name__}")
    return bn


def _preprocess1(cell: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """The 1x1 conv and the batch norm of a cell's ReLU-conv-BN on its ``c_{k-1}`` input."""
    pre = cell.preprocess1 if isinstance(cell, Cell) else None
    if pre is None:
        raise UserError("a cell that does not read c_k-1 cannot be slimmed")
    conv, bn = pre[1], pre[2]
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(
            f"a ReLU-conv-BN holds a Conv2d and a BatchNorm2d, not {type(conv).__name__}, {type(bn).__name__}"
        )
    return conv, bn


def _widths(model: CellNetwork) -> list[int]:
    """Channels of the stem and of each cell's preprocessed input: each chooses its own subset."""
    return [_stem_bn(model).num_features] + [_preprocess1(c)[1].num_features for c in model.cells]


@torch.no_grad()
def _activations(model: CellNetwork, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of the stem and of every cell, in order (on one batch, eval mode)."""
    outs: list[torch.Tensor] = []
    hooks = [model.stem.register_forward_hook(lambda m, i, o: outs.append(o))]
    hooks += [c.register_forward_hook(lambda m, i, o: outs.append(o)) for c in model.cells]
    try:
        model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return outs


def _chunk_scores(score_per_channel: torch.Tensor, width: int) -> torch.Tensor:
    """Channel c of a group lives at c, c+width, c+2*width... of a concatenated output."""
    return score_per_channel.reshape(-1, width).sum(0)


def channel_importance(model: CellNetwork, x: torch.Tensor) -> list[torch.Tensor]:
    """One score per channel for the stem and for each cell (higher = keep)."""
    acts = _activations(model, x)
    widths = _widths(model)
    scores = []
    for k, a in enumerate(acts):
        if k + 1 < len(acts):  # read by the next cell's ReLU-conv1x1
            w = _preprocess1(model.cells[k])[0].weight.detach().flatten(1)
            act = torch.relu(a).pow(2).mean((0, 2, 3)).sqrt()
        else:  # read by global pooling and the classifier
            w = model.classifier.weight.detach()
            act = a.mean((2, 3)).pow(2).mean(0).sqrt()
        scores.append(_chunk_scores(act * w.norm(dim=0), widths[k]))
    return scores


def _keep(scores: torch.Tensor, n: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, n).indices).values


def _chunked(idx: torch.Tensor, width: int, total: int) -> torch.Tensor:
    return torch.cat([idx + j * width for j in range(total // width)])


_KEY = re.compile(
    r"^(stem\.[01]|cells\.(\d+)\.(preprocess1\.[12]|ops\.(\d+)\.[12])|classifier)"
    r"\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)


def _slice_state(model: nn.Module, keep: list[torch.Tensor], widths: list[int]) -> dict[str, torch.Tensor]:
    new: dict[str, torch.Tensor] = {}
    for key, v in model.state_dict().items():
        m = _KEY.match(key)
        if m is None:
            raise UserError(f"cannot slim parameter {key!r}: this network has a layer the slimmer does not know")
        v = v.detach().clone()
        if key.endswith("num_batches_tracked"):
            new[key] = v
            continue
        if key.startswith("stem.0"):
            new[key] = v[keep[0]]
        elif key.startswith("stem.1"):
            new[key] = v[keep[0]]
        elif key.startswith("classifier"):
            new[key] = v[:, _chunked(keep[-1], widths[-1], v.shape[1])] if key.endswith("weight") else v
        else:
            i = int(m.group(2))
            out = keep[i + 1]
            if m.group(3).endswith(".1"):  # a conv: (out, in, k, k)
                src = keep[i] if m.group(3).startswith("preprocess1") else out
                src_w = widths[i] if m.group(3).startswith("preprocess1") else widths[i + 1]
                new[key] = v[out][:, _chunked(src, src_w, v.shape[1])]
            else:  # its batch norm
                new[key] = v[out]
    return new


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, pre: Preprocessor, batch: int = 256) -> None:
    """Re-estimate every BatchNorm's running statistics as a plain average over ``images``."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    try:
        for i in range(0, len(images), batch):
            model(to_input(images[i : i + batch], pre))
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom
        model.eval()


def to_input(images: torch.Tensor, pre: Preprocessor) -> torch.Tensor:
    scale = torch.from_numpy(pre.scale).view(1, -1, 1, 1)
    shift = torch.from_numpy(pre.shift).view(1, -1, 1, 1)
    return images.float() * scale + shift


def slim_cell_network(
    config: ModelConfig,
    model: nn.Module,
    channels: int,
    images: np.ndarray | torch.Tensor,
    recalibrate: bool = True,
    importance_images: int = 2048,
    seed: int = 0,
    name: str | None = None,
    test_time_flip: bool | None = None,
) -> tuple[ModelConfig, nn.Module, dict]:
    """``(config, model, report)`` of ``model`` cut to ``init_channels = channels``.

    ``images``: uint8 real training images at model size, (N, H, W) gray or (N, H, W, 3); a
    random subset of ``importance_images`` of them ranks the channels, all of them re-estimate
    the batch-norm statistics when ``recalibrate``.
    """
    from ..nn import count_params, create_model

    _check(config, model, channels)
    if not isinstance(model, CellNetwork):
        raise UserError(f"only cell networks can be slimmed ({config.name} is a {type(model).__name__})")
    pre = Preprocessor(config)
    t = torch.as_tensor(np.asarray(images))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.ndim == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2).contiguous()
    if len(t) == 0:
        raise UserError("no images to measure channel importance on")
    rng = np.random.default_rng(seed)
    pick = torch.from_numpy(np.sort(rng.choice(len(t), min(importance_images, len(t)), replace=False)))
    model = model.eval()
    scores = channel_importance(model, to_input(t[pick], pre))
    old_c = int(config.network["init_channels"])
    widths = _widths(model)
    new_widths = [w * channels // old_c for w in widths]
    if any(w * channels % old_c for w in widths):
        raise UserError(
            f"init_channels {old_c} -> {channels} does not divide the stage widths {sorted(set(widths))} evenly"
        )
    keep = [_keep(s, n) for s, n in zip(scores, new_widths, strict=True)]
    new_config = config.replace(
        name=name or f"{config.name}-c{channels}",
        network={
            **config.network,
            "init_channels": channels,
            **({} if test_time_flip is None else {"test_time_flip": bool(test_time_flip)}),
        },
        description=f"{config.name} slimmed from {old_c} to {channels} channels at the first stage "
        "(structured pruning by measured channel importance); fine-tune before use.",
        # the source's "selection" note describes how *its* weights were picked, not these
        meta={
            **{k: v for k, v in config.meta.items() if k != "selection"},
            "slimmed_from": {"name": config.name, "init_channels": old_c, "params": count_params(model)},
        },
    )
    small = create_model(new_config)
    small.load_state_dict(_slice_state(model, keep, widths))
    if recalibrate:
        recalibrate_bn(small, t, pre)
    small.eval()
    report = {
        "params_before": count_params(model),
        "params_after": count_params(small),
        "init_channels_before": old_c,
        "init_channels_after": channels,
        "kept": [k.tolist() for k in keep],
    }
    return new_config, small, report
