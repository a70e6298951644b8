"""Decoding (textsvae/model/decoding.py) against the model's own teacher-forced scoring, on tiny models."""
from __future__ import annotations

import pytest
import torch

from textsvae.core.config import ConfigError, ModelConfig
from textsvae.core.decoders import decoder_names, latent_decoder_names
from textsvae.data.batching import make_batch
from textsvae.data.vocab import EOS_ID, PAD_ID
from textsvae.model.decoding import DecodeOptions, _Stepper, decode
from textsvae.model.models import TextVAE

VOCAB = 12


def tiny_model(decoder: str, layers: int = 2, seed: int = 0) -> TextVAE:
    """Weights wider than the init range, so the distributions are far from uniform."""
    torch.manual_seed(seed)
    model = TextVAE(VOCAB, ModelConfig(decoder=decoder, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=4,
                                       dec_layers=layers)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
        model.decoder.out.bias[PAD_ID] = -30.0     # never emitted (PAD is padding, not a word)
    return model


def inputs(model: TextVAE, n: int, seed: int = 1):
    return None if model.is_lm else torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))


def log_p(model: TextVAE, sentences: list[list[int]], z) -> torch.Tensor:
    """log p(y|z) of each sentence (its </s> included) by the model's teacher-forced path."""
    batch = make_batch(sentences, list(range(len(sentences))))
    with torch.no_grad():
        return model.log_px_given_z(batch, z)


@pytest.mark.parametrize("decoder", decoder_names())
def test_beam_of_size_one_is_greedy(decoder):
    model = tiny_model(decoder)
    z = inputs(model, 20)
    n = 20 if z is None else None
    assert decode(model, z, DecodeOptions("beam", beam_size=1), n) == decode(model, z, DecodeOptions("greedy"), n)


@pytest.mark.parametrize("decoder", decoder_names())
def test_greedy_emits_the_argmax_of_the_teacher_forced_distribution(decoder):
    model = tiny_model(decoder)
    z = inputs(model, 30)
    out = decode(model, z, DecodeOptions(max_len=40), None if z is not None else 30)
    assert sum(map(len, out)) > len(out)                 # words, not only </s>
    batch = make_batch(out, list(range(len(out))))
    with torch.no_grad():
        logits = model.logits_for(batch, z)                                      # (N, T, V)
    for row, sentence in enumerate(out):
        emitted = sentence + [EOS_ID] if len(sentence) < 40 else sentence      # at max_len </s> is forced
        assert logits[row, : len(emitted)].argmax(-1).tolist() == emitted


@pytest.mark.parametrize("decoder", decoder_names())
def test_beam_five_scores_at_least_greedy_for_every_sentence(decoder):
    model = tiny_model(decoder, seed=3)
    z = inputs(model, 40)
    n = 40 if z is None else None
    greedy = decode(model, z, DecodeOptions("greedy", max_len=60), n)
    beam = decode(model, z, DecodeOptions("beam", beam_size=5, max_len=60), n)
    if z is None:   # an LM decodes the same sentence from every row
        assert len(set(map(tuple, beam))) == 1
    diff = log_p(model, beam, z) - log_p(model, greedy, z)
    assert (diff >= -1e-5).all(), diff
    assert (diff > 1e-3).any() or decoder == "lm"      # beam search finds better sentences somewhere


def test_length_penalty_prefers_longer_hypotheses():
    """Both runs close the same hypotheses; plain returns the best by log p, length penalty 1 the best by
    log p / (len + 1). So each normalised choice is at least as long, and each wins under its own ranking."""
    model = tiny_model("standard", seed=3)
    z = inputs(model, 40)
    plain = decode(model, z, DecodeOptions("beam", beam_size=5))
    normalised = decode(model, z, DecodeOptions("beam", beam_size=5, length_penalty=1.0))
    assert all(len(n) >= len(p) for n, p in zip(normalised, plain)) and normalised != plain
    lp, ln = log_p(model, plain, z), log_p(model, normalised, z)
    size = lambda out: torch.tensor([len(s) + 1.0 for s in out])  # noqa: E731
    assert (lp >= ln - 1e-4).all() and (ln / size(normalised) >= lp / size(plain) - 1e-5).all()


