"""Methods part 2 (issue 35), each against an oracle written here, independent of the code under test:

- delta-VAE: the variance bounds solve log x - x + 2 delta + 1 = 0; each dimension's KL, computed here
  from the formula, is >= delta for any encoder output (and equals delta + max(0, m) / 2 + 5e-7).
- DU-VAE: the BN scale's mean square is gamma^2 for any learned weights and the layer is the BN formula;
  the variance dropout leaves sigma^2 >= delta^2 = 1 / (2 pi e), puts a share p at the floor and keeps
  E[sigma^2]; nothing is dropped at evaluation.
- DG-VAE: the Monte-Carlo aggregate KL equals a loop over draws, components and dimensions in plain
  Python, both modes; with many draws it matches the KL of each dimension's mixture by quadrature.
- MDR: on a toy problem that collapses without it, the rate averages the target once the multiplier
  settles, the multiplier falls to 0 when the constraint is slack, and each step is torch's RMSprop ascent.
- WAE-MMD: the U-statistic equals a double loop in plain Python.
- Bag of words: the head's loss equals a loop over the targets with a hand-made log-softmax; the loss adds it
  to the ELBO terms at weight 1 with the reconstruction's z.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from textsvae.core.config import ModelConfig, apply_overrides, preset_config
from textsvae.data.batching import make_batch
from textsvae.methods import MethodError, build_method
from textsvae.methods.bow import bag_of_words_nll
from textsvae.methods.delta_vae import variance_bounds
from textsvae.methods.dg_vae import aggregate_kl
from textsvae.methods.du_vae import RMSScaleBatchNorm, floored_logvar
from textsvae.methods.wae_mmd import mmd_imq
from textsvae.model.models import TextVAE
from textsvae.training.train import Trainer


def kl_by_hand(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(0, 1)) per dimension, from the textbook formula."""
    return 0.5 * (mu ** 2 + torch.exp(logvar) - logvar - 1)


def tiny_model(vocab: int = 30, latent: int = 4) -> TextVAE:
    torch.manual_seed(0)
    return TextVAE(vocab, ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=latent))


def tiny_trainer(tmp_path: Path, corpus: Path, method: str, params: dict | None = None) -> Trainer:
    config = apply_overrides(preset_config("tiny"), {"data": str(corpus), "progress": False, "seed": 0})
    return Trainer(config, tmp_path / "run", method=build_method(method, params or {}))


BATCH = [[4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14, 15], [5, 5, 9]]


# -- parameters (their ranges, edge by edge, are rows of tests/test_method_params.py) ---------------------------
def test_dg_vae_modes_are_the_documented_two():
    with pytest.raises(MethodError) as info:
        build_method("dg-vae", {"mode": "wide"})
    assert str(info.value) == "method 'dg-vae': mode must be one of dim, joint, got 'wide'"


def test_defaults_are_the_papers():
    assert build_method("delta-vae").params.delta == 0.15                        # DG-VAEs' runs
    du = build_method("du-vae").params
    assert (du.gamma, du.p_drop, du.delta_rate) == (0.5, 0.2, 1.0)               # DU-VAE's README
    assert build_method("dg-vae").params.samples == 32
    mdr = build_method("mdr").params
    assert (mdr.target, mdr.lr, mdr.init) == (5.0, 1e-3, 1.01)                   # deep-generative-lm
    wae = build_method("wae-mmd").params
    assert (wae.mmd_weight, wae.kl_weight, wae.samples) == (10.0, 0.0, 1)        # Tolstikhin et al., MNIST
    bow = build_method("bow").params
    assert (bow.weight, bow.hidden) == (1.0, 400)                               # Zhao et al.


def test_hook_owners_decide_which_combinations_exist():
    assert build_method("anneal+bow+mdr").owners == {"beta": "anneal", "extra_loss": "bow", "kl_term": "mdr",
                                                     "train_step": "mdr"}
    with pytest.raises(MethodError, match="methods 'mdr' and 'aggressive' both define 'train_step'"):
        build_method("mdr+aggressive")
    with pytest.raises(MethodError, match="methods 'dg-vae' and 'wae-mmd' both define 'kl_term'"):
        build_method("dg-vae+wae-mmd")


