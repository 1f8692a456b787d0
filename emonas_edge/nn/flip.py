"""Test-time flip as part of the network, not of one caller.

A face and its mirror show the same expression, and averaging the two views can add accuracy. If
the averaging lived in the evaluator only, the accuracy we report would not be the accuracy the
pipeline delivers, nor the latency the one it pays. With ``network.test_time_flip`` set, the
network itself (and therefore its ONNX export, every backend and the pipeline) runs both views as one
batch of two and returns log(mean of the two softmaxes): consumers that apply softmax get the
averaged probabilities exactly, and argmax gives the averaged decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


class FlipAveraged:
    """Mixin: ``forward`` averages ``_forward`` over the input and its mirror in eval mode."""

    test_time_flip: bool = False
    # provided by the nn.Module subclass that mixes this in
    training: bool
    _forward: Callable[[torch.Tensor], torch.Tensor]

    def forward(self, x: torch.Tensor):
        if self.training or not self.test_time_flip:
            return self._forward(x)
        logp = torch.log_softmax(self._forward(torch.cat([x, x.flip(-1)])), dim=1)
        return torch.logsumexp(logp.unflatten(0, (2, -1)), dim=0) - math.log(2.0)
