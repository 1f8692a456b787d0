"""Face augmentation applied to whole batches at once (one affine warp, one erasing mask).

Per-image PIL/OpenCV augmentation in worker processes would cost more CPU than the network on
a 2-core machine; a batched ``affine_grid``/``grid_sample`` on tensors costs a few ms per batch.
Faces are only mildly transformed: small rotations and zooms, a few pixels of shift (the
"random crop with padding"), horizontal flips (expressions are near-symmetric), and random
erasing for occlusion robustness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSettings:
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift_px: float = 3.0
    flip: bool = True
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)
    brightness: float = 0.2
    contrast: float = 0.2


def augment_batch(x: torch.Tensor, g: torch.Generator, s: AugmentSettings = AugmentSettings()) -> torch.Tensor:
    """``x``: float (N, C, H, W) in [0, 1], on any device; returns a new tensor, same shape, in [0, 1].

    The random draws come from the CPU generator ``g`` and move to ``x``'s device, so a batch is
    augmented the same way on a GPU as on the CPU (and a resumed run takes the same draws), while
    the warp itself runs where the images are.
    """
    n, _, h, w = x.shape
    dev = x.device
    rand = lambda *shape: torch.rand(*shape, generator=g).to(dev)  # noqa: E731
    angle = (rand(n) * 2 - 1) * math.radians(s.rotate_deg)
    scale = s.scale[0] + rand(n) * (s.scale[1] - s.scale[0])
    tx = (rand(n) * 2 - 1) * (2 * s.shift_px / w)
    ty = (rand(n) * 2 - 1) * (2 * s.shift_px / h)
    flip = torch.where(rand(n) < 0.5, -1.0, 1.0) if s.flip else torch.ones(n, device=dev)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    if s.brightness or s.contrast:
        b = 1 + (rand(n, 1, 1, 1) * 2 - 1) * s.brightness
        c = 1 + (rand(n, 1, 1, 1) * 2 - 1) * s.contrast
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * c + mean) * b

    if s.erase_p > 0:
        area = (s.erase_area[0] + rand(n) * (s.erase_area[1] - s.erase_area[0])) * h * w
        aspect = torch.exp((rand(n) * 2 - 1) * math.log(3.0))
        eh = torch.sqrt(area * aspect).clamp(1, h)
        ew = torch.sqrt(area / aspect).clamp(1, w)
        y0 = rand(n) * (h - eh)
        x0 = rand(n) * (w - ew)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        mask = (
            (ys >= y0.view(n, 1, 1))
            & (ys < (y0 + eh).view(n, 1, 1))
            & (xs >= x0.view(n, 1, 1))
            & (xs < (x0 + ew).view(n, 1, 1))
        ) & (rand(n) < s.erase_p).view(n, 1, 1)
        noise = rand(n, x.shape[1], h, w)
        out = torch.where(mask.unsqueeze(1), noise.to(out.dtype), out)
    return out.clamp_(0, 1)


MIX_MODES = ("none", "mixup", "cutmix")


def mix_batch(
    x: torch.Tensor, g: torch.Generator, mode: str, alpha: float = 1.0, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Mixup or CutMix of a batch with a shuffled copy of itself: ``(x_mixed, partner, lam)``.

    Why: the FER2013 nets here end 8–10 points more accurate on augmented training images than
    on PublicTest; mixing is a regulariser that costs no extra forward pass. The caller mixes its
    losses and soft targets with the same ``lam`` (the weight of the original image) and
    ``partner`` (the index of each image's partner in the batch); ``partner is None`` means the
    batch was left unmixed (probability ``1 - p``). One ``lam`` per batch, as in timm. All draws
    come from ``g`` so a resumed run mixes exactly as an uninterrupted one; ``none`` draws nothing,
    so runs without mixing keep their random streams.
    """
    if mode not in MIX_MODES:
        raise ValueError(f"mix mode must be one of {MIX_MODES}, got {mode!r}")
    n, _, h, w = x.shape
    if mode == "none":
        return x, None, 1.0
    apply = float(torch.rand(1, generator=g)) < p
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))  # always drawn: the stream stays aligned
    partner = torch.randperm(n, generator=g).to(x.device)
    if not apply or n < 2:
        return x, None, 1.0
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    if mode == "mixup":
        return x * lam + x[partner] * (1 - lam), partner, lam
    # CutMix: a box of area (1 - lam), centred anywhere, clipped at the borders; lam then follows the box
    rng = np.random.default_rng(seed + 1)
    cut = math.sqrt(1 - lam)
    bh, bw = int(round(h * cut)), int(round(w * cut))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[partner, :, y0:y1, x0:x1]  # only the box is gathered
    return out, partner, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