# -- delta-VAE -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("delta", [0.0, 0.01, 0.15, 1.0, 5.0])
def test_delta_vae_variance_bounds_are_the_roots(delta):
    low, high = variance_bounds(delta)
    assert low <= 1.0 <= high
    for x in (low, high):
        assert math.log(x) - x + 2 * delta + 1 == pytest.approx(0.0, abs=1e-9)
    if delta > 0:                                                   # the two distinct roots, on either side of 1
        assert low < 1.0 < high


@pytest.mark.parametrize("delta", [0.0, 0.15, 2.0])
def test_delta_vae_each_dimension_keeps_delta_whatever_the_encoder_gives(delta):
    """KL_d = (mu^2 + sigma^2 - log sigma^2 - 1) / 2 with mu^2 = 2 delta + 1 + log sigma^2 - sigma^2 + max(0, m)
    + 1e-6 is delta + max(0, m) / 2 + 5e-7, for any raw (m, v), extremes included."""
    m = build_method("delta-vae", {"delta": delta})
    g = torch.Generator().manual_seed(0)
    raw_mu = torch.cat([torch.randn(500, 4, generator=g, dtype=torch.float64) * 10,
                        torch.tensor([[-1e4, 1e4, 0.0, -0.0], [50.0, -50.0, 1e-8, -1e-8]], dtype=torch.float64)])
    raw_lv = torch.cat([torch.randn(500, 4, generator=g, dtype=torch.float64) * 10,
                        torch.tensor([[1e4, -1e4, 0.0, 30.0], [-30.0, 5.0, -5.0, 1e-8]], dtype=torch.float64)])
    mu, logvar = m.constrain(raw_mu, raw_lv)
    kl = kl_by_hand(mu, logvar)
    assert bool(torch.all(kl >= delta))
    torch.testing.assert_close(kl, delta + raw_mu.clamp(min=0) / 2 + 5e-7, rtol=1e-9, atol=1e-9)
    low, high = variance_bounds(delta)
    assert bool(torch.all(logvar.exp() >= low * (1 - 1e-9))) and bool(torch.all(logvar.exp() <= high * (1 + 1e-9)))


def test_delta_vae_posterior_of_a_model_keeps_delta_in_float32():
    model = tiny_model().eval()
    batch = make_batch(BATCH, list(range(4)))
    mu, logvar = build_method("delta-vae").posterior(model, batch)
    assert bool(torch.all(kl_by_hand(mu.double(), logvar.double()) >= 0.15 - 1e-6))   # float32 rounding only


# -- DU-VAE ----------------------------------------------------------------------------------------------------
def test_du_vae_bn_scale_keeps_its_root_mean_square_and_the_layer_is_batch_norm():
    """s = gamma w / rms(w): mean_d s_d^2 = gamma^2 for any w; out = s (x - mean) / sqrt(var + eps) + shift."""
    bn = RMSScaleBatchNorm(4, gamma=0.5, eps=1e-5).train()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([3.0, -0.1, 1.0, 0.5]))            # any learned values
        bn.shift.copy_(torch.tensor([0.2, 0.0, -0.3, 0.1]))
    s = bn.scale().detach()
    assert float(s.pow(2).mean()) == pytest.approx(0.25)
    torch.testing.assert_close(s, 0.5 * torch.tensor([3.0, -0.1, 1.0, 0.5]) / math.sqrt((9 + 0.01 + 1 + 0.25) / 4))
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1)) * 3 + 7
    out = bn(x).detach()
    mean, var = x.mean(0), x.var(0, unbiased=False)
    torch.testing.assert_close(out, s * (x - mean) / torch.sqrt(var + 1e-5) + bn.shift.detach())
    # sum_d mean_b mu_bd^2 = sum_d s_d^2 var_d / (var_d + eps) + shift_d^2 >= D gamma^2 (var_d >> eps)
    assert float(out.pow(2).mean(0).sum()) >= 4 * 0.25


