"""The optimiser step: clipping equals torch's, sparse embedding gradients equal dense ones."""
from __future__ import annotations

import copy

import pytest
import torch

from textsvae.core.config import ModelConfig
from textsvae.data.batching import make_batch
from textsvae.kernels.fast_paths import fast_paths
from textsvae.kernels.optim import clip_grad_norm, sparse_embeddings
from textsvae.model.models import TextVAE


def _model_and_batch(seed: int = 0):
    torch.manual_seed(seed)
    model = TextVAE(40, ModelConfig(emb_dim=8, enc_hidden=12, dec_hidden=12, latent_dim=4, decoder="skip",
                                    dec_layers=2, dropout_in=0.0, dropout_out=0.0))
    with torch.no_grad():      # weights large enough that the embeddings' share of the norm shows
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    sentences = [torch.randint(4, 40, (n,)).tolist() for n in (5, 7, 3, 7)]
    return model, make_batch(sentences, list(range(len(sentences))))


def _grads(model, batch, scale: float = 1.0):
    model.zero_grad(set_to_none=True)
    mu, logvar = model.encoder(batch.tokens, batch.lengths)
    (scale * -model.log_px_given_z(batch, mu).sum()).backward()


@pytest.mark.parametrize("max_norm", [1e-3, 1e6])     # clipping, and a bound the norm is under
def test_clipping_dense_gradients_equals_torch_to_the_bit(max_norm):
    model, batch = _model_and_batch()
    twin = copy.deepcopy(model)
    _grads(model, batch)
    _grads(twin, batch)
    ours = clip_grad_norm(model.parameters(), max_norm)
    theirs = torch.nn.utils.clip_grad_norm_(twin.parameters(), max_norm)
    assert torch.equal(ours, theirs)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad), name
    if max_norm < 1:      # the gradients were really scaled down to the bound
        assert clip_grad_norm(model.parameters(), max_norm) == pytest.approx(max_norm, rel=1e-4)


@pytest.mark.parametrize("max_norm", [1e-2, 1e6])
def test_sparse_embedding_gradients_give_the_dense_sgd_step(max_norm):
    model, batch = _model_and_batch()
    dense = copy.deepcopy(model)
    assert sparse_embeddings(model, "sgd", 0.0)
    assert not sparse_embeddings(dense, "adam", 0.0)
    results = []
    for m in (model, dense):
        _grads(m, batch)      # <s> and repeated words: the sparse gradient has duplicate rows
        results.append(clip_grad_norm(m.parameters(), max_norm))
    sparse_grad = model.decoder.embed.weight.grad
    assert model.encoder.embed.weight.grad.is_sparse and sparse_grad.is_sparse and sparse_grad.is_coalesced()
    assert not dense.decoder.embed.weight.grad.is_sparse
    assert results[0] == pytest.approx(float(results[1]), rel=1e-6)
    for name in ("encoder.embed.weight", "decoder.embed.weight"):
        torch.testing.assert_close(model.get_parameter(name).grad.to_dense(), dense.get_parameter(name).grad,
                                   rtol=1e-5, atol=1e-6 * float(results[1]))
    for m in (model, dense):
        torch.optim.SGD(m.parameters(), lr=0.5).step()
    for (name, p), q in zip(model.named_parameters(), dense.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
    # rows no sentence touched were left exactly as they were
    untouched = sorted(set(range(40)) - set(batch.tokens.flatten().tolist()))
    assert untouched and torch.equal(model.decoder.embed.weight[untouched], dense.decoder.embed.weight[untouched])


@pytest.mark.parametrize("optimizer, momentum, sparse", [("sgd", 0.0, True), ("sgd", 0.9, False), ("adam", 0.0, False)])
def test_embeddings_take_sparse_gradients_only_under_plain_sgd(optimizer, momentum, sparse, monkeypatch):
    model, _ = _model_and_batch()
    assert sparse_embeddings(model, optimizer, momentum) is sparse
    assert model.encoder.embed.sparse is sparse and model.decoder.embed.sparse is sparse
    with fast_paths(sparse_embeddings=False):
        assert not sparse_embeddings(model, optimizer, momentum) and not model.decoder.embed.sparse
