"""Models given by name, checkpoint or genotype, run in PyTorch (``--engine torch``)."""

from __future__ import annotations

import numpy as np

from ..config import ModelConfig
from .backend import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, config: ModelConfig, model, path: str, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.config, self.model, self.path = config, model.eval(), path
        self._torch = torch

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(x)).float().numpy()
