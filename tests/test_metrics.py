"""Metrics against closed-form answers (docs/protocol.md section 4); the maths is in each docstring."""
from __future__ import annotations

import math

import pytest
import torch

from textsvae.kernels.metrics import (active_units, aggregate_posterior_terms, elbo, gaussian_kl, iw_log_weights, iw_nll,
                              kl_per_dimension, kl_total, length_batches, log_aggregate_posterior, log_normal_diag,
                              mutual_information, mutual_information_minibatch, perplexity, standard_error)



@pytest.fixture(autouse=True)
def float64():
    """Closed-form comparisons in double precision; restored afterwards for other test modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class LinearGaussian:
    """p(z) = N(0, I_D), p(x|z) = N(W z + b, s2 I_d): log p(x) = log N(x; b, W W^T + s2 I) exactly.

    The exact posterior is N(m, S) with S = (I + W^T W / s2)^-1, m = S W^T (x - b) / s2.
    """

    def __init__(self, d: int = 3, latent: int = 2, s2: float = 0.5, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(d, latent, generator=g)
        self.b = torch.randn(d, generator=g)
        self.s2, self.d, self.D = s2, d, latent
        self.S = torch.linalg.inv(torch.eye(latent) + self.W.T @ self.W / s2)

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.D, generator=g)
        return z @ self.W.T + self.b + math.sqrt(self.s2) * torch.randn(n, self.d, generator=g)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + self.s2 * torch.eye(self.d)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x (N, d), z (N, S, D) -> (N, S)."""
        mean = z @ self.W.T + self.b
        return -0.5 * (((x.unsqueeze(1) - mean) ** 2) / self.s2 + math.log(2 * math.pi * self.s2)).sum(-1)

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b) @ self.W @ self.S.T / self.s2

    def approx_q(self, x: torch.Tensor, shift: float = 0.3, scale: float = 1.5):
        """A deliberately imperfect diagonal q: shifted mean, inflated diagonal variance."""
        mu = self.posterior_mean(x) + shift
        logvar = torch.log(torch.diagonal(self.S) * scale).expand_as(mu).clone()
        return mu, logvar

    def kl_to_posterior(self, x, mu, logvar) -> torch.Tensor:
        """KL(N(mu, diag v) || N(m, S)) = 0.5 [tr(S^-1 V) + (m-mu)^T S^-1 (m-mu) - D + log|S| - log|V|]."""
        m = self.posterior_mean(x)
        Sinv = torch.linalg.inv(self.S)
        v = logvar.exp()
        diff = m - mu
        quad = torch.einsum("nd,de,ne->n", diff, Sinv, diff)
        return 0.5 * ((torch.diagonal(Sinv) * v).sum(-1) + quad - self.D + torch.logdet(self.S) - logvar.sum(-1))


def _iw(model: LinearGaussian, x, mu, logvar, k: int, seed: int, chunk: int | None = None):
    eps = torch.randn(x.size(0), k, model.D, generator=torch.Generator().manual_seed(seed))
    return iw_log_weights(lambda z: model.log_px_given_z(x, z), mu, logvar, eps, chunk)


def test_iw_nll_is_exact_with_the_true_posterior():
    """With q(z|x) = p(z|x) every weight equals p(x, z) / p(z|x) = p(x), so IW-NLL = -log p(x) for any K.

    (Here the posterior covariance is not diagonal, so use a 1-D latent, where it is.)
    """
    model = LinearGaussian(d=3, latent=1)
    x = model.sample_x(10)
    mu, logvar = model.posterior_mean(x), torch.log(torch.diagonal(model.S)).expand(10, 1).clone()
    for k in (1, 5):
        log_w, _ = _iw(model, x, mu, logvar, k, seed=k)
        torch.testing.assert_close(iw_nll(log_w), -model.log_px(x), rtol=0, atol=1e-10)


def test_iw_nll_approaches_log_px_from_above_as_k_grows():
    """E[IW-NLL_K] is non-increasing in K and tends to -log p(x) (Burda et al. 2016, thm 1).

    Averaged over 200 sentences x 10 repeats, the mean gap to the exact -log p(x) shrinks with K,
    is under 0.01 nats at K = 2000 and never below 0 by more than 4 Monte-Carlo standard errors.
    """
    model = LinearGaussian()
    x = model.sample_x(200)
    exact = -model.log_px(x)
    mu, logvar = model.approx_q(x)
    gaps = []
    for k in (1, 10, 100, 2000):
        runs = torch.stack([iw_nll(_iw(model, x, mu, logvar, k, seed=100 * k + r)[0]) - exact for r in range(10)])
        gap = runs.mean()
        se = runs.std() / math.sqrt(runs.numel())
        assert gap > -4 * se - 1e-12, (k, gap, se)
        gaps.append(float(gap))
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 0.01
    assert gaps[0] > 10 * gaps[-1]


