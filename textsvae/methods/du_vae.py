"""DU-VAE (Shen, Qin, Wang, Zhu, Chen & Xiong, IJCAI 2021): batch norm on the posterior means and dropout
on the posterior variances; the loss is the plain ELBO of the resulting q.

As in the authors' code (SmilesDZgk/DU-VAE, modules/encoders/enc_lstm.py and encoder.py):
- means: mu = s * (m - mean_B m) / sqrt(var_B m + eps) + shift, batch statistics in training, running ones
  at evaluation. The scale s is learned but kept at root-mean-square gamma over the dimensions (their
  code rescales the BN weight to mean(s_d^2) = gamma^2 before every forward pass; here s = gamma w /
  rms(w), the same constraint), so sum_d mean_B mu_d^2 >= D gamma^2 once var_B m >> eps, as in BN-VAE.
- variances: sigma^2 = exp(v) + delta^2 with the floor delta^2 = delta_rate / (2 pi e) (each dimension's
  entropy 0.5 log(2 pi e sigma^2) >= 0.5 log delta_rate); in training the part above the floor goes through
  dropout, sigma^2 = Dropout_p(exp(v)) + delta^2 (kept values scaled by 1 / (1 - p)), so
  E[sigma^2] is unchanged and a share p of the variances sits at the floor.
Their code applies the floor and the dropout only once KL annealing has reached weight 1; here both act
at every step (with `du-vae+anneal` too).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from .base import check, param
from .bn_vae import BNVAE, FixedScaleBatchNorm

if TYPE_CHECKING:
    from ..data.batching import Batch
    from ..model.models import TextVAE


class RMSScaleBatchNorm(FixedScaleBatchNorm):
    """FixedScaleBatchNorm whose per-dimension scale is learned with its root mean square held at gamma."""

    def __init__(self, dim: int, gamma: float, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(dim, gamma, momentum, eps)
        self.weight = nn.Parameter(torch.full((dim,), float(gamma)))

    def scale(self) -> torch.Tensor:
        """(D,) s = gamma * w / rms(w), so that mean_d s_d^2 = gamma^2."""
        return self.gamma * self.weight / self.weight.pow(2).mean().sqrt()


def variance_floor(delta_rate: float) -> float:
    """delta^2 = delta_rate / (2 pi e), the smallest posterior variance (Shen et al.'s alpha)."""
    return delta_rate / (2.0 * math.pi * math.e)


def floored_logvar(logvar_raw: torch.Tensor, delta_rate: float, p_drop: float, training: bool) -> torch.Tensor:
    """log sigma^2 with sigma^2 = Dropout_p(exp(v)) + delta^2 in training, exp(v) + delta^2 otherwise; (B, D)."""
    excess = logvar_raw.exp()
    if training and p_drop > 0:
        excess = F.dropout(excess, p_drop, training=True)
    return torch.log(excess + variance_floor(delta_rate))


@dataclass
class DUVAEParams:
    gamma: float = param(0.5, "root mean square of the BN scale on mu (Shen et al.'s text configs: 0.5)")
    p_drop: float = param(0.2, "dropout probability on the posterior variances above the floor (Shen et al.: 0.2)")
    delta_rate: float = param(1.0, "the variance floor is delta_rate / (2 pi e) (Shen et al.: 1)")
    eps: float = param(1e-5, "BN variance floor (PyTorch's default, as in Shen et al.'s code)")

    def __post_init__(self) -> None:
        check(self.gamma > 0, f"gamma must be > 0, got {self.gamma}")
        check(0.0 <= self.p_drop < 1.0, f"p_drop must be in [0, 1), got {self.p_drop}")
        check(self.delta_rate > 0, f"delta_rate must be > 0, got {self.delta_rate}")
        check(self.eps > 0, f"eps must be > 0, got {self.eps}")


@register("du-vae")
class DUVAE(BNVAE):
    """DU-VAE: BN on mu (scale of RMS gamma) and dropout on the variances above a floor (Shen et al. 2021)."""

    Params = DUVAEParams

    def make_layer(self, latent_dim: int) -> RMSScaleBatchNorm:
        return RMSScaleBatchNorm(latent_dim, self.params.gamma, eps=self.params.eps)

    def posterior(self, model: "TextVAE", batch: "Batch") -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2): mu from the encoder's BN layer, the variance floored and, in training, dropped out."""
        mu, logvar_raw = model.encode(batch)
        p = self.params
        return mu, floored_logvar(logvar_raw, p.delta_rate, p.p_drop, model.training)
