"""Does the exported graph compute what the PyTorch model computes, on real faces?

Inputs are real images pushed through the model's own preprocessing: a folder or file the
user names, else the bundled astronaut face under mild photometric and geometric variation.
Random tensors are only used when the caller asks (they exercise the graph but not realistic
activation ranges). Both the full batch and batch 1 are run, which also checks the batch axis.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..config import ModelConfig
from ..data.preprocess import IMAGE_SUFFIXES, Preprocessor, read_image
from ..errors import CheckFailed, UserError
from .session import open_session

if TYPE_CHECKING:
    import torch

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass
class ParityReport:
    inputs: str
    samples: int
    batches: list[int]
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    tolerance: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _variants(face: np.ndarray, n: int) -> list[np.ndarray]:
    """Deterministic realistic variants of one face: flips, small shifts/rotations, lighting."""
    h, w = face.shape[:2]
    out = []
    for i in range(n):
        img = face if i % 2 == 0 else cv2.flip(face, 1)
        angle = (-8, 0, 8, -4, 4, 0, -2, 2)[i % 8]
        shift = (0, 3, -3, 2, -2, 0, 4, -4)[i % 8]
        gain = (1.0, 0.85, 1.15, 0.95, 1.05, 0.75, 1.25, 1.0)[i % 8]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        m[:, 2] += shift
        img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        out.append(np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    return out


def collect_images(source: str | os.PathLike, n: int, seed: int = 0) -> list[np.ndarray]:
    """Up to ``n`` readable images from a file or (recursively) a folder, picked with a fixed seed."""
    p = Path(source)
    if not p.exists():
        raise UserError(f"sample data not found: {p}")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images found in {p}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    images = []
    for k in order:
        img = read_image(files[k])
        if img is not None:
            images.append(img)
            if len(images) == n:
                break
    if not images:
        raise UserError(f"none of the images in {p} could be read")
    return images


def parity_inputs(
    config: ModelConfig, data: str | os.PathLike | None = None, n: int = 8, random: bool = False
) -> tuple[np.ndarray, str]:
    if random:
        rng = np.random.default_rng(0)
        return rng.standard_normal((n, *config.input_shape)).astype(np.float32), f"random normal tensors ({n})"
    pre = Preprocessor(config)
    if data is not None:
        images = collect_images(data, n)
        return pre(images), f"real images from {data} ({len(images)})"
    face = read_image(ASSETS / "astronaut_face.png")
    if face is None:
        raise UserError(
            f"the bundled face {ASSETS / 'astronaut_face.png'} is missing or unreadable: reinstall emonas-edge"
        )
    return pre(_variants(face, n)), f"bundled astronaut face, {n} variants"


def check_parity(
    model: torch.nn.Module,  # torch is imported lazily: ONNX-only users never load PyTorch
    onnx_path: str | os.PathLike,
    x: np.ndarray,
    description: str,
    static_batch: int | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> ParityReport:
    if static_batch is not None:
        reps = -(-static_batch // len(x))
        x = np.concatenate([x] * reps)[:static_batch]
    model.eval()
    import torch

    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    try:
        sess = open_session(str(onnx_path), "cpu")
        name = sess.get_inputs()[0].name
        got = sess.run(None, {name: x})[0]
        batches = [len(x)]
        if static_batch is None and len(x) > 1:
            one = sess.run(None, {name: x[:1]})[0]
            got = np.concatenate([one, got[1:]])  # batch-1 result replaces row 0 of the batched run
            batches.append(1)
    except Exception as e:
        raise CheckFailed(f"ONNX Runtime could not run the exported model: {str(e).splitlines()[0][:200]}") from None
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    tol = atol + rtol * float(np.abs(ref).max())
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    max_diff = float(diff.max())
    return ParityReport(
        inputs=description,
        samples=len(x),
        batches=batches,
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()),
        top1_agreement=agree,
        tolerance=tol,
        passed=bool(np.isfinite(max_diff) and max_diff <= tol),
    )