def test_elbo_sits_above_the_nll_by_the_posterior_gap():
    """-ELBO = Rec + KL = -log p(x) + KL(q(z|x) || p(z|x)) >= -log p(x).

    Rec = -E_q log p(x|z) by 4000 samples, KL(q || N(0, I)) analytic; the posterior gap is analytic.
    """
    model = LinearGaussian()
    x = model.sample_x(50)
    mu, logvar = model.approx_q(x)
    _, log_px = _iw(model, x, mu, logvar, 4000, seed=7)
    rec = -log_px.mean(1)
    neg_elbo = -elbo(rec, kl_total(mu, logvar))
    assert bool((neg_elbo > -model.log_px(x)).all())
    expected = -model.log_px(x) + model.kl_to_posterior(x, mu, logvar)
    se = log_px.std(1) / math.sqrt(4000)
    assert bool(((neg_elbo - expected).abs() < 5 * se).all())


def test_iw_nll_of_equal_weights_and_chunking():
    """log K - logsumexp(c, ..., c) = -c for any K; feeding the samples in chunks changes nothing."""
    for k in (1, 3, 500):
        torch.testing.assert_close(iw_nll(torch.full((2, k), -7.25)), torch.full((2,), 7.25))
    model = LinearGaussian()
    x = model.sample_x(5)
    mu, logvar = model.approx_q(x)
    whole = _iw(model, x, mu, logvar, 23, seed=3)
    for chunk in (1, 4, 23, 100):
        parts = _iw(model, x, mu, logvar, 23, seed=3, chunk=chunk)
        torch.testing.assert_close(parts[0], whole[0], rtol=0, atol=0)
        torch.testing.assert_close(parts[1], whole[1], rtol=0, atol=0)


def test_kl_closed_form():
    """KL(N(0, I) || N(0, I)) = 0; per dimension 0.5 (mu^2 + sigma^2 - log sigma^2 - 1), as torch.distributions."""
    assert float(kl_total(torch.zeros(4, 8), torch.zeros(4, 8)).abs().max()) == 0.0
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(gaussian_kl(mu, logvar), torch.distributions.kl_divergence(q, p))
    torch.testing.assert_close(kl_per_dimension(mu, logvar), gaussian_kl(mu, logvar).mean(0))
    torch.testing.assert_close(kl_total(mu, logvar), gaussian_kl(mu, logvar).sum(1))
    # mu = 1, sigma = 1 in each of 2 dims: 2 * 0.5 * 1 = 1 nat
    assert float(kl_total(torch.ones(1, 2), torch.zeros(1, 2))) == pytest.approx(1.0)


def test_perplexity_and_standard_error():
    """PPL = exp(sum NLL / sum (len + 1)); SE = sqrt(unbiased Var / N)."""
    assert perplexity(2 * 10 * math.log(5.0), 20) == pytest.approx(5.0)
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert standard_error(values) == pytest.approx(math.sqrt((5.0 / 3.0) / 4))
    assert standard_error(torch.tensor([3.0])) == 0.0


def test_mi_is_zero_when_the_encoder_ignores_x():
    """q(z|x_n) = q for all n: log q(z) = logsumexp_m log q(z) - log N = log q(z|x_n), so every term is 0.

    The aggregate KL is then KL(q || p) up to sampling: mean_n [log q(z_n) - log p(z_n)].
    """
    mu = torch.full((50, 4), 0.3)
    logvar = torch.full((50, 4), -0.2)
    g = torch.Generator().manual_seed(0)
    terms = aggregate_posterior_terms(mu, logvar, g, n_samples=400)
    assert abs(terms["mi"]) < 1e-12
    assert terms["agg_kl"] == pytest.approx(float(kl_total(mu[:1], logvar[:1])), abs=0.02)


def test_mi_matches_a_hand_computation_for_two_points():
    """mu = (0, 1), sigma = 1, z = (0, 1):  for each n, log q(z_n|x_n) - log q(z_n) =
    -0.5 log 2pi - [log((exp(0) + exp(-0.5)) / 2) - 0.5 log 2pi] = -log((1 + e^-0.5) / 2)."""
    mu = torch.tensor([[0.0], [1.0]])
    logvar = torch.zeros(2, 1)
    z = torch.tensor([[0.0], [1.0]])
    own = log_normal_diag(z, mu, logvar)
    terms = own - log_aggregate_posterior(z, mu, logvar)
    expected = -math.log((1 + math.exp(-0.5)) / 2)
    torch.testing.assert_close(terms, torch.full((2,), expected))


def test_mi_of_a_gaussian_mixture_matches_quadrature():
    """x uniform on {1, 2}, q(z|x) = N(-+a, 1):  I(x; z) = H(z) - H(z|x), with
    H(z|x) = 0.5 log(2 pi e) and H(z) = -int q(z) log q(z) dz by the trapezoid rule on a fine grid."""
    a = 0.8
    grid = torch.linspace(-15, 15, 300001)
    qz = 0.5 * (torch.exp(-0.5 * (grid + a) ** 2) + torch.exp(-0.5 * (grid - a) ** 2)) / math.sqrt(2 * math.pi)
    h_z = float(torch.trapezoid(-qz * torch.log(qz), grid))
    exact = h_z - 0.5 * math.log(2 * math.pi * math.e)
    mu = torch.tensor([[-a], [a]])
    logvar = torch.zeros(2, 1)
    est = mutual_information(mu, logvar, torch.Generator().manual_seed(0), n_samples=200_000)
    # each term is bounded by log 2, so the estimator's SE is below log 2 / sqrt(400000) ~ 0.0011
    assert est == pytest.approx(exact, abs=0.005)


