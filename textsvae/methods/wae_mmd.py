"""WAE-MMD and InfoVAE: the KL term replaced (WAE) or joined (InfoVAE) by an MMD between the aggregate
posterior and the prior. The training objective is NOT an ELBO, so its value bounds nothing; the model is
still a latent-variable model with encoder q, so evaluation reports the ELBO, KL and IW-NLL of p under q
as for every other method (IW-NLL remains a stochastic upper bound on -log p(x)).

    loss = mean_b [ Rec_b + kl_weight KL_b ] + mmd_weight MMD^2(q_B, p)

(the whole penalty times beta under annealing). In InfoVAE's terms (Zhao, Song & Ermon, AAAI 2019, eq. 6)
kl_weight = 1 - alpha and mmd_weight = alpha + lambda - 1; WAE-MMD (Tolstikhin, Bousquet, Gelly & Schoelkopf,
ICLR 2018, algorithm 2) is kl_weight = 0 with mmd_weight = lambda = 10 (their MNIST setting), the default.
MMD^2 is the unbiased U-statistic between n = B S draws z~_i ~ q(z|x_b) (S per sentence, the method's own)
and n prior draws z_j ~ N(0, I), with WAE's inverse multiquadratic kernel k(x, y) = C / (C + ||x - y||^2),
C = 2 D (sigma_p^2 = 1):

    MMD^2 = sum_{i != j} [k(z_i, z_j) + k(z~_i, z~_j)] / (n (n - 1)) - 2 sum_{i, j} k(z_i, z~_j) / n^2.

A batch of one sentence with S = 1 has no pair: its MMD term is 0. Zhang et al.'s DG-VAEs code
(zhangjf-nlp/DG-VAEs, modules/encoders/encoder.py, WAEGaussianLSTMEncoder) has the same kernel and
estimator with S = 32; Pelsmaeker & Aziz's (tom-pelsmaeker/deep-generative-lm) the InfoVAE weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.metrics import gaussian_kl, sample_diag_gaussian
from . import register
from .base import Method, check, param


def imq_kernel(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """(n, m) k(x_i, y_j) = c / (c + ||x_i - y_j||^2) for x (n, D), y (m, D)."""
    squared = (x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1) - 2.0 * x @ y.t()).clamp(min=0.0)
    return c / (c + squared)


def mmd_imq(q_samples: torch.Tensor, p_samples: torch.Tensor) -> torch.Tensor:
    """() the unbiased MMD^2 U-statistic between q_samples and p_samples (n, D) each, IMQ kernel C = 2 D."""
    n = q_samples.size(0)
    if n < 2:
        return q_samples.new_zeros(())
    c = 2.0 * q_samples.size(1)
    off_diagonal = 1.0 - torch.eye(n, device=q_samples.device, dtype=q_samples.dtype)
    within = ((imq_kernel(p_samples, p_samples, c) + imq_kernel(q_samples, q_samples, c)) * off_diagonal).sum()
    across = imq_kernel(p_samples, q_samples, c).sum()
    return within / (n * (n - 1)) - 2.0 * across / (n * n)


@dataclass
class WAEMMDParams:
    mmd_weight: float = param(10.0, "weight of MMD^2(q(z), p(z)) (WAE's lambda, 10 on MNIST; InfoVAE's alpha + lambda - 1)")
    kl_weight: float = param(0.0, "weight of the per-sentence KL (0: WAE; InfoVAE's 1 - alpha)")
    samples: int = param(1, "S, draws from each sentence's q(z|x) in the MMD (WAE: 1; Zhang et al.'s DG-VAEs code: 32)")

    def __post_init__(self) -> None:
        check(self.mmd_weight >= 0, f"mmd_weight must be >= 0, got {self.mmd_weight}")
        check(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}")
        check(self.samples >= 1, f"samples must be >= 1, got {self.samples}")


@register("wae-mmd")
class WAEMMD(Method):
    """WAE-MMD / InfoVAE: Rec + kl_weight KL + mmd_weight MMD(q(z), p(z)), IMQ kernel; not an ELBO (Tolstikhin et al. 2018)."""

    Params = WAEMMDParams
    needs_latent = True

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """(B,) kl_weight KL_b + mmd_weight MMD^2, the MMD the same in every row."""
        p = self.params
        eps = torch.randn(mu.size(0), p.samples, mu.size(1), device=mu.device, dtype=mu.dtype)
        q_samples = sample_diag_gaussian(mu, logvar, eps).reshape(-1, mu.size(1))        # (B S, D)
        prior = torch.randn(q_samples.shape, device=mu.device, dtype=mu.dtype)
        mmd = mmd_imq(q_samples, prior)
        return p.kl_weight * gaussian_kl(mu, logvar).sum(-1) + p.mmd_weight * mmd
