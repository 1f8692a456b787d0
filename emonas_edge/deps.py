"""Which optional parts of the install are here, and the one message for a part that is not.

The base install runs exported models (ONNX Runtime, OpenCV); PyTorch and the exporter's
packages come with the ``train`` extra. Every command that needs them reaches this module,
either up front (:func:`require_torch`) or through the console script's last resort
(:func:`missing_extra`), so a runtime-only install always says which extra to install.
"""

from __future__ import annotations

import importlib.util

# the packages the ``train`` extra brings (pyproject.toml): export, training, slimming and search need them
TRAIN_MODULES = ("torch", "onnxscript", "onnxsim", "onnxslim")


def available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a module with no spec
        return False


def has_torch() -> bool:
    return available("torch")


def require_torch(purpose: str) -> None:
    """A one-line :class:`MissingDependency` now, rather than an ImportError deep inside ``purpose``."""
    if not has_torch():
        from .errors import MissingDependency

        raise MissingDependency("torch", purpose, extra="train")


def missing_extra(exc: ImportError):
    """The :class:`MissingDependency` an ImportError of a ``train`` package stands for, else None."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if not isinstance(exc, ModuleNotFoundError) or name not in TRAIN_MODULES:
        return None
    from .errors import MissingDependency

    return MissingDependency(name, "this command (PyTorch export, training, slimming or search)", extra="train")