def test_mi_is_at_most_log_n_and_at_most_the_mean_kl():
    """Each term log q(z_n|x_n) - log q(z_n) <= log N since the sum over m includes m = n, so MI <= log N
    for every draw; well-separated posteriors reach log N. In expectation MI = E KL - KL(q(z)||p(z)) <= E KL,
    and MI + agg_kl is a sampling estimate of the mean KL."""
    g = torch.Generator().manual_seed(0)
    for n in (2, 8, 40):
        mu, logvar = 3 * torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g) - 1
        terms = aggregate_posterior_terms(mu, logvar, g, n_samples=2000)
        assert terms["mi"] <= math.log(n) + 1e-12
        mean_kl = float(kl_total(mu, logvar).mean())
        assert terms["mi"] <= mean_kl
        assert terms["mi"] + terms["agg_kl"] == pytest.approx(mean_kl, rel=0.02)
    far = torch.arange(8.0).unsqueeze(1) * 100
    assert mutual_information(far, torch.full((8, 1), -4.0), g) == pytest.approx(math.log(8), abs=1e-9)


def test_minibatch_mi_is_bounded_by_the_batch():
    """He et al.'s per-minibatch MI uses q(z) over b rows only, so it is at most log b even when the split's
    posteriors are all distinct (where the whole-split MI reaches log N)."""
    far = torch.arange(64.0).unsqueeze(1) * 100
    logvar = torch.full((64, 1), -4.0)
    g = torch.Generator().manual_seed(0)
    # tolerance: q(z) is computed by a float64 matmul expansion, exact to ~1e-8 at |mu| ~ 1e3
    assert mutual_information(far, logvar, g) == pytest.approx(math.log(64), abs=1e-7)
    lengths = [5] * 64                                            # one length: batches of 16 in order
    assert mutual_information_minibatch(far, logvar, lengths, 16, g) == pytest.approx(math.log(16), abs=1e-7)
    distinct = list(range(64))                                    # every length once: 64 batches of one row
    assert mutual_information_minibatch(far, logvar, distinct, 16, g) == pytest.approx(0.0, abs=1e-12)


def create_data_batch_indices(lengths: list[int], batch_size: int) -> list[list[int]]:
    """He et al.'s `create_data_batch`, transcribed: sort by length, cut where the length changes,
    then cut each run into pieces of at most batch_size."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    change = [i for i in range(1, len(order)) if lengths[order[i]] != lengths[order[i - 1]]] + [len(order)]
    batches, current = [], 0
    for end in change:
        while current < end:
            stop = min(current + batch_size, end)
            batches.append(order[current:stop])
            current = stop
    return batches


def test_length_batches_are_he_et_al_evaluation_batches():
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, 12, (300,), generator=g).tolist()
    batches = length_batches(lengths, 32)
    assert batches == create_data_batch_indices(lengths, 32)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert all(len(b) <= 32 and len({lengths[i] for i in b}) == 1 for b in batches)


def test_mi_standard_error_matches_the_spread_over_seeds():
    """The SE one call reports (S = 16 samples per row) against the SD of 300 such estimates under
    different seeds: the same quantity computed two ways."""
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(40, 3, generator=g), torch.randn(40, 3, generator=g) * 0.3 - 1.0
    draws = [aggregate_posterior_terms(mu, logvar, torch.Generator().manual_seed(s), n_samples=16)
             for s in range(300)]
    spread = torch.tensor([d["mi"] for d in draws]).std().item()
    reported = torch.tensor([d["mi_se"] for d in draws]).mean().item()
    assert reported == pytest.approx(spread, rel=0.15)
    assert aggregate_posterior_terms(mu, logvar, g, n_samples=1)["mi_se"] is None


def test_active_units_use_the_unbiased_variance():
    """Dim 0: +-1 -> Var = 4 / 3. Dim 1: +-a with a^2 = 0.008 -> unbiased 4a^2/3 = 0.01067 >= 0.01 although
    the biased a^2 = 0.008 is not. Dim 2: constant -> 0. Dim 3: +-0.05 -> 0.01/3 < 0.01."""
    a = math.sqrt(0.008)
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0])
    mu = torch.stack([signs, a * signs, torch.full((4,), 0.7), 0.05 * signs], dim=1)
    count, variances = active_units(mu, 0.01)
    torch.testing.assert_close(variances, torch.tensor([4 / 3, 4 * 0.008 / 3, 0.0, 0.01 / 3]))
    assert count == 2
    assert active_units(mu, 0.003)[0] == 3
    assert active_units(mu, 2.0)[0] == 0
