"""beta-VAE: a constant weight on the KL term (Higgins et al. 2017; for text, He et al. 2019's baselines)."""
from __future__ import annotations

from dataclasses import dataclass

from . import schedules
from . import register
from .base import Method, check, param


@dataclass
class BetaParams:
    beta: float = param(0.4, "constant KL weight (He et al. 2019 report 0.2 and 0.4)")

    def __post_init__(self) -> None:
        check(self.beta >= 0, f"beta must be >= 0, got {self.beta}")


@register("beta")
class Beta(Method):
    """Constant KL weight beta throughout training, beta-VAE (Higgins et al. 2017)."""

    Params = BetaParams
    needs_latent = True

    def beta(self, step: int, epoch: int, steps_per_epoch: int) -> float:
        return schedules.constant(step, self.params.beta)
