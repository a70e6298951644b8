"""The LSTM VAE: skip wiring, padding invariance, shapes (docs/protocol.md section 1)."""
from __future__ import annotations

import math

import pytest
import torch

from textsvae.core.config import ModelConfig
from textsvae.data import make_batch
from textsvae.kernels.fast_paths import fast_paths
from textsvae.model.models import TextVAE

V = 30
SENTENCES = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14], [4]]


def model(decoder: str, layers: int = 1, seed: int = 0) -> TextVAE:
    torch.manual_seed(seed)
    cfg = ModelConfig(decoder=decoder, emb_dim=8, enc_hidden=8, dec_hidden=8, dec_layers=layers, latent_dim=4,
                      init_range=0.3, emb_init_range=0.3)
    return TextVAE(V, cfg).eval()


@pytest.mark.parametrize("layers", [1, 2])
def test_skip_reaches_the_logits_without_the_recurrent_path(layers):
    """Skip-VAE: softmax(V h_t + U z). With z cut out of the LSTM (inputs, initial state, deeper layers),
    h_t no longer depends on z, so two z give the same h_t but different logits."""
    m = model("skip", layers)
    batch = make_batch(SENTENCES, [0, 1, 2, 3])
    z1, z2 = torch.randn(4, 4), torch.randn(4, 4)
    with torch.no_grad():
        h1 = m.decoder.hidden_states(batch.inputs, z1, cut_recurrent_z=True)
        h2 = m.decoder.hidden_states(batch.inputs, z2, cut_recurrent_z=True)
        assert torch.equal(h1, h2)
        l1 = m.logits_for(batch, z1, cut_recurrent_z=True)
        l2 = m.logits_for(batch, z2, cut_recurrent_z=True)
    assert l1.shape == (4, batch.inputs.size(1), V)
    assert (l1 - l2).abs().amin() > 0            # every position of every sentence moves
    # the difference is exactly U (z1 - z2), the same at every step
    U = m.decoder.out.weight[:, 8:]
    torch.testing.assert_close(l1 - l2, ((z1 - z2) @ U.T).unsqueeze(1).expand_as(l1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("layers", [1, 2])
def test_standard_decoder_ignores_z_once_the_recurrent_path_is_cut(layers):
    m = model("standard", layers)
    batch = make_batch(SENTENCES, [0, 1, 2, 3])
    z1, z2 = torch.randn(4, 4), torch.randn(4, 4)
    with torch.no_grad():
        assert torch.equal(m.logits_for(batch, z1, cut_recurrent_z=True), m.logits_for(batch, z2, cut_recurrent_z=True))
        # with the recurrent path, z matters for both decoders
        assert not torch.equal(m.logits_for(batch, z1), m.logits_for(batch, z2))
    skip = model("skip", layers)
    with torch.no_grad():
        assert not torch.equal(skip.logits_for(batch, z1), skip.logits_for(batch, z2))


def test_decoder_input_sizes_follow_the_protocol():
    std, skip = model("standard", 3), model("skip", 3)
    # layer 1 reads [emb; z]; deeper layers read h (standard) or [h; z] (skip); the softmax reads h or [h; z]
    assert [l.input_size for l in std.decoder.layers] == [8 + 4, 8, 8]
    assert [l.input_size for l in skip.decoder.layers] == [8 + 4, 8 + 4, 8 + 4]
    assert std.decoder.out.in_features == 8 and skip.decoder.out.in_features == 8 + 4
    lm = model("lm")
    assert lm.encoder is None and lm.decoder.layers[0].input_size == 8
    with pytest.raises(RuntimeError, match="no encoder"):
        lm.encode(make_batch(SENTENCES, [0]))


@pytest.mark.parametrize("decoder", ["standard", "skip", "lm"])
def test_extra_padding_changes_nothing(decoder):
    """Padding sits after the last real token and is masked: the encoder reads the LSTM output at the
    last real token (causal), the decoder's loss counts only real targets."""
    m = model(decoder)
    tight = make_batch(SENTENCES, [0, 1, 2, 3])
    padded = make_batch(SENTENCES, [0, 1, 2, 3], pad_to=25)
    z = None if decoder == "lm" else torch.randn(4, 4)
    with torch.no_grad():
        if decoder != "lm":
            for a, b in zip(m.encode(tight), m.encode(padded)):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        lp_tight, lp_padded = m.log_px_given_z(tight, z), m.log_px_given_z(padded, z)
    torch.testing.assert_close(lp_tight, lp_padded, rtol=0, atol=1e-5)
    # and each sentence alone (no neighbours, no padding) gives the same value
    for row, i in enumerate(range(4)):
        alone = make_batch(SENTENCES, [i])
        with torch.no_grad():
            one = m.log_px_given_z(alone, None if z is None else z[row:row + 1])
        torch.testing.assert_close(one, lp_tight[row:row + 1], rtol=0, atol=1e-5)


def test_log_px_given_z_matches_a_hand_computed_softmax():
    """log p(x|z) = sum_t log softmax(logits_t)[x_t] over the n + 1 real targets."""
    m = model("skip")
    batch = make_batch(SENTENCES, [0, 1])
    z = torch.randn(2, 4)
    with torch.no_grad():
        logits = m.logits_for(batch, z)
        log_probs = torch.log_softmax(logits, -1).gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)
        expected = (log_probs * batch.target_mask).sum(-1)
        torch.testing.assert_close(m.log_px_given_z(batch, z), expected, rtol=0, atol=1e-5)


def test_several_samples_of_z_decode_as_one_batch():
    m = model("skip")
    batch = make_batch(SENTENCES, [0, 1, 2])
    z = torch.randn(3, 5, 4)                       # (B, S, D)
    with torch.no_grad():
        together = m.log_px_given_z(batch, z)      # (B, S)
        apart = torch.stack([m.log_px_given_z(batch, z[:, s]) for s in range(5)], dim=1)
    assert together.shape == (3, 5)
    torch.testing.assert_close(together, apart, rtol=0, atol=1e-5)


def test_sample_shapes_and_generator():
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert TextVAE.sample(mu, logvar, generator=g1).shape == (3, 4)
    assert TextVAE.sample(mu, logvar, 7, generator=g1).shape == (3, 7, 4)
    g1.manual_seed(1)
    assert torch.equal(TextVAE.sample(mu, logvar, generator=g1), TextVAE.sample(mu, logvar, generator=g2))
    # z = mu + sigma * eps: sigma = 0 returns mu; sigma = 2 scales the generator's standard normal draws
    assert torch.equal(TextVAE.sample(torch.ones(2, 4), torch.full((2, 4), -1e4)), torch.ones(2, 4))
    g1.manual_seed(3)
    z = TextVAE.sample(torch.ones(2, 4), torch.full((2, 4), math.log(4.0)), 5, generator=g1)
    torch.testing.assert_close(z, 1 + 2 * torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3)))


