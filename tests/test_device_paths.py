"""The GPU code paths make no host sync inside the training loop or an IW-NLL batch (issue 6).

No GPU is needed: on the meta device a tensor has a shape but no values, so anything that reads one
on the host (.item(), float(), .tolist(), nonzero(), a boolean mask, coalescing a sparse tensor)
raises. Every non-CPU branch of the suite (the row-max softmax, dense embedding gradients, clipping
without reading the scale) runs there as it would on a GPU, where each such read waits for the device.

Where CUDA is present (`benchmarks/gpu_check.sh` on a lent GPU) the same tests also run on it under
torch.cuda.set_sync_debug_mode("error"), which raises at every synchronizing call, the blocking copies
between host and device included; and the GPU's values are compared with the CPU's.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from textsvae.core.config import ModelConfig, apply_overrides, preset_config
from textsvae.core.decoders import decoder_names, latent_decoder_names
from textsvae.data.batching import make_batch
from textsvae.evaluation.scoring import iw_log_weights, iw_nll, posterior, sentence_noise
from textsvae.kernels.optim import sparse_embeddings
from textsvae.methods import build_method, method_names
from textsvae.model.models import TextVAE
from textsvae.training.stop_signals import StopRequest
from textsvae.training.train import Trainer

META = torch.device("meta")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
DEVICES = ["meta", pytest.param("cuda", marks=CUDA)]
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


@contextlib.contextmanager
def no_host_sync(device: str):
    """On CUDA every synchronizing call inside raises; on meta every host read raises by itself."""
    if device != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def device_trainer(tmp_path: Path, corpus: Path, name: str, decoder: str, device: str = "meta") -> Trainer:
    """The `ptb` preset's optimiser (plain SGD, clipping) on the tiny corpus, on this device."""
    config = apply_overrides(preset_config("tiny"), {
        "data": str(corpus), "decoder": decoder, "device": device, "optimizer": "sgd", "lr": 1.0,
        "clip_grad": 5.0, "batch_size": 8, "max_steps": 2, "monitor_every": 0, "progress": False, "seed": 0})
    return Trainer(config, tmp_path / "run", method=build_method(name, PARAMS.get(name, {})))


TRAINED = [(name, decoder) for name in method_names() for decoder in decoder_names()
           if decoder != "lm" or not build_method(name).needs_latent]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, decoder", TRAINED)
def test_training_steps_make_no_host_sync(name, decoder, device, tiny_corpus, tmp_path, monkeypatch):
    """Two steps of the epoch loop, every method: no host read until the loop's own check at its end."""
    trainer = device_trainer(tmp_path, tiny_corpus, name, decoder, device)
    assert not any(m.sparse for m in trainer.model.modules() if isinstance(m, torch.nn.Embedding))
    checks = []
    monkeypatch.setattr(trainer, "_check_finite", lambda first_bad, epoch: checks.append(trainer.state.step))

    def reached_validation(split):
        raise ReachedValidation(split)

    monkeypatch.setattr(trainer, "run_validation", reached_validation)
    with pytest.raises(ReachedValidation), no_host_sync(device):
        trainer._run_epoch(StopRequest())
    assert trainer.state.step == 2 and checks == [2]          # the loop's one deliberate read, after step 2


def test_sparse_embedding_gradients_stay_on_the_cpu():
    model = TextVAE(30, ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=4))
    assert sparse_embeddings(model, "sgd", 0.0) and model.decoder.embed.sparse
    assert not sparse_embeddings(model.to(META), "sgd", 0.0)
    assert not model.encoder.embed.sparse and not model.decoder.embed.sparse


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decoder", latent_decoder_names())
def test_iw_scoring_of_a_batch_makes_no_host_sync(decoder, device):
    """posterior, the chunked IW log-weights and the IW-NLL of one evaluation batch, as on a GPU."""
    model = TextVAE(30, ModelConfig(decoder=decoder, emb_dim=8, enc_hidden=8, dec_hidden=8,
                                    latent_dim=4)).to(device).eval()
    eps = sentence_noise([0, 1, 2], 10, 4, seed=0).to(device, torch.float64)
    with no_host_sync(device):
        batch = make_batch([[5, 6, 7], [8, 9, 10, 11], [12, 13]], [0, 1, 2]).to(device)
        mu, logvar = posterior(model, build_method("vae"), batch, seed=0)
        with torch.no_grad():
            log_w, log_px = iw_log_weights(lambda z: model.log_px_given_z(batch, z.float()), mu.double(),
                                           logvar.double(), eps, 4)
            nll = iw_nll(log_w)
    assert log_w.shape == (3, 10) and log_px.shape == (3, 10) and nll.shape == (3,)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decoder", decoder_names())
