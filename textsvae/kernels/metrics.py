"""Metrics as pure tensor functions, each with its formula (docs/protocol.md section 4).

Shapes: mu, logvar are (N, D) posterior parameters of q(z|x_n) = N(mu_n, diag(exp(logvar_n)));
everything is in nats. Functions that sample take an explicit torch.Generator.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


# -- densities and the analytic KL ------------------------------------------------------------------
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-dimension KL(N(mu, sigma^2) || N(0, 1)) = 0.5 (mu^2 + sigma^2 - log sigma^2 - 1); shape of mu."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def kl_total(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) = sum_d 0.5 (mu_d^2 + sigma_d^2 - log sigma_d^2 - 1); (N, D) -> (N,)."""
    return gaussian_kl(mu, logvar).sum(-1)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """E_x KL_d = (1/N) sum_n 0.5 (mu_nd^2 + sigma_nd^2 - log sigma_nd^2 - 1); (N, D) -> (D,)."""
    return gaussian_kl(mu, logvar).mean(0)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * (((z - mu) ** 2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)


def sample_diag_gaussian(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps; mu (N, D), eps (N, S, D) -> (N, S, D) or eps (N, D) -> (N, D)."""
    if eps.dim() == mu.dim() + 1:
        mu, logvar = mu.unsqueeze(1), logvar.unsqueeze(1)
    return mu + torch.exp(0.5 * logvar) * eps


# -- the bound, importance sampling, perplexity -------------------------------------------------------
def elbo(rec: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
    """ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) = -(Rec + KL); -ELBO bounds -log p(x) from above."""
    return -(rec + kl)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """PPL = exp(sum_n NLL_n / sum_n (len_n + 1)): end-of-sentence counted, <s> not.

    With NLL = Rec + KL this is the ELBO perplexity bound (an upper bound on the true PPL).
    """
    return math.exp(total_nll / total_tokens)


def iw_log_weights(log_lik: Callable[[torch.Tensor], torch.Tensor], mu: torch.Tensor, logvar: torch.Tensor,
                   eps: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance log-weights log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k = mu + sigma eps_k.

    log_lik maps z (N, S, D) to log p(x|z) (N, S); eps is (N, K, D) and is fed in chunks of `chunk`
    samples (all at once when None), so memory scales with the chunk, not with K.
    Returns (log_w, log p(x|z_k)), both (N, K).
    """
    k = eps.size(1)
    chunk = k if chunk is None else max(1, chunk)
    log_w, log_px = [], []
    for start in range(0, k, chunk):
        z = sample_diag_gaussian(mu, logvar, eps[:, start:start + chunk])            # (N, S, D)
        lp = log_lik(z).to(mu.dtype)                                                  # (N, S)
        log_prior = log_standard_normal(z)
        log_q = log_normal_diag(z, mu.unsqueeze(1), logvar.unsqueeze(1))
        log_w.append(lp + log_prior - log_q)
        log_px.append(lp)
    return torch.cat(log_w, dim=1), torch.cat(log_px, dim=1)


def iw_nll(log_w: torch.Tensor) -> torch.Tensor:
    """IW-NLL = -log (1/K) sum_k w_k = log K - logsumexp_k log w_k (Burda et al. 2016); (N, K) -> (N,).

    A stochastic upper bound on -log p(x): E[IW-NLL_K] decreases to -log p(x) as K grows, and
    E[IW-NLL_1] = Rec + KL (the negative ELBO).
    """
    return math.log(log_w.size(-1)) - torch.logsumexp(log_w, dim=-1)


def iw_relative_se(log_w: torch.Tensor) -> torch.Tensor:
    """Delta-method Monte-Carlo standard error of one IW-NLL estimate: std_k(w_k) / (sqrt(K) mean_k(w_k)); (N, K) -> (N,)."""
    w = torch.exp(log_w - log_w.max(dim=-1, keepdim=True).values)
    return w.std(dim=-1, unbiased=True) / (math.sqrt(log_w.size(-1)) * w.mean(dim=-1))


def standard_error(values: torch.Tensor) -> float:
    """SE of the mean over the split: sqrt(Var_n(values) / N), unbiased variance; 0 for N = 1."""
    n = values.numel()
    return float(values.double().std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0


# -- the aggregate posterior: MI and KL(q(z) || p(z)) ------------------------------------------------
def sample_posterior(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int = 1,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """z_ns ~ q(z|x_n): (N, D) for n_samples = 1 (one randn(N, D) draw), else (N, S, D)."""
    shape = mu.shape if n_samples == 1 else (mu.size(0), n_samples, mu.size(1))
    eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return sample_diag_gaussian(mu, logvar, eps)


def log_aggregate_posterior(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """log q(z) = logsumexp_m log q(z|x_m) - log M with q(z) = (1/M) sum_m q(z|x_m); z (..., D) -> (...).

    All M densities at once through the expansion (two matmuls per chunk of z rows), in float64
    because the expansion cancels:
    log q(z|x_m) = -1/2 [ z^2 . (1/s2_m) - 2 z . (mu_m/s2_m) + sum_d (mu_md^2/s2_md + log s2_md) + D log 2 pi ].
    """
    center = mu.double().mean(0)                       # (z - mu) is shift-invariant; centring cuts cancellation
    flat = z.reshape(-1, z.size(-1)).double() - center
    mu, logvar = mu.double() - center, logvar.double()
    precision = torch.exp(-logvar)                                                     # (M, D)
    const = (mu.pow(2) * precision + logvar).sum(-1) + mu.size(-1) * math.log(2 * math.pi)  # (M,)
    out = torch.empty(flat.size(0), device=z.device, dtype=torch.float64)
    for start in range(0, flat.size(0), chunk):
        zc = flat[start:start + chunk]                                                # (C, D)
        quad = zc.pow(2) @ precision.t() - 2 * (zc @ (mu * precision).t())            # (C, M)
        log_q_all = -0.5 * (quad + const)
        out[start:start + chunk] = torch.logsumexp(log_q_all, dim=1) - math.log(mu.size(0))
    return out.view(z.shape[:-1]).to(z.dtype)


def aggregate_posterior_terms(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                              chunk: int = 256, n_samples: int = 1) -> dict[str, float | None]:
    """MI and KL(q(z) || p(z)) from the same samples z_ns ~ q(z|x_n), q(z) over all N rows given.

    MI     = mean_ns [ log q(z_ns|x_n) - log q(z_ns) ]      (He et al. 2019, eq. 5; <= log N)
    agg_kl = mean_ns [ log q(z_ns) - log p(z_ns) ]           (KL of the aggregate posterior to the prior)
    so MI + agg_kl = mean_ns [ log q(z_ns|x_n) - log p(z_ns) ], a Monte-Carlo estimate of E_x KL(q(z|x) || p(z)).
    mi_se is MI's Monte-Carlo standard error given the N rows: the terms are independent across
    (n, s), so SE = sqrt(sum_n Var_s(term_ns) / S) / N with the unbiased variance over each row's
    S samples; None when S = 1.
    """
    mu, logvar = mu.double(), logvar.double()  # log q(z) is a sum of near-equal terms: keep float64
    z = sample_posterior(mu, logvar, n_samples, generator)
    zs = z if n_samples > 1 else z.unsqueeze(1)                                       # (N, S, D)
    log_q_own = log_normal_diag(zs, mu.unsqueeze(1), logvar.unsqueeze(1))             # (N, S)
    log_q_agg = log_aggregate_posterior(zs, mu, logvar, chunk)                        # (N, S)
    log_p = log_standard_normal(zs)
    terms = log_q_own - log_q_agg
    se = None if n_samples < 2 else float(terms.var(dim=1, unbiased=True).sum().div(n_samples).sqrt() / mu.size(0))
    return {"mi": float(terms.mean()), "mi_se": se, "agg_kl": float((log_q_agg - log_p).mean())}


def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                       chunk: int = 256, n_samples: int = 1) -> float:
    """I_q(x; z) (He et al. 2019, eq. 5) with the aggregate posterior over all N rows given.

    MI = mean_n [ log q(z_n|x_n) - log q(z_n) ],  z_n ~ q(z|x_n),
    log q(z_n) = logsumexp_m log q(z_n|x_m) - log N.   Bounded above by log N.
    """
    return aggregate_posterior_terms(mu, logvar, generator, chunk, n_samples)["mi"]


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """He et al.'s evaluation batches (their `create_data_batch`): rows sorted by length (stably), each
    batch at most `batch_size` rows of exactly one length."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[batches[-1][0]] == lengths[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def mutual_information_minibatch(mu: torch.Tensor, logvar: torch.Tensor, lengths: list[int], batch_size: int = 32,
                                 generator: torch.Generator | None = None, n_samples: int = 1) -> float:
    """He et al.'s per-minibatch MI: MI within each of their evaluation batches (`length_batches`),
    averaged weighted by batch size: sum_b (|b| / N) MI(b), with q(z) the mixture over the batch only.

    Biased low by the batch: a batch of |b| rows bounds its MI by log |b| (0 for a batch of one).
    """
    total = 0.0
    for batch in length_batches(lengths, batch_size):
        index = torch.tensor(batch, device=mu.device)
        total += mutual_information(mu[index], logvar[index], generator, n_samples=n_samples) * len(batch)
    return total / mu.size(0)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """AU (Burda et al. 2016): #dims d with Var_x(E_q[z_d|x]) >= threshold (unbiased variance over N).

    Returns (count, per-dimension variances).
    """
    variances = mu.var(dim=0, unbiased=True)
    return int((variances >= threshold).sum()), variances
