"""Knowledge distillation: teachers, their soft targets and the loss that pulls the student towards them."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import UserError
from ..fileio import atomic_outputs, cache_dir
from .common import training_batch


def load_teachers(
    names: tuple[str, ...], student: ModelConfig, device: torch.device, channels_last: bool
) -> tuple[list[torch.nn.Module], list[str]]:
    """The teachers in eval mode on ``device`` and their weight fingerprints (for ``--resume``).

    A teacher must score the student's classes on the student's input, with trained weights:
    distilling from random weights teaches noise.
    """
    from ..resolve import load_model

    teachers, fingerprints = [], []
    for path in names:
        tconfig, teacher, _ = load_model(path)  # a checkpoint or a trained built-in name
        if list(tconfig.classes) != list(student.classes) or tconfig.input_shape != student.input_shape:
            raise UserError(f"teacher {path} has other classes or input shape than the student")
        if not tconfig.trained:
            raise UserError(f"teacher {path} holds untrained weights")
        fingerprints.append(teacher_fingerprint(teacher))
        teacher = teacher.to(device).eval()
        if channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
        teachers.append(teacher)
    return teachers, fingerprints


def teacher_fingerprint(teacher: torch.nn.Module) -> str:
    """SHA-256 of a teacher's weights, whatever file or built-in name they came from.

    A resumed distillation run recomputes its targets from the teachers it is given; if a file
    or a built-in name now holds other weights, the second half of the run would silently learn
    from another teacher. The fingerprints saved with the run let ``--resume`` refuse that.
    """
    h = hashlib.sha256()
    for k, v in sorted(teacher.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def online_targets(teachers: list[torch.nn.Module], x: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teachers' tempered class probabilities on ``x``, averaged over the teachers."""
    with torch.no_grad():
        return torch.stack([F.softmax(t(x).float() / temperature, 1) for t in teachers]).mean(0)


def teacher_targets(
    teachers: list[torch.nn.Module],
    images: torch.Tensor,
    unit_scale: torch.Tensor,
    shift: torch.Tensor,
    temperature: float,
    batch: int = 512,
    channels_last: bool = True,
) -> torch.Tensor:
    """Tempered class probabilities of the teachers on every clean image and its mirror, averaged.

    Why offline: on a CPU an online teacher costs a forward pass per augmented image (+50% time
    for a teacher as large as the student); one pass over the clean images costs about one epoch's
    forward passes once. Averaging the mirror makes the target valid for flipped views too; the
    other augmentations are small (a few degrees, pixels, an erased patch), which is what lets
    a clean-image target stand in for the view's own.
    """
    parts = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            idx = torch.arange(i, min(i + batch, len(images)), device=images.device)
            x = training_batch(images, idx, unit_scale, shift, None, channels_last=channels_last)
            parts.append(
                (
                    (online_targets(teachers, x, temperature) + online_targets(teachers, x.flip(3), temperature)) / 2
                ).cpu()
            )
    return torch.cat(parts).to(images.device)


def distillation_loss(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence to the teachers' tempered probabilities, times T² so its gradient keeps its size whatever T."""
    return (
        F.kl_div(F.log_softmax(logits.float() / temperature, 1), target, reduction="batchmean")
        * temperature
        * temperature
    )


def targets_key(fingerprints: list[str], images: torch.Tensor, shift: torch.Tensor, temperature: float) -> str:
    """What offline targets depend on: the teachers' weights, the exact images, their normalisation, T.

    (``shift`` with the images' dtype fixes the preprocessing: the mean/std pair sets both scale and shift.)"""
    h = hashlib.sha256()
    for f in fingerprints:
        h.update(f.encode())
    h.update(f"|{tuple(images.shape)}|{temperature!r}|".encode())
    h.update(shift.detach().cpu().numpy().tobytes())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cached_targets(key: str, n: int) -> torch.Tensor | None:
    """Offline targets computed before for exactly these teachers and images (``None`` if not cached).

    Why: one pass of a large teacher over FER2013 and its mirrors takes minutes on two cores, and every
    run, ablation twin and resumed session of the same student data would otherwise pay it again."""
    path = cache_dir() / f"distill-{key}.npz"
    try:
        with np.load(path) as z:
            targets = torch.from_numpy(z["targets"])
    except Exception:  # absent or damaged: recomputed, never trusted
        return None
    return targets if targets.ndim == 2 and len(targets) == n else None


def store_targets(key: str, targets: torch.Tensor) -> None:
    try:
        with atomic_outputs(cache_dir() / f"distill-{key}.npz") as (tmp,):
            with open(tmp, "wb") as f:
                np.savez(f, targets=targets.detach().cpu().numpy())
    except OSError:
        pass  # caching is an optimisation; a read-only home must not stop training
