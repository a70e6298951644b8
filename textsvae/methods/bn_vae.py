"""BN-VAE (Zhu, Bi, Liu, Ma, Li & Wu, ACL 2020): batch normalisation of mu with a fixed scale."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from .base import Method, check, param

if TYPE_CHECKING:
    from .context import SetupContext


class FixedScaleBatchNorm(nn.Module):
    """mu_d -> gamma * (mu_d - mean_d) / sqrt(var_d + eps) + shift_d; gamma fixed (a buffer), shift learned.

    With batch statistics, mean_b mu_bd^2 = gamma^2 var_d / (var_d + eps) + shift_d^2, so the batch-mean
    KL, which is >= mean_b sum_d mu_bd^2 / 2, is >= D gamma^2 / 2 once var_d >> eps. Note: at He et al.'s
    init (weights U(-0.01, 0.01)) var_d is about 1e-10, far below eps = 1e-5 (PyTorch's default, used by
    Zhu et al.'s code), so the bound takes hold only after training spreads mu.
    """

    def __init__(self, dim: int, gamma: float, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.register_buffer("gamma", torch.full((dim,), float(gamma)))
        self.shift = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.momentum, self.eps = momentum, eps

    def scale(self) -> torch.Tensor:
        """(D,) the scale applied after normalising: gamma in every dimension."""
        return self.gamma

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        # (B, D); batch statistics in training (a batch of 1 has no variance: running stats then)
        use_batch = self.training and mu.size(0) > 1
        return F.batch_norm(mu, self.running_mean, self.running_var, self.scale(), self.shift,
                            training=use_batch, momentum=self.momentum, eps=self.eps)


@dataclass
class BNVAEParams:
    gamma: float = param(0.6, "fixed BN scale on mu (Zhu et al. 2020: 0.5 to 0.7); expected KL >= nz * gamma^2 / 2")
    eps: float = param(1e-5, "BN variance floor (PyTorch's default, as in Zhu et al.'s code); the bound needs var(mu) >> eps")

    def __post_init__(self) -> None:
        check(self.gamma > 0, f"gamma must be > 0, got {self.gamma}")
        check(self.eps > 0, f"eps must be > 0, got {self.eps}")


@register("bn-vae")
class BNVAE(Method):
    """BN-VAE: batch-norm on mu with fixed scale gamma and learned shift; E[KL] >= nz*gamma^2/2 (Zhu et al. 2020)."""

    Params = BNVAEParams
    needs_latent = True

    def setup(self, ctx: "SetupContext") -> None:
        """Install the BN layer on the encoder's mu hook; the Trainer builds the optimiser after this."""
        super().setup(ctx)
        model = ctx.model
        param_like = next(model.encoder.parameters())
        model.encoder.mu_norm = self.make_layer(model.latent_dim).to(param_like.device)

    def make_layer(self, latent_dim: int) -> FixedScaleBatchNorm:
        return FixedScaleBatchNorm(latent_dim, self.params.gamma, eps=self.params.eps)

    @staticmethod
    def kl_lower_bound(latent_dim: int, gamma: float) -> float:
        """nz * gamma^2 / 2, the lower bound on the batch-mean KL (Zhu et al. 2020)."""
        return latent_dim * gamma ** 2 / 2