def test_scoring_an_evaluation_batch_reads_nothing_back(decoder, device):
    """score_sentences' work per batch (the copies to the device included) leaves its scores on the device:
    the host reads them once, after the last batch."""
    from textsvae.core.config import EvalConfig
    from textsvae.evaluation.scoring import score_batch

    model = TextVAE(30, ModelConfig(decoder=decoder, emb_dim=8, enc_hidden=8, dec_hidden=8,
                                    latent_dim=4)).to(device).eval()
    sentences = [[5, 6, 7], [8, 9, 10, 11], [12, 13], [14]]
    with no_host_sync(device):
        scores = score_batch(model, build_method("vae"), sentences, [3, 0, 2], EvalConfig(), torch.device(device), 10)
    assert scores.iw_nll.shape == (3,) and scores.iw_nll.device.type == device and scores.n_tokens is None
    if decoder != "lm":
        assert scores.rec.shape == (3,) and scores.mu.shape == (3, 4) and scores.iw_mc_se.dtype == torch.float64


def small_model(decoder: str) -> TextVAE:
    torch.manual_seed(0)
    return TextVAE(50, ModelConfig(decoder=decoder, emb_dim=16, enc_hidden=16, dec_hidden=16, latent_dim=4,
                                   dropout_in=0.0, dropout_out=0.0))


SENTENCES = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16, 17, 18, 19], [20, 21]]


@CUDA
@pytest.mark.parametrize("decoder", latent_decoder_names())
def test_log_likelihood_and_its_gradients_on_the_gpu_equal_the_cpu(decoder):
    """cuDNN's LSTMs (IEEE fp32, see device.exact_fp32_lstms) and the row-max softmax against the CPU's paths."""
    from textsvae.kernels.device import resolve_device

    device = resolve_device("cuda")
    values, grads = {}, {}
    for where in ("cpu", device):
        model = small_model(decoder).to(where)
        batch = make_batch(SENTENCES, list(range(len(SENTENCES)))).to(where)
        z = torch.linspace(-1, 1, len(SENTENCES) * 4).view(len(SENTENCES), 4).to(where)
        log_px = model.log_px_given_z(batch, z)
        log_px.sum().backward()
        values[str(where)] = log_px.detach().cpu()
        grads[str(where)] = [p.grad.cpu() for p in model.decoder.parameters() if p.grad is not None]
    torch.testing.assert_close(values["cuda"], values["cpu"], rtol=1e-5, atol=1e-5)
    for gpu, cpu in zip(grads["cuda"], grads["cpu"]):
        torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)


@CUDA
@pytest.mark.parametrize("decoder", latent_decoder_names())
def test_iw_nll_on_the_gpu_equals_the_cpu(decoder):
    """The same per-sentence draws (CPU generators keyed by sentence) give the same IW-NLL on both devices."""
    from textsvae.core.config import EvalConfig
    from textsvae.evaluation.scoring import score_sentences
    from textsvae.kernels.device import resolve_device

    device = resolve_device("cuda")
    cfg = EvalConfig(iw_samples=20)
    cpu = score_sentences(small_model(decoder), build_method("vae"), SENTENCES, cfg, torch.device("cpu"))
    gpu = score_sentences(small_model(decoder).to(device), build_method("vae"), SENTENCES, cfg, device)
    torch.testing.assert_close(gpu.iw_nll, cpu.iw_nll, rtol=1e-6, atol=1e-6)


@CUDA
def test_bf16_autocast_on_the_gpu_stays_near_fp32():
    device = torch.device("cuda")
    model = small_model("skip").to(device)
    batch = make_batch(SENTENCES, list(range(len(SENTENCES)))).to(device)
    z = torch.zeros(len(SENTENCES), 4, device=device)
    fp32 = model.log_px_given_z(batch, z).detach()
    model.set_precision("bf16")
    bf16 = model.log_px_given_z(batch, z).detach()
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, rtol=2e-2, atol=0.0)


def test_choosing_cuda_makes_cudnn_lstms_compute_in_ieee_fp32_not_tf32(monkeypatch):
    """torch lets cuDNN's fp32 LSTMs use TF32 by default; the suite's fp32 is fp32 on every device."""
    from textsvae.kernels.device import resolve_device

    rnn = torch.backends.cudnn.rnn
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = rnn.fp32_precision
    try:
        rnn.fp32_precision = "tf32"
        resolve_device("cpu")
        assert rnn.fp32_precision == "tf32"
        assert resolve_device("cuda").type == "cuda" and rnn.fp32_precision == "ieee"
    finally:
        rnn.fp32_precision = before


@CUDA
def test_batches_bound_for_the_gpu_are_copied_from_pinned_memory(monkeypatch):
    """A copy from pageable memory may wait for the device's queue: each host tensor is pinned first."""
    pinned = []
    pin = torch.Tensor.pin_memory
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a: pinned.append(t.shape) or pin(t, *a))
    batch = make_batch([[5, 6, 7], [8, 9]], [0, 1])
    moved = batch.to("cuda")
    assert len(pinned) == 5 and moved.tokens.is_cuda and moved.target_steps.is_cuda
    assert torch.equal(moved.tokens.cpu(), batch.tokens) and moved.n_targets == batch.n_targets
    batch.to("cpu")
    assert len(pinned) == 5
