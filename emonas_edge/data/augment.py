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
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    ).to(x.dtype)
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
            (ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1)) & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1))
        ) & (rand(n) < s.erase_p).view(n, 1, 1)
        noise = rand(n, x.shape[1], h, w)
        out = torch.where(mask.unsqueeze(1), noise.to(out.dtype), out)
    return out.clamp_(0, 1)
