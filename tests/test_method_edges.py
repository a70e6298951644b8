"""Methods' formulas at their edges, each against a closed form or a hand computation written here.

- BN-VAE's layer (Zhu et al. 2020): gamma (x - mean) / sqrt(var + eps) + shift, batch statistics only in
  training and for batches of more than one, running statistics updated with momentum 0.1 (PyTorch's, as
  in Zhu et al.'s code), eps passed through.
- SA-VAE (Kim et al. 2018): one SVI step is lam_1 = lam_0 - lr * clip(g / B_svi, c / sqrt(B_svi)) per row;
  the derivative of the refined parameters with respect to the encoder's is checked against central
  finite differences (it includes the second-order term -lr/B_svi * H that only create_graph gives).
- Word dropout, cyclical and linear annealing, composites, pretrain-fb's phase messages.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from textsvae.core.config import ModelConfig, apply_overrides, preset_config
from textsvae.data.batching import make_batch
from textsvae.kernels.metrics import gaussian_kl
from textsvae.methods import build_method
from textsvae.methods.bn_vae import BNVAE, BNVAEParams, FixedScaleBatchNorm
from textsvae.methods.sa_vae import SAVAE, SAVAEParams, _backward_row_limit, refine
from textsvae.methods.word_dropout import drop_words
from textsvae.model.models import TextVAE
from textsvae.training.lr_rules import end_of_epoch
from textsvae.training.train import Trainer


# -- BN-VAE's layer ------------------------------------------------------------------------------------------
def _batch(rows: int = 5, dim: int = 3) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(0)) * 2.0 + 1.0


def test_bn_layer_in_training_uses_batch_statistics_and_updates_the_running_ones():
    x = _batch()
    bn = FixedScaleBatchNorm(3, gamma=0.6, eps=0.5).train()
    with torch.no_grad():
        bn.shift.copy_(torch.tensor([0.1, -0.2, 0.3]))
    out = bn(x).detach()
    mean, var = x.mean(0), x.var(0, unbiased=False)
    torch.testing.assert_close(out, 0.6 * (x - mean) / torch.sqrt(var + 0.5) + bn.shift.detach())
    torch.testing.assert_close(bn.running_mean, 0.1 * mean)                         # momentum 0.1 from 0
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * x.var(0, unbiased=True))  # from 1, unbiased
    assert FixedScaleBatchNorm(3, gamma=0.6).eps == 1e-5 and FixedScaleBatchNorm(3, gamma=0.6).momentum == 0.1
    assert BNVAE(BNVAEParams(eps=0.5)).make_layer(3).eps == 0.5


def test_bn_layer_running_statistics_follow_its_momentum():
    x = _batch()
    bn = FixedScaleBatchNorm(3, gamma=0.6, momentum=0.5).train()
    bn(x)
    torch.testing.assert_close(bn.running_mean, 0.5 * x.mean(0))


def test_bn_layer_uses_running_statistics_in_evaluation_and_for_a_batch_of_one():
    x = _batch()
    bn = FixedScaleBatchNorm(3, gamma=0.6, eps=0.5)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    expected = 0.6 * (x - bn.running_mean) / torch.sqrt(bn.running_var + 0.5)
    torch.testing.assert_close(bn.eval()(x).detach(), expected)                   # eval: running stats
    bn.train()
    torch.testing.assert_close(bn(x[:1]).detach(), expected[:1])                  # one row: running stats
    pair = bn(x[:2]).detach()                                                     # two rows: batch stats
    m, v = x[:2].mean(0), x[:2].var(0, unbiased=False)
    torch.testing.assert_close(pair, 0.6 * (x[:2] - m) / torch.sqrt(v + 0.5))


# -- SA-VAE --------------------------------------------------------------------------------------------------
def _sa_model(double: bool = False, decoder_scale: float = 1.0):
    torch.manual_seed(0)
    model = TextVAE(20, ModelConfig(emb_dim=6, enc_hidden=6, dec_hidden=6, latent_dim=3)).eval()
    with torch.no_grad():
        model.encoder.to_params.bias[:3].copy_(torch.tensor([2.0, -1.0, 1.5]))
        model.encoder.to_params.bias[3:].copy_(torch.tensor([1.0, -0.5, 0.5]))
        for p in model.decoder.parameters():
            p.mul_(decoder_scale)
    if double:
        model.double()
    batch = make_batch([[4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14, 15], [5, 5]], [0, 1, 2, 3])
    return model, batch


def _neg_elbo_grad(model, batch, mu, logvar, eps):
    mu_r, lv_r = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    neg = -model.log_px_given_z(batch, mu_r + torch.exp(0.5 * lv_r) * eps) + gaussian_kl(mu_r, lv_r).sum(-1)
    return torch.autograd.grad(neg.sum(), (mu_r, lv_r))


def _clip(rows: torch.Tensor, limit: float) -> torch.Tensor:
    """Each row scaled to norm `limit` where it is longer, by hand."""
    out = rows.clone()
    for i in range(rows.size(0)):
        n = float(rows[i].norm())
        if n > limit:
            out[i] = rows[i] * (limit / n)
    return out


@pytest.mark.parametrize("where", ["all rows", "some rows"])
def test_sa_vae_clips_each_rows_step_at_the_norm_limit(where):
    """One step, momentum irrelevant (v_1 = g): mu_1 = mu_0 - lr clip(g_mu / B, c / sqrt(B)), logvar alike."""
    model, batch = _sa_model()
    mu0, lv0 = (t.detach() for t in model.encode(batch))
    eps = torch.randn(mu0.shape, generator=torch.Generator().manual_seed(3))
    g_mu, g_lv = _neg_elbo_grad(model, batch, mu0, lv0, eps)
    svi_batch = 16
    norms = (g_mu / svi_batch).norm(dim=-1)
    if where == "all rows":
        c = 0.5 * float(norms.min()) * svi_batch ** 0.5                 # every row longer than the limit
        assert c <= 1.0                                                 # a limit below 1 still clips
    else:
        c = float(norms.sort().values[1:3].mean()) * svi_batch ** 0.5   # two rows under it, two over
    limit = c / svi_batch ** 0.5
    mu, lv = refine(model, batch, mu0, lv0, steps=1, lr=0.7, momentum=0.5, max_grad_norm=c, differentiable=False,
                    generator=torch.Generator().manual_seed(3), svi_batch=svi_batch)
    torch.testing.assert_close(mu, mu0 - 0.7 * _clip(g_mu / svi_batch, limit))
    torch.testing.assert_close(lv, lv0 - 0.7 * _clip(g_lv / svi_batch, limit))


def test_sa_vae_one_step_in_float64_uses_float64_noise():
    """In float64 the noise is drawn in float64: z = mu + sigma eps with eps = randn(..., float64)."""
    model, batch = _sa_model(double=True)
    mu0, lv0 = (t.detach() for t in model.encode(batch))
    eps = torch.randn(mu0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g_mu, g_lv = _neg_elbo_grad(model, batch, mu0, lv0, eps)
    mu, lv = refine(model, batch, mu0, lv0, steps=1, lr=0.5, momentum=0.0, max_grad_norm=0.0, differentiable=False,
                    generator=torch.Generator().manual_seed(3), svi_batch=2)
    torch.testing.assert_close(mu, mu0 - 0.5 * g_mu / 2, rtol=1e-13, atol=1e-13)   # float32 noise is ~1e-8 off
    torch.testing.assert_close(lv, lv0 - 0.5 * g_lv / 2, rtol=1e-13, atol=1e-13)


def test_sa_vae_clips_the_backward_gradient_below_a_norm_of_one():
    """The backward clip (per row at c sqrt(B_svi) / batch) applies for any c > 0, c = 0.5 included."""
    model, batch = _sa_model()
    mu0, lv0 = (t.detach().requires_grad_() for t in model.encode(batch))
    mu, lv = refine(model, batch, mu0, lv0, steps=3, lr=1.0, momentum=0.5, max_grad_norm=0.5, differentiable=True,
                    generator=torch.Generator().manual_seed(1), svi_batch=4)
    (1e4 * (mu.sum() + lv.sum()) / 4).backward()
    rows = torch.cat([mu0.grad, lv0.grad], -1).norm(dim=-1)
    assert rows.tolist() == pytest.approx([0.5 * 4 ** 0.5 / 4] * 4, rel=1e-5)


def test_sa_vae_backward_limit_formula():
    """max_grad_norm * sqrt(svi_batch) / batch_size (see _backward_row_limit's docstring)."""
    assert _backward_row_limit(5.0, 9, 3) == pytest.approx(5.0 * 3 / 3)
    assert _backward_row_limit(2.0, 16, 8) == pytest.approx(2.0 * 4 / 8)


def test_sa_vae_refine_defaults_to_a_batch_of_one():
    model, batch = _sa_model()
    mu0, lv0 = (t.detach() for t in model.encode(batch))
    run = lambda **kw: refine(model, batch, mu0, lv0, steps=2, lr=0.5, momentum=0.5, max_grad_norm=0.0,  # noqa: E731
                              differentiable=False, generator=torch.Generator().manual_seed(1), **kw)
    a, b = run(), run(svi_batch=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_sa_vae_posterior_at_evaluation_is_the_seeded_refinement_with_its_svi_batch():
    """Outside training (model.eval(), gradients on or off) the refinement is fixed-seed and detached."""
    model, batch = _sa_model()
    m = SAVAE(SAVAEParams(steps=2, svi_batch=4, eval_seed=9))
    with torch.enable_grad():
        mu_a, lv_a = m.posterior(model, batch)
        mu_b, _ = m.posterior(model, batch)
    assert torch.equal(mu_a, mu_b) and not mu_a.requires_grad
    mu0, lv0 = model.encode(batch)
    mu_r, lv_r = refine(model, batch, mu0, lv0, 2, 1.0, 0.5, 5.0, differentiable=False,
                        generator=torch.Generator().manual_seed(9), svi_batch=4)
    torch.testing.assert_close(mu_a, mu_r)
    torch.testing.assert_close(lv_a, lv_r)


def test_sa_vae_refinement_of_a_frozen_encoders_output_is_differentiable():
    model, batch = _sa_model()
    mu0, lv0 = (t.detach() for t in model.encode(batch))               # no graph back to the encoder
    mu, lv = refine(model, batch, mu0, lv0, steps=2, lr=0.5, momentum=0.5, max_grad_norm=5.0,
                    differentiable=True, generator=torch.Generator().manual_seed(1), svi_batch=4)
    assert mu.requires_grad and lv.requires_grad and torch.isfinite(mu).all()


def test_sa_vae_gradient_through_the_svi_step_matches_finite_differences():
    """d(sum_i v_i lam_1,i)/d lam_0 by autograd through the differentiable refinement, against central
    differences of the refinement itself (float64, the same noise): for one step without clipping
    lam_1 = lam_0 - lr g(lam_0) / B, so the derivative is v - lr/B H v, not v. The decoder's weights are
    scaled up so that its part of H (through log p(x|z)) is not negligible beside the KL's."""
    model, batch = _sa_model(double=True, decoder_scale=30.0)
    mu0, lv0 = (t.detach() for t in model.encode(batch))
    v = torch.randn(mu0.size(0), 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def objective(mu, lv, differentiable):
        a, b = refine(model, batch, mu, lv, steps=1, lr=1.0, momentum=0.0, max_grad_norm=0.0,
                      differentiable=differentiable, generator=torch.Generator().manual_seed(2), svi_batch=1)
        return (torch.cat([a, b], -1) * v).sum()

    mu_r, lv_r = mu0.clone().requires_grad_(), lv0.clone().requires_grad_()
    g_mu, g_lv = torch.autograd.grad(objective(mu_r, lv_r, True), (mu_r, lv_r))
    grad = torch.cat([g_mu, g_lv], -1)
    h = 1e-5
    direction = torch.randn(mu0.size(0), 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    up = objective(mu0 + h * direction[:, :3], lv0 + h * direction[:, 3:], False)
    down = objective(mu0 - h * direction[:, :3], lv0 - h * direction[:, 3:], False)
    numeric = float(up - down) / (2 * h)
    assert float((grad * direction).sum()) == pytest.approx(numeric, rel=1e-4, abs=1e-6)
    assert abs(float((v * direction).sum()) - numeric) > 1e-2          # the identity alone is not enough
    # nor the KL's Hessian alone: KL_d = (mu^2 + e^lv - lv - 1) / 2 has H = diag(1, e^lv / 2) per dimension
    kl_only = v - torch.cat([v[:, :3], v[:, 3:] * torch.exp(lv0) / 2], -1)
    assert abs(float((kl_only * direction).sum()) - numeric) > 1e-2


# -- word dropout, schedules inside methods ----------------------------------------------------------------------
def test_word_dropout_draws_from_the_generator_it_is_given():
    batch = make_batch([list(range(4, 40))] * 6, list(range(6)))
    torch.manual_seed(1)
    a = drop_words(batch, 0.4, torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    b = drop_words(batch, 0.4, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_anneal_over_a_one_step_ramp():
    m = build_method("anneal", {"start": 0.0, "steps": 1})
    assert [m.beta(t, 0, 10) for t in (0, 1, 2)] == pytest.approx([0.0, 1.0, 1.0])


def test_cyclical_period_from_its_parameters():
    """P = total_steps / M when total_steps is given (no setup needed), cycle_epochs * steps_per_epoch when set."""
    m = build_method("cyclical", {"total_steps": 8, "cycles": 2})
    assert [m.beta(t, 0, 2) for t in range(5)] == pytest.approx([0, 0.5, 1, 1, 0])
    one = build_method("cyclical", {"total_steps": 1, "cycles": 1, "ratio": 1.0})
    assert one.beta(0, 0, 1) == 0.0
    half = build_method("cyclical", {"cycle_epochs": 0.5})
    assert [half.beta(t, 0, 4) for t in range(3)] == pytest.approx([0.0, 1.0, 0.0])   # P = 2, R = 0.5
    with pytest.raises(RuntimeError) as info:
        build_method("cyclical").beta(0, 0, 2)
    assert str(info.value) == "cyclical: the run length is unknown before setup(); or set total_steps"


# -- composites and pretrain-fb's phases -------------------------------------------------------------------------
def _trainer(tmp_path: Path, corpus: Path, method, **overrides) -> Trainer:
    config = apply_overrides(preset_config("tiny"), {"data": str(corpus), "progress": False, "seed": 0, **overrides})
    return Trainer(config, tmp_path / "run", method=method)


def test_a_composite_hands_the_trainer_to_every_part(tiny_corpus, tmp_path):
    m = build_method("pretrain-fb+word-dropout", {"pretrain_epochs": 1})
    trainer = _trainer(tmp_path, tiny_corpus, m)
    trainer.state.epoch, trainer.state.step = 1, 2
    m.end_epoch(trainer, {})
    assert m.parts[0].state_dict() == {"pretraining": False, "reset_step": 2}


def test_pretrain_fb_says_when_its_phase_changes(tiny_corpus, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="textsvae.methods.pretrain_fb")
    m = build_method("pretrain-fb", {"pretrain_epochs": 1})
    trainer = _trainer(tmp_path / "a", tiny_corpus, m)
    trainer.state.epoch, trainer.state.step = 1, 2
    m.end_epoch(trainer, {})
    last = build_method("pretrain-fb", {"pretrain_epochs": 1})
    trainer = _trainer(tmp_path / "b", tiny_corpus, last)
    trainer.state.epoch, trainer.state.step, trainer.state.done = 1, 2, True
    last.end_epoch(trainer, {})
    assert [r.getMessage() for r in caplog.records] == [
        "pretrain-fb: autoencoder pretraining done after epoch 1; decoder reset, free bits from now",
        "pretrain-fb: the run ends during autoencoder pretraining (epoch 1 of pretrain_epochs=1); its model is the "
        "pretrained autoencoder, without a decoder reset or free bits"]


def test_a_whole_autoencoder_run_cut_by_the_step_budget_keeps_the_autoencoder(tiny_corpus, tmp_path, caplog):
    """The budget reached exactly (step == max_steps) ends the run: no reset, a warning that says so."""
    caplog.set_level(logging.INFO, logger="textsvae.methods.pretrain_fb")
    m = build_method("pretrain-fb", {"pretrain_epochs": -1})
    trainer = _trainer(tmp_path, tiny_corpus, m, max_steps=2)
    trainer.state.epoch, trainer.state.step, trainer.state.done = 1, 2, True
    m.end_epoch(trainer, {})
    assert m.state_dict() == {"pretraining": True, "reset_step": 0}
    assert [r.getMessage() for r in caplog.records] == [
        "pretrain-fb: the step budget ends the run during autoencoder pretraining; its model is the pretrained "
        "autoencoder, without a decoder reset or free bits"]


def test_the_end_of_a_whole_autoencoder_run_is_logged_with_its_best_epoch(tiny_corpus, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="textsvae.methods.pretrain_fb")
    m = build_method("pretrain-fb", {"pretrain_epochs": -1})
    trainer = _trainer(tmp_path, tiny_corpus, m, epochs=3)
    trainer.run_dir.mkdir(parents=True)
    trainer.state.epoch = 1
    end_of_epoch(trainer, 50.0)                                       # best.pt: epoch 1
    s = trainer.state
    s.epoch, s.step, s.done, s.stop_reason = 3, 6, True, "reached 3 epochs"
    m.end_epoch(trainer, {})
    assert not m.pretraining and m.reset_step == 6
    assert caplog.records[-1].getMessage() == (
        "pretrain-fb: the autoencoder run ended after epoch 3 (reached 3 epochs); its best model (epoch 1) goes on "
        "with a new decoder, as a new run with free bits")
