"""The pieces every training loop here uses: the trainer's and the architecture search's.

Both train on uint8 images held in memory as one NCHW tensor, build each batch on tensors,
follow the same warm-up + cosine schedule and run under ``torchrun`` the same way; sharing
these functions is what keeps a searched network's training comparable with the trainer's.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..data.augment import AugmentSettings, augment_batch
from ..data.datasets import ArrayDataset
from ..data.preprocess import Preprocessor
from ..errors import UserError
from ..metrics import classification_report


def init_distributed() -> tuple[int, int]:
    """``(rank, world size)``; joins the process group when started by ``torchrun`` with several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank() if world > 1 else 0), world


def training_device(name: str, rank: int) -> torch.device:
    """``auto`` takes CUDA when there is one; each distributed process takes its own GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def dataset_images(ds: ArrayDataset, device) -> torch.Tensor:
    """A dataset's uint8 images (NHW gray or NHWC colour) as one NCHW tensor on ``device``."""
    imgs = torch.from_numpy(ds.images)
    imgs = imgs.unsqueeze(1) if imgs.ndim == 3 else imgs.permute(0, 3, 1, 2)
    return imgs.contiguous().to(device)


def warmup_cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to zero at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(1.0, t)))


def training_batch(
    images: torch.Tensor,
    idx: torch.Tensor,
    unit_scale: torch.Tensor,
    shift: torch.Tensor,
    g: torch.Generator | None,
    aug: AugmentSettings | None = None,
    channels_last: bool = True,
) -> torch.Tensor:
    """uint8 NCHW images -> the normalised network input; with ``g=None`` exactly what
    :class:`Preprocessor` gives at inference (the tests hold the two together)."""
    x = images[idx].float().div_(255)
    if g is not None:
        x = augment_batch(x, g, aug or AugmentSettings())
    x = x * unit_scale + shift
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def evaluate_arrays(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    pre: Preprocessor,
    classes,
    batch: int = 512,
    channels_last: bool = False,
) -> dict:
    """Metrics of a PyTorch model on uint8 NCHW images (no augmentation)."""
    model.eval()
    preds = []
    scale = torch.from_numpy(pre.scale).to(images.device)
    shift = torch.from_numpy(pre.shift).to(images.device)
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = images[i : i + batch].float() * scale + shift
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = model(x)
            preds.append(out.argmax(1).cpu())
    y_pred = torch.cat(preds).numpy()
    return classification_report(labels, y_pred, classes)