def test_init_ranges():
    """U(-r, r): every parameter tensor (16 or more entries) reaches past r / 2 and stays within r."""
    torch.manual_seed(0)
    m = TextVAE(V, ModelConfig(init_range=0.01, emb_init_range=0.1))
    for name, p in m.named_parameters():
        bound = 0.1 if "embed" in name else 0.01
        assert bound / 2 < p.abs().max() <= bound, name


def test_cpu_dropout_is_inverted_dropout_with_rate_p():
    from textsvae.kernels.dropout import Dropout

    drop = Dropout(0.3)
    x = torch.full((200_000,), 2.0, requires_grad=True)
    torch.manual_seed(0)
    y = drop(x)
    assert torch.unique(y).tolist() == pytest.approx([0.0, 2.0 / 0.7])
    assert (y == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)       # 0.3 +- 5 sd
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.7)                    # d y / d x = mask / (1 - p)
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)                                                # repeatable under a seed
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))


@pytest.mark.parametrize("decoder,layers,dtype", [("standard", 1, torch.float64), ("skip", 1, torch.float64),
                                                  ("skip", 2, torch.float64), ("standard", 2, torch.float64),
                                                  ("standard", 1, torch.float32), ("skip", 2, torch.float32)])
def test_first_layer_over_samples_equals_the_lstm_over_the_repeated_input(monkeypatch, decoder, layers, dtype):
    """Without gradients, S samples of each sentence go through the first decoder layer with each
    sentence's input projection computed once and tanh as 2 sigmoid(2x) - 1 (textsvae.kernels.sample_lstm):
    log p(x|z) equals nn.LSTM's (to 1e-10 nats in fp64, 1e-4 in fp32)."""
    from textsvae.kernels import sample_lstm

    torch.manual_seed(0)
    model = TextVAE(40, ModelConfig(decoder=decoder, emb_dim=8, enc_hidden=8, dec_hidden=6, latent_dim=3,
                                    dec_layers=layers)).to(dtype).eval()
    for p in model.parameters():          # larger than the init range, so the gates saturate unevenly
        torch.nn.init.normal_(p, std=0.5)
    batch = make_batch([[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]], [0, 1, 2])
    z = torch.randn(3, 4, 3, dtype=dtype)
    runs = []
    monkeypatch.setattr(sample_lstm, "lstm_over_samples",
                        lambda *a, f=sample_lstm.lstm_over_samples: runs.append(1) or f(*a))
    with torch.no_grad():
        fast = model.log_px_given_z(batch, z)
        assert runs == [1]
        with fast_paths(sample_lstm=False):
            plain = model.log_px_given_z(batch, z)
    assert runs == [1]
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(fast, plain, rtol=0, atol=tolerance)
    per_sample = torch.stack([model.log_px_given_z(batch, z[:, s]).detach() for s in range(4)], 1)
    torch.testing.assert_close(fast, per_sample, rtol=0, atol=tolerance)


def test_skip_decoder_fp32_gradients_equal_the_plain_output_layer():
    """The skip decoder's fused output layer with z's part once per sample (ops.skip_cross_entropy)
    gives log p(x|z) and every parameter gradient of the plain concatenated layer, in fp32."""
    torch.manual_seed(0)
    m = TextVAE(40, ModelConfig(decoder="skip", emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=4,
                                dropout_in=0.0, dropout_out=0.0))
    batch = make_batch([[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]], [0, 1, 2])
    z = torch.randn(3, 4, requires_grad=True)
    results = []
    for fused in (True, False):
        m.zero_grad()
        z.grad = None
        with fast_paths(fused_output=fused):
            log_p = m.log_px_given_z(batch, z)
        log_p.sum().backward()
        results.append([log_p.detach(), z.grad.clone()] + [p.grad.clone() for p in m.decoder.parameters()])
    for fused, plain in zip(*results):
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-6)
