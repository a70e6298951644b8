"""The decoder's output layer, p(x_t | .) = softmax(V h_t + b) (skip: softmax(V h_t + U z + b)), with its
negative log-likelihood: the fused operation of `ops` (the fast path) or the plain twice-differentiable
linear layer + cross-entropy (`fast_paths(fused_output=False)`, which SA-VAE's refinement needs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.fast_paths import switches
from ..kernels.ops import linear_cross_entropy, skip_cross_entropy


class OutputLayer(nn.Linear):
    """An nn.Linear over [h; z] for the skip decoder, over h otherwise; its weight and bias keep nn.Linear's names."""

    def __init__(self, hidden: int, latent: int, vocab_size: int, skip: bool):
        super().__init__(hidden + (latent if skip else 0), vocab_size)
        self.skip = skip

    def nll(self, hidden: torch.Tensor, z: torch.Tensor | None, targets: torch.Tensor,
            row_sample: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(target | h[, z]) per row: (N, H), z and row_sample, (N,) -> (N,) in fp32 or wider.

        z is (N, D), one row per target, or (S, D) with row_sample (N,) naming each target's row of z
        (the skip decoder then adds z's part of the softmax once per sample, see ops.skip_cross_entropy).
        """
        fused = switches().fused_output
        if self.skip and row_sample is not None and fused:
            return skip_cross_entropy(hidden, z, row_sample, self.weight, self.bias, targets)
        if self.skip:
            hidden = torch.cat([hidden, z if row_sample is None else z[row_sample]], dim=-1)
        if fused:
            return linear_cross_entropy(hidden, self.weight, self.bias, targets)
        logits = self(hidden)
        return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets, reduction="none")

    def logits(self, hidden: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Output logits for hidden rows (..., H); skip adds z: softmax(V h + U z)."""
        if self.skip:
            hidden = torch.cat([hidden, z.expand(*hidden.shape[:-1], z.size(-1))], dim=-1)
        return self(hidden)
