"""Metrics and KL schedules at their edges, against closed forms written here.

- iw_relative_se: the delta-method error std_k(w) / (sqrt(K) mean_k(w)) of docs/protocol.md section 6
  (unbiased std), which is invariant to a common factor of a row's weights, so log-weights near -1000
  and +700 give the value of w = 1, 2, 3, 4: sqrt(5/3) / (2 * 2.5).
- standard_error: sqrt(Var_n / N) with the unbiased variance; 0 for N = 1.
- He et al.'s per-minibatch MI: batches of at most 32 (their default), draws from the generator given.
- linear, logistic, cycle_ramp: their docstrings' formulas, at the boundaries of their branches.
- AU (Burda et al. 2016): variance of the posterior means >= 0.01 (unbiased); the aggregate posterior,
  MI and its standard error of docs/protocol.md section 4, by brute force in float64 over every pair
  (n, m) with the Gaussian density written out.
"""
from __future__ import annotations

import math

import pytest
import torch

from textsvae.methods import schedules
from textsvae.kernels.metrics import (active_units, aggregate_posterior_terms, iw_log_weights, iw_relative_se,
                              log_aggregate_posterior, mutual_information, mutual_information_minibatch,
                              sample_posterior, standard_error)

W = [1.0, 2.0, 3.0, 4.0]
RELATIVE_SE = math.sqrt(sum((w - 2.5) ** 2 for w in W) / 3) / (math.sqrt(4) * 2.5)


def test_iw_relative_se_is_the_delta_method_formula_at_any_scale():
    log_w = torch.log(torch.tensor([W, W, W], dtype=torch.float64)) + torch.tensor([[-1000.0], [0.0], [700.0]],
                                                                                   dtype=torch.float64)
    se = iw_relative_se(log_w)
    assert se.shape == (3,)
    assert se.tolist() == pytest.approx([RELATIVE_SE] * 3, rel=1e-12)
    pair = torch.log(torch.tensor([[1.0, 3.0], [2.0, 2.0]], dtype=torch.float64))
    assert iw_relative_se(pair).tolist() == pytest.approx([math.sqrt(2) / (math.sqrt(2) * 2), 0.0], abs=1e-12)


def test_standard_error_uses_the_unbiased_variance():
    assert standard_error(torch.tensor([1.0, 3.0])) == pytest.approx(math.sqrt(2) / math.sqrt(2))
    assert standard_error(torch.tensor([1.0, 2.0, 6.0])) == pytest.approx(math.sqrt(7) / math.sqrt(3))
    assert standard_error(torch.tensor([5.0])) == 0.0


def _posteriors(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), 0.3 * torch.randn(n, 3, generator=g,
                                                                                   dtype=torch.float64)


def test_minibatch_mi_defaults_to_he_et_als_batches_of_32_and_one_sample():
    mu, logvar = _posteriors(40)
    lengths = [7] * 40                                                   # one length: batches of 32 and 8
    mi = lambda **kw: mutual_information_minibatch(mu, logvar, lengths,  # noqa: E731
                                                   generator=torch.Generator().manual_seed(3), **kw)
    default = mi()
    assert default == mi(batch_size=32, n_samples=1)
    assert default != mi(batch_size=33) and default != mi(n_samples=2)


def test_minibatch_mi_draws_from_the_generator_it_is_given():
    mu, logvar = _posteriors(20)
    lengths = [3] * 10 + [4] * 10
    torch.manual_seed(1)
    a = mutual_information_minibatch(mu, logvar, lengths, generator=torch.Generator().manual_seed(5), n_samples=3)
    torch.manual_seed(2)
    b = mutual_information_minibatch(mu, logvar, lengths, generator=torch.Generator().manual_seed(5), n_samples=3)
    assert a == b


# -- schedules ---------------------------------------------------------------------------------------------
def test_constant_defaults_to_the_plain_elbo():
    assert schedules.constant(7) == 1.0