def test_du_vae_variance_dropout_floor_share_and_mean():
    """sigma^2 = Dropout_p(e^v) + 1/(2 pi e): never under the floor, a share p of it at the floor, the
    excess scaled by 1/(1 - p) where kept (so its mean is e^v's); at evaluation e^v + floor exactly."""
    floor = 1 / (2 * math.pi * math.e)                                  # delta_rate 1: 0.05855
    assert floor == pytest.approx(0.058550, abs=1e-6)
    torch.manual_seed(0)
    raw = torch.randn(200, 500, dtype=torch.float64)
    var = floored_logvar(raw, 1.0, 0.2, training=True).exp()
    assert bool(torch.all(var >= floor * (1 - 1e-12)))
    at_floor = (var - floor).abs() < 1e-12
    share = float(at_floor.double().mean())
    assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / raw.numel())     # binomial, 4 standard errors
    kept = ~at_floor
    torch.testing.assert_close((var - floor)[kept], raw.exp()[kept] / 0.8)
    torch.testing.assert_close(floored_logvar(raw, 1.0, 0.2, training=False).exp(), raw.exp() + floor)
    torch.testing.assert_close(floored_logvar(raw, 2.0, 0.0, training=True).exp(), raw.exp() + 2 * floor)


def test_du_vae_installs_a_trained_bn_layer_and_drops_only_in_training(tiny_corpus, tmp_path):
    trainer = tiny_trainer(tmp_path, tiny_corpus, "du-vae")
    bn = trainer.model.encoder.mu_norm
    assert isinstance(bn, RMSScaleBatchNorm)
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(bn.weight) in optimised and id(bn.shift) in optimised
    method, model = trainer.method, trainer.model
    batch = next(trainer.train_batches(0))
    torch.manual_seed(3)
    model.train()
    _, lv_train = method.posterior(model, batch)
    model.eval()
    _, lv_eval = method.posterior(model, batch)
    _, raw = model.encode(batch)
    floor = 1 / (2 * math.pi * math.e)
    torch.testing.assert_close(lv_eval, torch.log(raw.exp() + floor))
    assert bool(((lv_train.exp() - floor).abs() < 1e-6).any())           # some variances sit at the floor


# -- DG-VAE ----------------------------------------------------------------------------------------------------
def _aggregate_kl_by_loops(mu, logvar, eps, mode):
    """The DG KL with plain Python floats: draws z_bm = mu_b + sigma_b eps_bm, mixture over the B components."""
    rows, draws, dims = eps.shape
    mu, sd = mu.tolist(), [[math.exp(0.5 * v) for v in r] for r in logvar.tolist()]

    def normal_pdf(x, m, s):
        return math.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    terms = []
    for b in range(rows):
        for m in range(draws):
            z = [mu[b][d] + sd[b][d] * float(eps[b, m, d]) for d in range(dims)]
            if mode == "joint":
                q = sum(math.prod(normal_pdf(z[d], mu[k][d], sd[k][d]) for d in range(dims)) for k in range(rows))
                p = math.prod(normal_pdf(z[d], 0.0, 1.0) for d in range(dims))
                terms.append(math.log(q / rows) - math.log(p))
            else:
                terms.append(sum(math.log(sum(normal_pdf(z[d], mu[k][d], sd[k][d]) for k in range(rows)) / rows)
                                 - math.log(normal_pdf(z[d], 0.0, 1.0)) for d in range(dims)))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("mode", ["dim", "joint"])
def test_dg_vae_aggregate_kl_is_the_brute_force_one(mode):
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 2, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 2, generator=g, dtype=torch.float64) * 0.5
    eps = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    assert float(aggregate_kl(mu, logvar, eps, mode)) == pytest.approx(_aggregate_kl_by_loops(mu, logvar, eps, mode),
                                                                       rel=1e-10)