def test_sampling_is_reproducible_under_a_seed_and_follows_the_model():
    """Sampled first words against softmax of the first step's logits (T = 1), 20,000 draws of one z."""
    model = tiny_model("skip")
    z = inputs(model, 1).expand(20000, -1).contiguous()
    first = lambda seed: [s[0] if s else EOS_ID for s in decode(model, z, DecodeOptions("sample", max_len=1,  # noqa: E731
                                                                                          seed=seed))]
    a, b = first(0), first(0)
    assert a == b and a != first(1)
    with torch.no_grad():
        expected = torch.softmax(_Stepper(model, z[:1], 1).logits(torch.tensor([1])), -1)[0]
    freq = torch.bincount(torch.tensor(a), minlength=VOCAB).double() / len(a)
    assert (freq - expected.double()).abs().max() < 0.015


def test_top_p_keeps_the_smallest_nucleus():
    """With top_p just above the largest word's probability, only the two most likely first words appear."""
    model = tiny_model("standard")
    z = inputs(model, 1).expand(3000, -1).contiguous()
    with torch.no_grad():
        p = torch.softmax(_Stepper(model, z[:1], 1).logits(torch.tensor([1])), -1)[0]
    top = p.sort(descending=True)
    words = decode(model, z, DecodeOptions("sample", max_len=1, top_p=float(top.values[0]) + 1e-4, seed=0))
    seen = {s[0] if s else EOS_ID for s in words}
    assert seen == set(top.indices[:2].tolist())


def test_low_temperature_sampling_is_greedy():
    model = tiny_model("skip")
    z = inputs(model, 25)
    assert decode(model, z, DecodeOptions("sample", temperature=1e-4, seed=5)) == decode(model, z)


@pytest.mark.parametrize("decoder", latent_decoder_names())
def test_step_by_step_logits_equal_the_training_path(decoder):
    """The incremental step computes what training computes at each position: z reaches every layer
    (and, for skip, every upper layer and the softmax) exactly as in `Decoder.hidden_states`."""
    model = tiny_model(decoder, layers=3)
    z = inputs(model, 4)
    sentences = [[5, 6, 7, 8], [9, 4], [10, 11, 4, 5, 6], [7]]
    batch = make_batch(sentences, [0, 1, 2, 3])
    with torch.no_grad():
        teacher = model.logits_for(batch, z)                                      # (B, T, V)
        stepper = _Stepper(model, z, 4)
        steps = [stepper.logits(batch.inputs[:, t]) for t in range(batch.inputs.size(1))]
    torch.testing.assert_close(torch.stack(steps, 1), teacher, rtol=1e-5, atol=1e-5)
    # with the LSTM cut off from z, z + 1 moves every logit by U 1 through the skip softmax V h + U z, and
    # the standard decoder's not at all
    with torch.no_grad():
        cut = model.logits_for(batch, z, cut_recurrent_z=True)
        moved = model.logits_for(batch, z + 1.0, cut_recurrent_z=True)
        u = model.decoder.out.weight[:, model.decoder.hidden:]                    # (V, D) skip, (V, 0) standard
    torch.testing.assert_close(moved - cut, u.sum(1).expand_as(cut), rtol=0, atol=1e-5)
    assert (decoder == "skip") == bool(u.sum(1).abs().max() > 0.1)          # skip: a real shift


def test_max_len_bounds_the_output_and_options_are_checked():
    model = tiny_model("standard")
    with torch.no_grad():
        model.decoder.out.bias[EOS_ID] = -30.0                                    # never ends by itself
    z = inputs(model, 3)
    for options in (DecodeOptions(max_len=7), DecodeOptions("beam", beam_size=3, max_len=7),
                    DecodeOptions("sample", max_len=7)):
        assert [len(s) for s in decode(model, z, options)] == [7, 7, 7]
    for bad, message in [(dict(strategy="top-k"), "decode must be one of"), (dict(beam_size=0), "beam size"),
                         (dict(temperature=0.0), "temperature"), (dict(top_p=0.0), "top-p"),
                         (dict(top_p=1.5), "top-p"), (dict(max_len=0), "max-len")]:
        with pytest.raises(ConfigError, match=message):
            DecodeOptions(**bad)
    with pytest.raises(ConfigError, match="without z"):
        decode(tiny_model("lm"), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="z must be"):
        decode(model, None)
