"""The training objective's value at every step of real runs, against an oracle written here.

Each test trains a tiny model through `Trainer.fit()` (40 sentences, batch 32: 2 steps per epoch) and
wraps the method's `train_step`. Before each step the wrapper computes, from the current weights and
the same Gaussian draw the step will use (the torch RNG is saved and restored around it),

    loss_t = (1/B) sum_b [ Rec_b + beta(t) * penalty_b ],
    Rec_b  = -sum_{i <= n_b + 1} log softmax(logits_b,i)[x_b,i],   z_b = mu_b + exp(logvar_b / 2) eps_b,
    KL_bd  = 0.5 (mu_bd^2 + exp(logvar_bd) - logvar_bd - 1)        (docs/protocol.md section 4),

with beta(t) the closed form of the method's schedule at the 0-based step t (counted here, not read
from the trainer), and penalty_b the plain KL or its free-bits floor written out element by element.
It then checks that the loss, Rec and KL the method's step returns are these numbers. Decoder dropout
is 0, so the only random draw of a step is the one eps of the reparameterisation.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from textsvae.core.config import apply_overrides, preset_config
from textsvae.data.vocab import UNK_ID
from textsvae.methods import build_method
from textsvae.training.train import Trainer

STEPS_PER_EPOCH = 2     # the tiny corpus: 40 training sentences in batches of 32
NZ = 8                  # the tiny preset's latent size


# -- the oracle: closed forms, written out ---------------------------------------------------------------
def kl_elements(mu: torch.Tensor, logvar: torch.Tensor) -> list[list[float]]:
    """KL(N(mu, sigma^2) || N(0, 1)) of each sentence b and dimension d, one scalar at a time."""
    return [[0.5 * (m * m + math.exp(lv) - lv - 1.0) for m, lv in zip(mu_b, lv_b)]
            for mu_b, lv_b in zip(mu.tolist(), logvar.tolist())]


def penalty_plain(kl: list[list[float]], target: float = 0.0) -> list[float]:
    return [sum(row) for row in kl]


def penalty_dim(kl: list[list[float]], target: float) -> list[float]:
    """Kingma et al. 2016 with one dimension per group: sum_d max(mean_b KL_bd, target / D), every row."""
    b, d = len(kl), len(kl[0])
    value = sum(max(sum(kl[i][j] for i in range(b)) / b, target / d) for j in range(d))
    return [value] * b


def penalty_sentence(kl: list[list[float]], target: float) -> list[float]:
    """Each sentence's total KL floored at the target: max(sum_d KL_bd, target)."""
    return [max(sum(row), target) for row in kl]


def penalty_sentence_dim(kl: list[list[float]], target: float) -> list[float]:
    """Li et al. 2019 (`--fb 2`), as textsvae documents it: sum_d max(KL_bd, target / D), per sentence."""
    return [sum(max(x, target / len(row)) for x in row) for row in kl]


def reconstruction(model, batch, z: torch.Tensor | None, inputs: torch.Tensor | None = None) -> list[float]:
    """-log p(x|z) of each sentence: the full softmax over the vocabulary, summed over its n + 1 targets,
    the decoder reading `inputs` (the batch's own unless given)."""
    hidden = model.decoder.hidden_states(batch.inputs if inputs is None else inputs, z)
    logits = model.decoder.out.logits(hidden, z.unsqueeze(1) if model.decoder.skip else None)
    logp = torch.log_softmax(logits.double(), dim=-1)                                  # (B, T, V)
    out = []
    for b in range(len(batch)):
        n_targets = int(batch.lengths[b]) - 1
        targets = batch.targets[b, :n_targets].tolist()
        out.append(-sum(float(logp[b, i, w]) for i, w in enumerate(targets)))
    return out


class Recorder:
    """Wraps method.train_step: the oracle before each step, the method's output after it."""

    def __init__(self, trainer: Trainer, beta_of_step, penalty_of_step, all_unknown: bool = False):
        self.trainer, self.beta_of_step, self.penalty_of_step = trainer, beta_of_step, penalty_of_step
        self.all_unknown = all_unknown       # word dropout at rate 1: the decoder reads <s> <unk> ... <unk>
        self.inner = trainer.method.train_step
        self.rows: list[dict] = []
        trainer.method.train_step = self

    def __call__(self, trainer, batch, beta):
        t = len(self.rows)                                   # this step's 0-based index, counted here
        model = trainer.model
        rng = torch.get_rng_state()
        inputs = None
        with torch.no_grad():
            if self.all_unknown:
                torch.rand(batch.inputs.shape)               # word dropout's draw, which comes first
                inputs = batch.inputs.clone()
                for b in range(len(batch)):
                    inputs[b, 1:int(batch.lengths[b]) - 1] = UNK_ID   # every word; <s>, </s>, padding kept
            if model.is_lm:
                mu = logvar = torch.zeros(len(batch), 0)
                z = None
            else:
                mu, logvar = model.encode(batch)
                eps = torch.randn(mu.shape)                  # the draw the step's model.sample will make
                z = mu + torch.exp(0.5 * logvar) * eps
            rec = reconstruction(model, batch, z, inputs)
            own = reconstruction(model, batch, z) if inputs is not None else rec
        torch.set_rng_state(rng)
        kl = kl_elements(mu, logvar) if not model.is_lm else [[] for _ in range(len(batch))]
        b_t = self.beta_of_step(t)
        penalty = self.penalty_of_step(t)(kl)
        expected = sum(r + b_t * p for r, p in zip(rec, penalty)) / len(rec)
        out = self.inner(trainer, batch, beta)
        self.rows.append({"step": t, "beta": b_t, "given_beta": beta, "expected": expected,
                          "loss": float(out.loss.detach()), "rec": rec, "kl_elements": kl, "out_rec": out.rec.tolist(),
                          "kl": [sum(row) for row in kl], "out_kl": out.kl.tolist(),
                          "rec_own_inputs": own})
        return out