def test_linear_with_a_one_step_ramp():
    """beta(t) = start + (end - start) min(1, t / L); L = 1 still ramps (only L <= 0 jumps to end)."""
    assert schedules.linear(0, 0.2, 1.0, 1) == pytest.approx(0.2)
    assert schedules.linear(1, 0.2, 1.0, 1) == pytest.approx(1.0)
    assert schedules.linear(0, 0.2, 1.0, 0.5) == pytest.approx(0.2)
    assert schedules.linear(0, 0.2, 1.0, 0) == 1.0 and schedules.linear(0, 0.2, 1.0, -1) == 1.0


def test_logistic_at_the_overflow_guard():
    """1 / (1 + exp(x)) with x = -k (t - x0): computed up to x = 700, 0 beyond (exp overflows near 709.8)."""
    assert schedules.logistic(0, 1.0, 700.0) == 1.0 / (1.0 + math.exp(700.0)) > 0.0
    assert schedules.logistic(0, 1.0, 700.5) == 0.0
    assert schedules.logistic(0, 1.0, 1e6) == 0.0


def test_cycle_ramp_defaults_start_at_zero_without_lead():
    """tau = ((t mod P) + lead) / P, beta = min(1, start + tau / R); defaults start = 0, lead = 0."""
    assert [schedules.cycle_ramp(t, 4, 0.5) for t in range(5)] == pytest.approx([0, 0.5, 1, 1, 0])
    assert schedules.cycle_ramp(0, 4, 0.5, 0.1, 1) == pytest.approx(0.1 + 0.25 / 0.5)
    assert schedules.cyclical(0, 8, 2, 0.5, 0.1, 1) == pytest.approx(0.6)       # P = 8 / 2: passes lead on
    assert schedules.cyclical(1, 8, 2, 0.5) == pytest.approx(0.5)


# -- active units, the aggregate posterior and MI by brute force ---------------------------------------------------
def test_active_units_threshold_is_inclusive_and_defaults_to_001():
    mu = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.2, 0.1]])               # unbiased variances 0.5, 0.02, 0.005
    count, variances = active_units(mu)
    assert count == 2 and variances.tolist() == pytest.approx([0.5, 0.02, 0.005])
    assert active_units(mu, 0.5)[0] == 1                                 # var = threshold counts
    assert active_units(mu, 0.0)[0] == 3


def log_density(z: list[float], mu: list[float], logvar: list[float]) -> float:
    """log N(z; mu, diag(exp(logvar))), one dimension at a time."""
    return sum(-0.5 * ((zd - md) ** 2 / math.exp(lv) + lv + math.log(2 * math.pi)) for zd, md, lv in zip(z, mu, logvar))


def brute_log_q(z: list[float], mu: torch.Tensor, logvar: torch.Tensor) -> float:
    """log (1/M) sum_m q(z | x_m), with a max shift for the sum."""
    terms = [log_density(z, m, lv) for m, lv in zip(mu.tolist(), logvar.tolist())]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms) / len(terms))


def test_log_aggregate_posterior_by_brute_force():
    mu, logvar = _posteriors(7, seed=3)
    z = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2.0
    got = log_aggregate_posterior(z, mu, logvar, chunk=3)
    assert got.shape == (2, 5) and got.dtype == torch.float64
    expected = [[brute_log_q(z[i, j].tolist(), mu, logvar) for j in range(5)] for i in range(2)]
    assert got.tolist()[0] == pytest.approx(expected[0], rel=1e-12, abs=1e-12)
    assert got.tolist()[1] == pytest.approx(expected[1], rel=1e-12, abs=1e-12)
    assert log_aggregate_posterior(z.float(), mu.float(), logvar.float()).dtype == torch.float32


