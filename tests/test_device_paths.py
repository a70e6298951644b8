"""The GPU code paths make no host sync inside the training loop or an IW-NLL batch (issue 6).

No GPU is needed: on the meta device a tensor has a shape but no values, so anything that reads one
on the host (.item(), float(), .tolist(), nonzero(), a boolean mask, coalescing a sparse tensor)
raises. Every non-CPU branch of the suite (the row-max softmax, dense embedding gradients, clipping
without reading the scale) runs there as it would on a GPU, where each such read waits for the device.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from textsvae.config import ModelConfig, apply_overrides, preset_config
from textsvae.data.batching import make_batch
from textsvae.evaluation import iw_log_weights, iw_nll, posterior, sentence_noise
from textsvae.methods import build_method, method_names
from textsvae.models import TextVAE
from textsvae.optim import sparse_embeddings
from textsvae.train import Trainer

META = torch.device("meta")
# aggressive reads its block loss at each check (He et al.'s stopping rule): no check within 2 steps;
# SA-VAE's SVI steps each run the same ops, and meta's Python kernels are slow: 2 of them
PARAMS = {"aggressive": {"max_inner": 2, "check_every": 3}, "sa-vae": {"steps": 2}}


class ReachedValidation(Exception):
    pass


def test_meta_tensors_refuse_every_host_read():
    """What makes the tests below able to fail: each kind of host read raises on the meta device."""
    x = torch.ones(3, device=META)
    embed = torch.nn.Embedding(5, 2, padding_idx=0, sparse=True).to(META)
    sparse_grad = lambda: embed(torch.tensor([1, 2], device=META)).sum().backward()  # noqa: E731
    reads = [x.sum().item, lambda: float(x.sum()), lambda: bool(x.sum() > 0), x.tolist, x.nonzero,
             lambda: x[x > 0], sparse_grad]
    for read in reads:
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


def meta_trainer(tmp_path: Path, corpus: Path, name: str, decoder: str) -> Trainer:
    """The `ptb` preset's optimiser (plain SGD, clipping) on the tiny corpus, on the meta device."""
    config = apply_overrides(preset_config("tiny"), {
        "data": str(corpus), "decoder": decoder, "device": "meta", "optimizer": "sgd", "lr": 1.0,
        "clip_grad": 5.0, "batch_size": 8, "max_steps": 2, "monitor_every": 0, "progress": False, "seed": 0})
    return Trainer(config, tmp_path / "run", method=build_method(name, PARAMS.get(name, {})))


TRAINED = [(name, decoder) for name in method_names() for decoder in ("standard", "skip", "lm")
           if decoder != "lm" or not build_method(name).needs_latent]


@pytest.mark.parametrize("name, decoder", TRAINED)
def test_training_steps_make_no_host_sync(name, decoder, tiny_corpus, tmp_path, monkeypatch):
    """Two steps of the epoch loop, every method: no host read until the loop's own check at its end."""
    trainer = meta_trainer(tmp_path, tiny_corpus, name, decoder)
    assert not any(m.sparse for m in trainer.model.modules() if isinstance(m, torch.nn.Embedding))
    checks = []
    monkeypatch.setattr(trainer, "_check_finite", lambda first_bad, epoch: checks.append(trainer.state.step))

    def reached_validation(split):
        raise ReachedValidation(split)

    monkeypatch.setattr(trainer, "validate", reached_validation)
    with pytest.raises(ReachedValidation):
        trainer._run_epoch({"flag": False})
    assert trainer.state.step == 2 and checks == [2]          # the loop's one deliberate read, after step 2


def test_sparse_embedding_gradients_stay_on_the_cpu():
    model = TextVAE(30, ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=4))
    assert sparse_embeddings(model, "sgd", 0.0) and model.decoder.embed.sparse
    assert not sparse_embeddings(model.to(META), "sgd", 0.0)
    assert not model.encoder.embed.sparse and not model.decoder.embed.sparse


@pytest.mark.parametrize("decoder", ["standard", "skip"])
def test_iw_scoring_of_a_batch_makes_no_host_sync(decoder):
    """posterior, the chunked IW log-weights and the IW-NLL of one evaluation batch, as on a GPU."""
    model = TextVAE(30, ModelConfig(decoder=decoder, emb_dim=8, enc_hidden=8, dec_hidden=8,
                                    latent_dim=4)).to(META).eval()
    batch = make_batch([[5, 6, 7], [8, 9, 10, 11], [12, 13]], [0, 1, 2]).to(META)
    mu, logvar = posterior(model, build_method("vae"), batch, seed=0)
    eps = sentence_noise([0, 1, 2], 10, 4, seed=0).to(META, torch.float64)
    with torch.no_grad():
        log_w, log_px = iw_log_weights(lambda z: model.log_px_given_z(batch, z.float()), mu.double(),
                                       logvar.double(), eps, 4)
        nll = iw_nll(log_w)
    assert log_w.shape == (3, 10) and log_px.shape == (3, 10) and nll.shape == (3,)