def train(tmp_path: Path, corpus: Path, method: str, params: dict, epochs: int, beta_of_step,
          penalty_of_step=lambda t: penalty_plain, encoder_spread: bool = True, decoder: str = "standard",
          all_unknown: bool = False) -> list[dict]:
    """Train, recording every step; all_unknown: word dropout at rate 1, with decoder weights scaled up so
    that what the decoder reads moves Rec by tenths of nats (at He et al.'s init, by ~1e-5)."""
    config = apply_overrides(preset_config("tiny"), {
        "data": str(corpus), "decoder": decoder, "method": method, "method_params": params,
        "epochs": epochs, "seed": 3, "progress": False, "dropout_in": 0.0, "dropout_out": 0.0,
        "monitor_size": 10})
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.steps_per_epoch == STEPS_PER_EPOCH
    if encoder_spread and decoder != "lm":
        # posterior means and variances far from the prior's and different per dimension: a KL of a few
        # nats per sentence (at He et al.'s init it is ~1e-4, too small for beta to show), with some
        # KL_bd under a free-bits floor and some above it
        with torch.no_grad():
            trainer.model.encoder.to_params.weight.mul_(60.0)
            trainer.model.encoder.to_params.bias[:NZ].copy_(torch.linspace(-1.5, 1.5, NZ))
            trainer.model.encoder.to_params.bias[NZ:].copy_(torch.linspace(-1.0, 0.5, NZ))
    if all_unknown:
        with torch.no_grad():
            for p in trainer.model.decoder.parameters():
                p.mul_(40.0)
    recorder = Recorder(trainer, beta_of_step, penalty_of_step, all_unknown)
    trainer.prepare_run_dir(force=False)
    trainer.fit()
    rows = recorder.rows
    assert [r["step"] for r in rows] == list(range(epochs * STEPS_PER_EPOCH))
    for r in rows:
        assert r["given_beta"] == pytest.approx(r["beta"], abs=1e-12), r      # the loop's beta is the closed form
        if decoder != "lm":
            assert sum(r["kl"]) / len(r["kl"]) > 1.0, r                       # beta moves the loss
        assert r["loss"] == pytest.approx(r["expected"], rel=1e-5, abs=1e-5), r
        assert r["out_rec"] == pytest.approx(r["rec"], rel=1e-5, abs=1e-5), r
        assert r["out_kl"] == pytest.approx(r["kl"], rel=1e-5, abs=1e-6), r  # the logged KL is never floored
    return rows


def test_anneal_objective_is_rec_plus_linear_beta_times_kl(tiny_corpus, tmp_path):
    """Linear annealing (Bowman et al. 2016): beta(t) = start + (1 - start) min(1, t / L); start 0.2, L 4:
    0.2, 0.4, 0.6, 0.8, 1, 1."""
    rows = train(tmp_path, tiny_corpus, "anneal", {"start": 0.2, "steps": 4}, 3,
                 lambda t: 0.2 + 0.8 * min(1.0, t / 4))
    assert [r["beta"] for r in rows] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_cyclical_objective_follows_fu_et_als_cycles(tiny_corpus, tmp_path):
    """Fu et al. 2019: T = 4 epochs x 2 steps = 8 steps, M = 2 cycles of P = 4 steps, R = 0.5:
    beta(t) = min(1, ((t mod P) / P) / R) = 0, 0.5, 1, 1, 0, 0.5, 1, 1 (beta = 0 at each cycle's start)."""
    rows = train(tmp_path, tiny_corpus, "cyclical", {"cycles": 2, "ratio": 0.5}, 4,
                 lambda t: min(1.0, ((t % 4) / 4) / 0.5))
    assert [r["beta"] for r in rows] == pytest.approx([0, 0.5, 1, 1, 0, 0.5, 1, 1])


def test_logistic_objective_uses_the_sigmoid_weight(tiny_corpus, tmp_path):
    """Bowman et al. 2016's sigmoid: beta(t) = 1 / (1 + exp(-k (t - x0))), k = 1, x0 = 2."""
    train(tmp_path, tiny_corpus, "logistic", {"k": 1.0, "x0": 2.0}, 2, lambda t: 1.0 / (1.0 + math.exp(-(t - 2))))