@pytest.mark.parametrize("samples", [1, 2, 3])
def test_mi_and_its_standard_error_by_brute_force(samples):
    """MI = mean_ns [log q(z_ns|x_n) - log q(z_ns)], agg_kl = mean_ns [log q(z_ns) - log p(z_ns)],
    mi_se = sqrt(sum_n Var_s(t_ns) / S) / N (unbiased over s; None for S = 1), with z_ns the draws
    mu_n + sigma_n eps from the generator given, eps drawn as randn(N, D) for S = 1 and (N, S, D) else."""
    mu, logvar = _posteriors(6, seed=5)
    shape = (6, 3) if samples == 1 else (6, samples, 3)
    eps = torch.randn(shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    z = (mu + torch.exp(0.5 * logvar) * eps) if samples == 1 else mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps
    z = z.view(6, samples, 3)
    terms, agg = [], []
    for n in range(6):
        row = []
        for s in range(samples):
            zs = z[n, s].tolist()
            log_q = brute_log_q(zs, mu, logvar)
            row.append(log_density(zs, mu[n].tolist(), logvar[n].tolist()) - log_q)
            agg.append(log_q - sum(-0.5 * (x * x + math.log(2 * math.pi)) for x in zs))
        terms.append(row)
    mi = sum(sum(r) for r in terms) / (6 * samples)
    out = aggregate_posterior_terms(mu, logvar, torch.Generator().manual_seed(8), chunk=4, n_samples=samples)
    assert out["mi"] == pytest.approx(mi, rel=1e-10, abs=1e-12)
    assert out["agg_kl"] == pytest.approx(sum(agg) / len(agg), rel=1e-10, abs=1e-12)
    if samples == 1:
        assert out["mi_se"] is None
        assert aggregate_posterior_terms(mu, logvar, torch.Generator().manual_seed(8)) == out    # S = 1 by default
        assert mutual_information(mu, logvar, torch.Generator().manual_seed(8)) == out["mi"]
    else:
        var = [sum((t - sum(r) / samples) ** 2 for t in r) / (samples - 1) for r in terms]
        assert out["mi_se"] == pytest.approx(math.sqrt(sum(var) / samples) / 6, rel=1e-10)


def test_mi_draws_from_the_generator_it_is_given():
    mu, logvar = _posteriors(8)
    torch.manual_seed(1)
    a = mutual_information(mu, logvar, torch.Generator().manual_seed(2), n_samples=2)
    torch.manual_seed(3)
    assert mutual_information(mu, logvar, torch.Generator().manual_seed(2), n_samples=2) == a


def test_posterior_samples_are_the_reparameterisation_in_the_posteriors_dtype():
    mu, logvar = _posteriors(4)
    one = sample_posterior(mu, logvar, generator=torch.Generator().manual_seed(6))
    eps = torch.randn(4, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert one.shape == (4, 3) and torch.equal(one, mu + torch.exp(0.5 * logvar) * eps)


def test_importance_log_weights_come_back_in_the_posteriors_dtype():
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x); a float32 likelihood is promoted to mu's float64."""
    mu, logvar = _posteriors(3)
    eps = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    log_w, log_px = iw_log_weights(lambda z: -z.pow(2).sum(-1).float(), mu, logvar, eps, chunk=3)
    assert log_w.dtype == log_px.dtype == torch.float64 and log_w.shape == (3, 4)
    z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps
    torch.testing.assert_close(log_px, -z.pow(2).sum(-1).float().double())


def test_log_aggregate_posterior_stays_exact_far_from_the_origin():
    """Posteriors a million units from the origin in two dimensions, with tiny variances: the expansion of
    (z - mu)^2 / s2 cancels catastrophically unless z and mu are first centred per dimension (the
    docstring's remedy); the brute force computes (z - mu) directly."""
    mu, logvar = _posteriors(5, seed=6)
    mu = mu * 0.01 + torch.tensor([1e6, -1e6, 0.0], dtype=torch.float64)
    logvar = logvar - 6.0
    z = mu[:2] + 0.003 * torch.randn(2, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    got = log_aggregate_posterior(z, mu, logvar)
    expected = [brute_log_q(z[i].tolist(), mu, logvar) for i in range(2)]
    assert got.tolist() == pytest.approx(expected, rel=1e-9)
