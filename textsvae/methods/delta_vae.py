"""delta-VAE (Razavi, van den Oord, Poole & Vinyals, ICLR 2019): a posterior family whose KL to the prior
is at least delta in every dimension.

For q = N(mu, sigma^2) and p = N(0, 1), KL = (mu^2 + sigma^2 - log sigma^2 - 1) / 2 >= delta holds when
sigma^2 lies between the two roots sigma_l^2 <= 1 <= sigma_u^2 of log x - x + 2 delta + 1 = 0 and
mu^2 >= 2 delta + 1 + log sigma^2 - sigma^2 (Razavi et al., section 3.1 and appendix, the independent
standard-normal prior). The encoder's raw outputs (m, v) are mapped as in the LSTM-encoder variant of
Zhang et al.'s code (zhangjf-nlp/DG-VAEs, modules/encoders/encoder.py, DeltaGaussianLSTMEncoder):

    sigma = sigma_l + (sigma_u - sigma_l) * s,   s = 1 / clamp(1 + exp(-v), 1, 50)
    mu    = sqrt(2 delta + 1 + log sigma^2 - sigma^2 + max(0, m) + 1e-6)

so KL_d = delta + max(0, m_d) / 2 + 5e-7 exactly, whatever the encoder outputs (and mu_d > 0: this
parametrisation uses one half-line of each axis). The objective is the plain ELBO; only the family changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from scipy.special import lambertw

from . import register
from .base import Method, check, param

if TYPE_CHECKING:
    from ..data.batching import Batch
    from ..model.models import TextVAE

SQRT_GUARD = 1e-6      # inside the square root, as in Zhang et al.'s code (a finite gradient at the bound)
MAX_GATE = 50.0        # 1 + exp(-v) clamped to [1, 50]: the gate s stays in [1/50, 1]


def variance_bounds(delta: float) -> tuple[float, float]:
    """(sigma_l^2, sigma_u^2): the roots of log x - x + 2 delta + 1 = 0, x = -W(-exp(-(2 delta + 1))) on the
    two real branches of Lambert's W (W_0 gives the root below 1, W_-1 the one above)."""
    arg = -math.exp(-(2.0 * delta + 1.0))
    if arg <= -math.exp(-1.0):      # delta = 0 (or rounding at it): the branch point, one double root at 1
        return 1.0, 1.0
    low = -lambertw(arg, 0).real
    high = -lambertw(arg, -1).real
    return float(min(low, 1.0)), float(max(high, 1.0))


@dataclass
class DeltaVAEParams:
    delta: float = param(0.15, "the committed rate: KL(q || p) >= delta nats in every dimension (Zhang et al.'s "
                               "DG-VAEs runs: 0.15)")

    def __post_init__(self) -> None:
        check(self.delta >= 0, f"delta must be >= 0, got {self.delta}")


@register("delta-vae")
class DeltaVAE(Method):
    """delta-VAE: q's mean and variance constrained so that each dimension's KL is >= delta (Razavi et al. 2019)."""

    Params = DeltaVAEParams
    needs_latent = True

    def __init__(self, params: DeltaVAEParams | None = None):
        super().__init__(params)
        low, high = variance_bounds(self.params.delta)
        self.sigma_low, self.sigma_high = math.sqrt(low), math.sqrt(high)

    def constrain(self, mu_raw: torch.Tensor, logvar_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's raw (m, v), (B, D) each, mapped to (mu, log sigma^2) with KL_d >= delta."""
        gate = 1.0 / torch.clamp(1.0 + torch.exp(-logvar_raw), 1.0, MAX_GATE)
        sigma = self.sigma_low + (self.sigma_high - self.sigma_low) * gate
        logvar = 2.0 * torch.log(sigma)
        floor = 2.0 * self.params.delta + 1.0 + logvar - logvar.exp()             # >= 0 on [sigma_l, sigma_u]
        mu = torch.sqrt(floor + torch.relu(mu_raw) + SQRT_GUARD)
        return mu, logvar

    def posterior(self, model: "TextVAE", batch: "Batch") -> tuple[torch.Tensor, torch.Tensor]:
        return self.constrain(*model.encode(batch))