def test_dg_vae_dim_mode_converges_to_the_mixture_kl_by_quadrature():
    """Each dimension's aggregate q_d is a mixture of B normals: its KL to N(0, 1) by the trapezoid rule on a
    fine grid; the Monte-Carlo sum over dimensions with 20,000 draws per sentence is within 4 standard errors."""
    mu = torch.tensor([[1.5, -0.5], [-1.0, 0.0], [0.3, 2.0]], dtype=torch.float64)
    logvar = torch.tensor([[-1.0, 0.2], [-0.5, -2.0], [0.3, -1.0]], dtype=torch.float64)
    grid = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    exact = 0.0
    for d in range(2):
        comp = torch.exp(-0.5 * (grid[:, None] - mu[:, d]) ** 2 / logvar[:, d].exp()) / torch.sqrt(
            2 * math.pi * logvar[:, d].exp())
        q = comp.mean(1)
        p = torch.exp(-0.5 * grid ** 2) / math.sqrt(2 * math.pi)
        exact += float(torch.trapezoid(q * (q.log() - p.log()), grid))
    eps = torch.randn(3, 20_000, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    estimate = float(aggregate_kl(mu, logvar, eps, "dim"))
    se = 0.02                                                       # sd of the summed log-ratio (~2.5) / sqrt(60,000), rounded up
    assert abs(estimate - exact) < 4 * se, (estimate, exact)
    posterior_is_prior = aggregate_kl(torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64),
                                      eps[:, :10, :].repeat(2, 1, 2)[:4, :, :3], "dim")
    assert float(posterior_is_prior) == pytest.approx(0.0, abs=1e-12)   # q_B = p: log q_B - log p = 0 at every draw


def test_dg_vae_kl_term_is_one_value_for_the_whole_batch():
    m = build_method("dg-vae", {"samples": 4})
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3) * 0.3
    torch.manual_seed(0)
    term = m.kl_term(mu, logvar)
    torch.manual_seed(0)
    eps = torch.randn(5, 4, 3)
    assert term.shape == (5,) and torch.allclose(term, aggregate_kl(mu, logvar, eps, "dim").expand(5))


# -- MDR -------------------------------------------------------------------------------------------------------
class ToyLatentModel(torch.nn.Module):
    """Free (mu, logvar) per point and Rec = a ||z||^2: the ELBO's optimum sits at a small rate (collapse)."""

    is_lm = False

    def __init__(self, n: int = 64, dim: int = 4, a: float = 0.5):
        super().__init__()
        self.mu = torch.nn.Parameter(0.1 * torch.randn(n, dim, generator=torch.Generator().manual_seed(0)))
        self.logvar = torch.nn.Parameter(torch.zeros(n, dim))
        self.a = a

    def encode(self, batch):
        return self.mu[batch.index], self.logvar[batch.index]

    sample = staticmethod(TextVAE.sample)

    def log_px_given_z(self, batch, z, inputs=None):
        return -self.a * z.pow(2).sum(-1)


def train_toy(method: str, params: dict, steps: int = 1500) -> tuple[list[float], object]:
    """Full-batch SGD (lr 1) on the toy through the method's own train_step; the batch rate after each step."""
    torch.manual_seed(0)
    m = build_method(method, params)
    model = ToyLatentModel()
    trainer = SimpleNamespace(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
                              clip_and_step=lambda optimizer, params=None: optimizer.step())
    batch = SimpleNamespace(index=torch.arange(64))
    rates = [float(m.train_step(trainer, batch, 1.0).kl.detach().mean()) for _ in range(steps)]
    return rates, m


@pytest.mark.parametrize("target", [3.0, 6.0])
def test_mdr_holds_the_rate_at_its_target_on_a_collapsing_toy(target):
    """Without MDR the toy's ELBO optimum has rate 4 * 0.5 (1/2 - log(1/2) - 1) = 0.386 nats; with MDR the rate,
    averaged over the last 200 steps (the multiplier chatters by its RMSprop step), is the target within 3%."""
    vae_rates, _ = train_toy("vae", {})
    assert sum(vae_rates[-200:]) / 200 == pytest.approx(4 * 0.5 * (0.5 - math.log(0.5) - 1), abs=0.01)
    rates, m = train_toy("mdr", {"target": target, "lr": 0.01})
    settled = sum(rates[-200:]) / 200
    assert 0.97 * target <= settled <= 1.1 * target, settled
    assert abs(float(m.multiplier)) > 0.5                                # the constraint is active


