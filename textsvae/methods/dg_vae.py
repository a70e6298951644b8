"""DG-VAE (J. Zhang et al., NeurIPS 2022, "Improving Variational Autoencoders with Density Gap-based
Regularization"): the per-sentence KL replaced by a Monte-Carlo KL between the batch's aggregate posterior
q_B(z) = (1/B) sum_b q(z|x_b) and the prior.

With M reparameterised draws z_bm ~ q(z|x_b) for each of the B sentences (so B M draws from q_B):
- mode 'dim' (Zhang et al.'s code for the Gaussian, zhangjf-nlp/DG-VAEs, modules/encoders/DGBasedKLD.py,
  DGBasedGaussianKLD): the sum over dimensions of each marginal's KL,
      sum_d mean_bm [ log (1/B) sum_k N(z_bmd; mu_kd, sigma_kd^2) - log N(z_bmd; 0, 1) ];
- mode 'joint': the KL of the full D-dimensional aggregate posterior,
      mean_bm [ log (1/B) sum_k q(z_bm|x_k) - log p(z_bm) ].
The same value enters every sentence's loss, so the batch mean is that KL. The draws are the method's own
(M per sentence), not the one the reconstruction uses, as in Zhang et al.'s code. The reported KL and
all metrics stay the per-sentence analytic ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..kernels.metrics import log_standard_normal, sample_diag_gaussian
from . import register
from .base import Method, check, param

MODES = ("dim", "joint")
LOG_2PI = math.log(2.0 * math.pi)


def aggregate_kl(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor, mode: str) -> torch.Tensor:
    """() the Monte-Carlo KL(q_B || N(0, I)) for mu, logvar (B, D) and standard-normal eps (B, M, D)."""
    batch = mu.size(0)
    z = sample_diag_gaussian(mu, logvar, eps).reshape(-1, 1, mu.size(1))              # (B M, 1, D)
    # log N(z_i; mu_k, sigma_k^2) per dimension for every draw i and component k: (B M, B, D)
    log_q = -0.5 * ((z - mu) ** 2 / logvar.exp() + logvar + LOG_2PI)
    if mode == "joint":
        log_q_agg = torch.logsumexp(log_q.sum(-1), dim=1) - math.log(batch)            # (B M,)
        return (log_q_agg - log_standard_normal(z.squeeze(1))).mean()
    log_q_agg = torch.logsumexp(log_q, dim=1) - math.log(batch)                         # (B M, D)
    log_p = -0.5 * (z.squeeze(1) ** 2 + LOG_2PI)
    return (log_q_agg - log_p).mean(0).sum()


@dataclass
class DGVAEParams:
    samples: int = param(32, "M, draws from each sentence's q(z|x) for the Monte-Carlo KL (Zhang et al.: 32)")
    mode: str = param("dim", "'dim': the sum of each dimension's aggregate KL (Zhang et al.'s Gaussian code); "
                             "'joint': the KL of the D-dimensional aggregate posterior")

    def __post_init__(self) -> None:
        check(self.samples >= 1, f"samples must be >= 1, got {self.samples}")
        check(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")


@register("dg-vae")
class DGVAE(Method):
    """DG-VAE: KL term = Monte-Carlo KL(batch aggregate posterior || prior), per dimension (Zhang et al. 2022)."""

    Params = DGVAEParams
    needs_latent = True

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(mu.size(0), self.params.samples, mu.size(1), device=mu.device, dtype=mu.dtype)
        return aggregate_kl(mu, logvar, eps, self.params.mode).expand(mu.size(0))
