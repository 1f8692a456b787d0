"""Two artifacts on the same real samples (as Polygraphy's ``run`` compares runtimes).

Any pair the runtime loads: a checkpoint against its ONNX export, fp32 against INT8, ONNX
Runtime against a TensorRT engine. Same preprocessing for both (each from its own metadata;
they must agree on input spec and classes, or the comparison would be meaningless).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import UserError
from .loader import load_backend


def compare(
    a: str | os.PathLike,
    b: str | os.PathLike,
    data: str | os.PathLike,
    limit_per_class: int | None = None,
    provider: str | None = None,
) -> dict:
    from ..data.datasets import load_dataset
    from ..data.preprocess import Preprocessor

    ba, bb = load_backend(a, provider=provider), load_backend(b, provider=provider)
    if (
        ba.config.input_shape != bb.config.input_shape
        or ba.config.preprocess.to_dict() != bb.config.preprocess.to_dict()
    ):
        raise UserError(
            f"{a} and {b} take different inputs "
            f"({ba.config.input_shape} vs {bb.config.input_shape}, or different preprocessing)"
        )
    if tuple(ba.classes) != tuple(bb.classes):
        raise UserError(f"{a} and {b} have different classes ({', '.join(ba.classes)} vs {', '.join(bb.classes)})")
    ds = load_dataset(data, ba.config, usage="PublicTest", limit_per_class=limit_per_class)
    x = Preprocessor(ba.config).normalize(ds.images)
    la, lb = ba.run_all(x), bb.run_all(x)
    diff = np.abs(la - lb)
    pa, pb = la.argmax(1), lb.argmax(1)
    return {
        "a": {"artifact": str(a), "backend": ba.name, "top1": float(np.mean(pa == ds.labels))},
        "b": {"artifact": str(b), "backend": bb.name, "top1": float(np.mean(pb == ds.labels))},
        "samples": int(len(ds)),
        "data": str(data),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(np.mean(pa == pb)),
    }
