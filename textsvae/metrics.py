"""Metrics as pure tensor functions, each with its formula (PROTOCOL.md section 4)."""
from __future__ import annotations

import math

import torch


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-dimension KL(N(mu, sigma^2) || N(0, 1)) = 0.5 (mu^2 + sigma^2 - log sigma^2 - 1); shape of mu."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)


def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                       chunk: int = 256) -> float:
    """I_q(x; z) (He et al. 2019, eq. 5) with the aggregate posterior over all N rows given.

    MI = mean_n [ log q(z_n|x_n) - log q(z_n) ],  z_n ~ q(z|x_n),
    log q(z_n) = logsumexp_m log q(z_n|x_m) - log N.   Bounded above by log N.
    """
    n = mu.size(0)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    log_q_own = log_normal_diag(z, mu, logvar)                                  # (N,)
    log_q_agg = torch.empty(n, device=mu.device, dtype=mu.dtype)
    for start in range(0, n, chunk):
        zc = z[start:start + chunk].unsqueeze(1)                                # (C, 1, D)
        log_q_all = log_normal_diag(zc, mu.unsqueeze(0), logvar.unsqueeze(0))   # (C, N)
        log_q_agg[start:start + chunk] = torch.logsumexp(log_q_all, dim=1) - math.log(n)
    return float((log_q_own - log_q_agg).mean())


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """AU (Burda et al. 2016): #dims d with Var_x(E_q[z_d|x]) >= threshold (unbiased variance over N).

    Returns (count, per-dimension variances).
    """
    variances = mu.var(dim=0, unbiased=True)
    return int((variances >= threshold).sum()), variances
