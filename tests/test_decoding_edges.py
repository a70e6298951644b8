"""Decoding's nucleus rule and its early stop, against hand-made distributions and the outputs themselves.

- top-p (Holtzman et al. 2020, as `decoding.py` documents it): keep the smallest set of most likely words
  whose probability reaches top_p. With p = (1/2, 1/4, 1/8, 1/8) (exact in float32) and top_p = 1/2 the
  set is the first word alone; with top_p = 3/4 the first two, drawn 2 : 1.
- greedy stops once every row has emitted </s>: it runs max_len + 1 steps at most and otherwise exactly
  one step more than the longest sentence it returns.
"""
from __future__ import annotations

import torch

from textsvae.core.config import ModelConfig
from textsvae.data.vocab import EOS_ID, PAD_ID
from textsvae.model.decoding import DecodeOptions, _sample, _Stepper, decode
from textsvae.model.models import TextVAE

P = torch.tensor([[0.5, 0.25, 0.125, 0.125]])


def draws(top_p: float, n: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    logits = torch.log(P).expand(n, -1)
    return _sample(logits, 1.0, top_p, g)


def test_nucleus_is_the_smallest_set_reaching_top_p():
    assert set(draws(0.5).tolist()) == {0}                      # the first word alone reaches 1/2
    two = draws(0.75)
    assert set(two.tolist()) == {0, 1}
    assert abs(float((two == 0).double().mean()) - 2 / 3) < 0.03   # renormalised within the nucleus
    assert set(draws(0.5 + 1e-4).tolist()) == {0, 1}
    assert set(draws(1.0).tolist()) == {0, 1, 2, 3}


def tiny_model(seed: int) -> TextVAE:
    torch.manual_seed(seed)
    model = TextVAE(8, ModelConfig(emb_dim=6, enc_hidden=6, dec_hidden=6, latent_dim=3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.8)
        model.decoder.out.bias[PAD_ID] = -30.0
        model.decoder.out.bias[EOS_ID] = 1.0               # sentences end early, at different steps
    return model


def count_steps(monkeypatch) -> dict:
    calls = {"n": 0}
    original = _Stepper.logits

    def counted(self, tokens):
        calls["n"] += 1
        return original(self, tokens)

    monkeypatch.setattr(_Stepper, "logits", counted)
    return calls


def test_greedy_stops_when_every_row_has_ended(monkeypatch):
    model = tiny_model(4)
    z = torch.randn(12, 3, generator=torch.Generator().manual_seed(2))
    calls = count_steps(monkeypatch)
    out = decode(model, z, DecodeOptions("greedy", max_len=30))
    longest = max(map(len, out))
    assert longest < 30 and len(set(map(len, out))) > 1           # rows end at different steps, all early
    assert calls["n"] == longest + 1
    calls["n"] = 0
    capped = decode(model, z, DecodeOptions("greedy", max_len=2))
    assert calls["n"] == min(longest + 1, 3) and max(map(len, capped)) <= 2


def test_decode_checks_its_inputs_with_one_line_errors():
    import pytest

    from textsvae.core.config import ConfigError

    model = tiny_model(4)
    lm = TextVAE(8, ModelConfig(decoder="lm", emb_dim=6, enc_hidden=6, dec_hidden=6, latent_dim=3)).eval()
    assert len(decode(lm, None, n=1)) == 1                                # one sentence is allowed
    for n in (None, 0):
        with pytest.raises(ConfigError) as info:
            decode(lm, None, n=n)
        assert str(info.value) == f"the number of sentences must be >= 1, got {n}"
    with pytest.raises(ConfigError) as info:
        decode(lm, torch.zeros(2, 3))
    assert str(info.value) == "an LSTM language model (decoder 'lm') decodes without z"
    for z in (None, torch.zeros(2, 4), torch.zeros(3), torch.zeros(2, 1, 3)):
        with pytest.raises(ConfigError) as info:
            decode(model, z)
        assert str(info.value) == "z must be (N, 3) for this decoder"
    with pytest.raises(ConfigError) as info:
        DecodeOptions("top-k")
    assert str(info.value) == "decode must be one of greedy, beam, sample, got 'top-k'"


def test_a_beam_wider_than_the_hypotheses_stops_after_max_len_plus_one_steps(monkeypatch):
    """max_len 1 over 6 emittable ids (all but <pad> and </s>) gives 7 sentences; a beam of 10 keeps every
    one, finishes them all at step 2 (7 < 10 finished, but no step is left) and returns the best."""
    from textsvae.data.batching import make_batch

    model = tiny_model(4)
    z = torch.randn(3, 3, generator=torch.Generator().manual_seed(5))
    calls = count_steps(monkeypatch)
    out = decode(model, z, DecodeOptions("beam", beam_size=10, max_len=1))
    assert calls["n"] == 2
    words = [t for t in range(8) if t not in (PAD_ID, EOS_ID)]
    candidates = [[]] + [[w] for w in words]
    with torch.no_grad():
        for row in range(3):
            batch = make_batch(candidates, list(range(len(candidates))))
            scores = model.log_px_given_z(batch, z[row:row + 1].expand(len(candidates), -1))
            assert out[row] == candidates[int(scores.argmax())]
