"""Free bits: a floor on the KL penalty (Kingma et al. 2016; for text, Li et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.metrics import gaussian_kl
from . import register
from .base import Method, check, param

MODES = ("dim", "sentence", "sentence-dim")


def free_bits_kl(mu: torch.Tensor, logvar: torch.Tensor, target: float, mode: str) -> torch.Tensor:
    """(B,) KL penalty with a floor; mu, logvar (B, D). Terms under their floor get no gradient.

    dim (Kingma et al. 2016, one dimension per group): penalty = sum_d max(mean_b KL_bd, target / D),
        the same value in every row, so the batch mean of the returned tensor is that sum.
    sentence: penalty_b = max(sum_d KL_bd, target), a floor on each sentence's total KL.
    sentence-dim (Li et al. 2019's code, `--fb 2`): penalty_b = sum_d max(KL_bd, target / D), each
        sentence's KL in each dimension floored. Their code drops the terms under the floor instead of
        raising them to it: the same gradient, a loss lower by a constant.
    """
    kl = gaussian_kl(mu, logvar)                                          # (B, D)
    floor = target / kl.size(-1)
    if mode == "dim":
        return kl.mean(0).clamp(min=floor).sum().expand(kl.size(0))
    if mode == "sentence-dim":
        return kl.clamp(min=floor).sum(-1)
    return kl.sum(-1).clamp(min=target)


@dataclass
class FreeBitsParams:
    target: float = param(8.0, "target KL in nats per sentence (Li et al. 2019: 8); the dim modes floor each "
                               "dimension at target/nz")
    mode: str = param("dim", "'dim': batch-averaged KL per dimension floored at target/nz; 'sentence': each "
                             "sentence's KL at target; 'sentence-dim': each sentence's KL per dimension at target/nz")

    def __post_init__(self) -> None:
        check(self.target >= 0, f"target must be >= 0, got {self.target}")
        check(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")


@register("free-bits")
class FreeBits(Method):
    """Free bits: KL penalty max(KL, floor) per dimension, sentence, or both (Kingma et al. 2016; Li et al. 2019).

    `mode`: 'dim' floors each dimension's batch-mean KL (Kingma et al.), 'sentence' each sentence's
    total, 'sentence-dim' each sentence's KL in each dimension (Li et al.'s code).
    """

    Params = FreeBitsParams
    needs_latent = True

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return free_bits_kl(mu, logvar, self.params.target, self.params.mode)