def test_mdr_multiplier_falls_to_zero_when_the_constraint_is_slack():
    """Target 0.1 below the collapsed rate 0.386: the constraint never binds, |lambda| -> 0 (within its step)."""
    rates, m = train_toy("mdr", {"target": 0.1, "lr": 0.01})
    assert abs(float(m.multiplier)) < 0.05
    assert sum(rates[-200:]) / 200 == pytest.approx(0.386, abs=0.02)


def test_mdr_multiplier_step_is_torch_rmsprop_ascent():
    """d/dlambda of |lambda| (r - R) is sign(lambda) (r - R); torch's RMSprop with maximize=True on that gradient."""
    m = build_method("mdr", {"target": 2.0, "lr": 0.05, "init": 0.12})
    reference = torch.nn.Parameter(torch.tensor(0.12))
    rmsprop = torch.optim.RMSprop([reference], lr=0.05, maximize=True)
    signs = {float(m.multiplier) > 0}
    for rate in [4.0, 4.0, 0.5, 1.0, 3.0, 2.5, 0.1, 4.0, 0.3, 0.3]:
        reference.grad = torch.sign(reference.detach()) * (2.0 - rate)
        rmsprop.step()
        m.ascend(torch.tensor(rate))
        assert float(m.multiplier) == pytest.approx(float(reference.detach()), abs=1e-6)
        signs.add(float(m.multiplier) > 0)
    assert signs == {True, False}                                                     # lambda crossed 0


def test_mdr_kl_term_is_the_lagrangian():
    m = build_method("mdr", {"target": 5.0, "init": 0.5})
    mu, logvar = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.zeros(2, 2)         # KL = 2.5 and 0.5
    assert m.kl_term(mu, logvar).mean().item() == pytest.approx(1.5 + 0.5 * (5.0 - 1.5))
    m.multiplier = torch.tensor(-0.5)                                               # |lambda| weighs it
    assert m.kl_term(mu, logvar).mean().item() == pytest.approx(1.5 + 0.5 * (5.0 - 1.5))


def test_mdr_multiplier_is_checkpointed_and_logged(tiny_corpus, tmp_path):
    from click.testing import CliRunner

    from textsvae.cli import cli
    from textsvae.core.io import read_jsonl

    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(tiny_corpus), "--method", "mdr", "-p", "lr=0.1",
                                      "--epochs", "1", "--threads", "1", "--set", "progress=false", "-o", str(run)])
    assert result.exit_code == 0, result.output
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)["method"]
    assert state["multiplier"] != pytest.approx(1.01) and state["square_avg"] > 0    # training moved them
    assert read_jsonl(run / "log.jsonl")[-1]["method_multiplier"] == state["multiplier"]
    fresh = build_method("mdr", {"lr": 0.1})
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state


# -- WAE-MMD ---------------------------------------------------------------------------------------------------
def _mmd_by_loops(x, y):
    """Unbiased MMD^2 with k(a, b) = C / (C + |a - b|^2), C = 2 D, summed pair by pair."""
    n, dim = len(x), len(x[0])
    c = 2.0 * dim

    def k(a, b):
        return c / (c + sum((ai - bi) ** 2 for ai, bi in zip(a, b)))

    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    across = sum(k(y[i], x[j]) for i in range(n) for j in range(n)) / (n * n)
    return within - 2.0 * across


def test_mmd_is_the_double_loop_u_statistic():
    rng = random.Random(0)
    x = [[rng.gauss(0.5, 1.0) for _ in range(3)] for _ in range(6)]
    y = [[rng.gauss(0.0, 1.0) for _ in range(3)] for _ in range(6)]
    got = float(mmd_imq(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)))
    assert got == pytest.approx(_mmd_by_loops(x, y), rel=1e-10)
    assert float(mmd_imq(torch.ones(1, 3), torch.zeros(1, 3))) == 0.0               # no pair, no estimate


def test_mmd_separates_distributions_and_not_equal_ones():
    g = torch.Generator().manual_seed(0)
    p1, p2 = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g)
    assert abs(float(mmd_imq(p1, p2))) < 0.01                                        # unbiased: ~0 for one law
    assert float(mmd_imq(p1 + 1.0, p2)) > 0.1