def test_beta_vae_objective_weights_kl_by_a_constant(tiny_corpus, tmp_path):
    """beta-VAE (Higgins et al. 2017): beta(t) = 0.3 at every step."""
    train(tmp_path, tiny_corpus, "beta", {"beta": 0.3}, 2, lambda t: 0.3)


@pytest.mark.parametrize("mode, penalty", [("dim", penalty_dim), ("sentence", penalty_sentence),
                                           ("sentence-dim", penalty_sentence_dim)])
def test_free_bits_objective_floors_the_kl_as_documented(mode, penalty, tiny_corpus, tmp_path):
    """Free bits, beta = 1: 'dim' floors each dimension's batch-mean KL at target / D (Kingma et al. 2016),
    'sentence' each sentence's total at target, 'sentence-dim' each KL_bd at target / D (Li et al. 2019).
    target = 6 nats over D = 8: a floor of 0.75 per dimension, with the encoder spread so that some KL_bd
    (and some dimensions' means) lie above it and some under it."""
    target = 6.0
    rows = train(tmp_path, tiny_corpus, "free-bits", {"target": target, "mode": mode}, 2, lambda t: 1.0,
                 lambda t: (lambda kl: penalty(kl, target)), encoder_spread=True)
    # the floor binds somewhere and not everywhere, so the clamp is what the numbers check
    elements = [x for r in rows for row in r["kl_elements"] for x in row]
    assert min(elements) < target / NZ < max(elements)
    plain = [sum(r["rec"]) / len(r["rec"]) + sum(r["kl"]) / len(r["kl"]) for r in rows]
    assert all(abs(r["expected"] - p) > 1e-3 for r, p in zip(rows, plain))
    assert all(r["expected"] > p for r, p in zip(rows, plain))                   # a floor only raises the penalty


def test_pretrain_fb_objective_autoencoder_then_warmup_with_free_bits(tiny_corpus, tmp_path):
    """Li et al. 2019: epoch 1 is an autoencoder (beta = 0: loss = Rec); after it the decoder is reset and
    beta(t) = kl_start + (1 - kl_start) min(1, (t - t_reset) / (warmup_epochs * 2)) with t_reset = 2,
    kl_start = 0.25, warmup 1 epoch: 0, 0, 0.25, 0.625, 1, 1; the penalty is sentence-dim free bits,
    each KL_bd floored at target / D = 6 / 8."""
    target = 6.0

    def beta(t):
        return 0.0 if t < 2 else 0.25 + 0.75 * min(1.0, (t - 2) / 2)

    rows = train(tmp_path, tiny_corpus, "pretrain-fb",
                 {"pretrain_epochs": 1, "warmup_epochs": 1.0, "kl_start": 0.25, "target": target}, 3, beta,
                 lambda t: (lambda kl: penalty_sentence_dim(kl, target)), encoder_spread=True)
    assert [r["beta"] for r in rows] == pytest.approx([0, 0, 0.25, 0.625, 1, 1])
    for r in rows[:2]:
        assert r["loss"] == pytest.approx(sum(r["rec"]) / len(r["rec"]), rel=1e-5)   # the autoencoder phase


@pytest.mark.parametrize("decoder", ["standard", "skip"])
def test_word_dropout_objective_reads_unknown_words(decoder, tiny_corpus, tmp_path):
    """Word dropout (Bowman et al. 2016) at rate 1: Rec is -log p(x | z) with the decoder reading
    <s> <unk> ... <unk>; the targets, beta = 1 and the KL are the plain VAE's."""
    rows = train(tmp_path, tiny_corpus, "word-dropout", {"rate": 1.0}, 1, lambda t: 1.0, decoder=decoder,
                 all_unknown=True)
    for r in rows:                                                        # the inputs matter
        assert sum(abs(a - b) for a, b in zip(r["rec"], r["rec_own_inputs"])) / len(r["rec"]) > 0.05


@pytest.mark.parametrize("method, params, all_unknown", [("vae", {}, False), ("word-dropout", {"rate": 1.0}, True)])
def test_language_model_objective_is_the_exact_nll(method, params, all_unknown, tiny_corpus, tmp_path):
    """The LSTM-LM has no z: its loss is the mean over sentences of -log p(x), KL = 0, whatever beta is."""
    rows = train(tmp_path, tiny_corpus, method, params, 1, lambda t: 1.0, decoder="lm", all_unknown=all_unknown)
    for r in rows:
        assert r["kl"] == [0.0] * len(r["kl"]) and r["loss"] == pytest.approx(sum(r["rec"]) / len(r["rec"]))
        assert min(r["rec"]) > 0                                            # a negative log-likelihood
        if all_unknown:
            assert sum(abs(a - b) for a, b in zip(r["rec"], r["rec_own_inputs"])) / len(r["rec"]) > 0.05
