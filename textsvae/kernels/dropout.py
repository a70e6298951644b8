"""Inverted dropout with its mask drawn from uniform samples: y = x * [u >= p] / (1 - p), u ~ U[0, 1).

The same distribution as nn.Dropout. On the CPU, ATen's bernoulli_ (nn.Dropout's mask) is the slow
part (`benchmarks/perf/kernels.py` times both, results/perf.md); on other devices
nn.functional.dropout's fused kernel is used.
"""
from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Dropout):
    """nn.Dropout (same p, train/eval behaviour and state) with a faster mask on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p in (0.0, 1.0) or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        keep = torch.empty_like(x, requires_grad=False).uniform_().ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * keep
