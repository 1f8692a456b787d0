"""The one interface every artifact runs behind, so callers never care which engine serves it."""

from __future__ import annotations

import numpy as np

from ..config import ModelConfig
from ..export.session import run_chunked


class Backend:
    """``run(x)``: float32 NCHW batch (already preprocessed) -> float32 logits (N, classes)."""

    name = "base"
    config: ModelConfig
    static_batch: int | None = None
    path: str

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @property
    def trained(self) -> bool:
        return self.config.trained

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def run_all(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """Any number of samples, in chunks; a static-batch artifact gets padded chunks."""
        return run_chunked(self.run, x, self.static_batch, len(self.classes), batch)
