"""Free bits: a floor on the KL penalty (Kingma et al. 2016; for text, Li et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics import gaussian_kl
from . import register
from .base import Method, check, param

MODES = ("dim", "sentence")


def free_bits_kl(mu: torch.Tensor, logvar: torch.Tensor, target: float, mode: str) -> torch.Tensor:
    """(B,) KL penalty whose batch mean is floored; mu, logvar (B, D).

    dim (Kingma et al. 2016 with one dimension per group; Li et al. 2019):
        penalty = sum_d max(mean_b KL_bd, target / D), the same value in every row, so the
        batch mean of the returned tensor is that sum. Dimensions under the floor get no gradient.
    sentence: penalty_b = max(sum_d KL_bd, target), a floor on each sentence's total KL.
    """
    kl = gaussian_kl(mu, logvar)                                          # (B, D)
    if mode == "dim":
        floored = kl.mean(0).clamp(min=target / kl.size(-1)).sum()        # ()
        return floored.expand(kl.size(0))
    return kl.sum(-1).clamp(min=target)


@dataclass
class FreeBitsParams:
    target: float = param(8.0, "target KL in nats per sentence (Li et al. 2019: 8); dim mode floors each dim at target/nz")
    mode: str = param("dim", "'dim': batch-averaged KL per dimension floored at target/nz; 'sentence': each sentence's KL at target")

    def __post_init__(self) -> None:
        check(self.target >= 0, f"target must be >= 0, got {self.target}")
        check(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")


@register("free-bits")
class FreeBits(Method):
    """Free bits: the KL penalty is max(KL, floor), per dimension (batch-averaged) or per sentence (Kingma et al. 2016)."""

    Params = FreeBitsParams
    needs_latent = True

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return free_bits_kl(mu, logvar, self.params.target, self.params.mode)