def test_wae_mmd_kl_term_weighs_kl_and_mmd():
    m = build_method("wae-mmd", {"mmd_weight": 3.0, "kl_weight": 0.5, "samples": 2})
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3) * 0.2
    torch.manual_seed(1)
    term = m.kl_term(mu, logvar)
    torch.manual_seed(1)
    eps = torch.randn(4, 2, 3)
    q = (mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps).reshape(8, 3)
    prior = torch.randn(8, 3)
    expected = 0.5 * kl_by_hand(mu, logvar).sum(-1) + 3.0 * _mmd_by_loops(q.tolist(), prior.tolist())
    torch.testing.assert_close(term, expected, rtol=1e-5, atol=1e-5)


def test_wae_mmd_run_reports_iw_nll_like_every_method(tiny_corpus, tmp_path):
    """The objective is not an ELBO, yet the model under q has a finite IW-NLL at most its Rec + KL, on average."""
    from textsvae.evaluation.scoring import evaluate_model

    trainer = tiny_trainer(tmp_path, tiny_corpus, "wae-mmd")
    trainer.prepare_run_dir(force=False)
    trainer.fit()
    trainer.model.eval()
    out = evaluate_model(trainer.model, trainer.method, trainer.corpus.splits["test"], trainer.config.eval,
                         torch.device("cpu"), iw_samples=20)
    assert math.isfinite(out["iw_nll"]) and out["iw_nll"] <= -out["elbo"] + 0.5


# -- bag of words ----------------------------------------------------------------------------------------------
def test_bag_of_words_nll_is_the_sum_over_targets_of_a_hand_made_log_softmax():
    batch = make_batch([[4, 5, 4], [6]], [0, 1])                # targets: 4 5 4 </s> and 6 </s>
    logits = torch.randn(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = []
    for b, words in enumerate([[4, 5, 4], [6]]):
        row = logits[b].tolist()
        log_z = math.log(sum(math.exp(v) for v in row))
        eos = int(batch.targets[b, len(words)])
        expected.append(-sum(row[w] - log_z for w in words + [eos]))
    torch.testing.assert_close(bag_of_words_nll(logits, batch), torch.tensor(expected, dtype=torch.float64))


def test_bow_loss_adds_the_head_term_with_the_reconstructions_z(tiny_corpus, tmp_path):
    """loss = mean_b [Rec_b + beta KL_b + weight L_bow(z_b)], z_b the draw behind Rec_b (same seed, same z)."""
    trainer = tiny_trainer(tmp_path, tiny_corpus, "bow", {"weight": 2.0})
    model, method = trainer.model.eval(), trainer.method
    batch = next(trainer.train_batches(0))
    assert id(model.bow[0].weight) in {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    torch.manual_seed(7)
    out = method.loss(model, batch, 0.5)
    torch.manual_seed(7)
    mu, logvar = model.encode(batch)
    z = model.sample(mu, logvar)
    rec = -model.log_px_given_z(batch, z)
    expected = (rec + 0.5 * kl_by_hand(mu, logvar).sum(-1) + 2.0 * bag_of_words_nll(model.bow(z), batch)).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.rec, rec)                                          # the log's Rec is p(x|z)'s
    model.zero_grad()
    method.extra_loss(model, batch, model.sample(*model.encode(batch))).sum().backward()
    assert model.encoder.to_params.weight.grad.abs().sum() > 0                        # the head's loss reaches q


def test_bow_run_evaluates_from_its_checkpoint(tiny_corpus, tmp_path):
    """The head is part of the model's state: a rebuilt run (setup, then load) has it and scores the split."""
    from click.testing import CliRunner

    from textsvae.cli import cli
    from textsvae.evaluation.run_eval import load_model

    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(tiny_corpus), "--method", "bow", "--epochs", "1",
                                      "--threads", "1", "--set", "max_steps=2", "--set", "progress=false", "-o", str(run)])
    assert result.exit_code == 0, result.output
    model, method, *_ = load_model(run, "cpu")
    saved = torch.load(run / "best.pt", map_location="cpu", weights_only=False)["model"]
    torch.testing.assert_close(model.bow[2].weight, saved["bow.2.weight"])
