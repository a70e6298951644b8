"""Beam search against brute force: every sentence of a tiny vocabulary, scored by the model.

Vocabulary of 6 ids: <pad> (never emitted), <s>, </s> and 3 words, so a sentence is any string over
W = {<s>, w_4, w_5, w_6 -> ids 1, 3, 4, 5} of at most MAX_LEN = 4 words, then </s>:
sum_{L=0..4} 4^L = 341 hypotheses. The oracle scores each one exhaustively,

    log p(y_1..y_L </s> | z) = sum_i log softmax(logits(y_<i, z))[y_i]        (i = 1..L+1),

from a table of next-word log-probabilities of all 85 prefixes (one teacher-forced pass each); the
table's sums are checked against the model's own `log_px_given_z` for all 341 sentences. Then:

- a beam as wide as the hypothesis set prunes nothing, so its answer is the exhaustive argmax of
  score / (L + 1)^length_penalty (the ranking `decoding.py` documents), for several penalties;
- a narrow beam's answer is that of a plain-Python transcription of the documented rule (fairseq's:
  of the 2k best continuations, those among the first k that end in </s> are finished, the k best
  others live on; a sentence is done at k finished; at step MAX_LEN + 1 only </s> may follow).
"""
from __future__ import annotations

import itertools

import pytest
import torch

from textsvae.core.config import ModelConfig
from textsvae.data.batching import make_batch
from textsvae.data.vocab import EOS_ID, PAD_ID
from textsvae.model.decoding import DecodeOptions, decode
from textsvae.model.models import TextVAE

VOCAB, MAX_LEN = 6, 4
WORDS = [t for t in range(VOCAB) if t not in (PAD_ID, EOS_ID)]                 # 1, 3, 4, 5
SENTENCES = [list(s) for n in range(MAX_LEN + 1) for s in itertools.product(WORDS, repeat=n)]
PREFIXES = [s for s in SENTENCES if len(s) < MAX_LEN + 1]
ROWS = 16


def tiny_model(decoder: str, seed: int) -> TextVAE:
    """Weights far wider than the init range, so the next-word distributions are far from uniform."""
    torch.manual_seed(seed)
    model = TextVAE(VOCAB, ModelConfig(decoder=decoder, emb_dim=6, enc_hidden=6, dec_hidden=6, latent_dim=3,
                                       dec_layers=2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.8)
        model.decoder.out.bias[PAD_ID] = -30.0     # greedy would emit <pad> as a word; beam masks it
    return model


def latents(model: TextVAE, seed: int = 7) -> torch.Tensor | None:
    return None if model.is_lm else torch.randn(ROWS, model.latent_dim, generator=torch.Generator().manual_seed(seed))


def next_word_table(model: TextVAE, z: torch.Tensor | None) -> list[dict[tuple, list[float]]]:
    """Per row of z: {prefix: log p(. | prefix, z) over the whole vocabulary}, by teacher forcing."""
    batch = make_batch(PREFIXES, list(range(len(PREFIXES))))
    tables = []
    with torch.no_grad():
        for row in range(ROWS):
            zz = None if z is None else z[row:row + 1].expand(len(PREFIXES), -1)
            logp = torch.log_softmax(model.logits_for(batch, zz).double(), -1)        # (P, T, V)
            tables.append({tuple(p): logp[i, len(p)].tolist() for i, p in enumerate(PREFIXES)})
    return tables


def score(table: dict[tuple, list[float]], sentence: list[int]) -> float:
    """log p(sentence </s>): the sum of its next-word log-probabilities."""
    targets = list(sentence) + [EOS_ID]
    return sum(table[tuple(sentence[:i])][w] for i, w in enumerate(targets))


def exhaustive_best(table, length_penalty: float) -> tuple[list[int], float, float]:
    """(argmax, its ranking value, the runner-up's) over all 341 sentences of score / (L + 1)^penalty."""
    ranked = sorted(((score(table, s) / (len(s) + 1) ** length_penalty, s) for s in SENTENCES), reverse=True)
    return ranked[0][1], ranked[0][0], ranked[1][0]


def reference_beam(table, k: int, length_penalty: float) -> list[int]:
    """The rule of `decoding.py`'s docstring, one sentence at a time, in plain Python."""
    return reference_beam_steps(table, k, length_penalty)[0]


def reference_beam_steps(table, k: int, length_penalty: float) -> tuple[list[int], int]:
    """(the answer, the decoder steps taken: the sentence is done at k finished hypotheses)."""
    live = [((), 0.0)]
    finished: list[tuple[float, tuple]] = []
    steps = 0
    for step in range(MAX_LEN + 1):
        steps += 1
        allowed = [EOS_ID] if step == MAX_LEN else [t for t in range(VOCAB) if t != PAD_ID]
        candidates = sorted(((s + table[prefix][w], prefix, w) for prefix, s in live for w in allowed),
                            key=lambda c: -c[0])[:2 * k]
        closing = [(s / (step + 1) ** length_penalty, prefix) for s, prefix, w in candidates[:k] if w == EOS_ID]
        finished = sorted(finished + closing, key=lambda c: -c[0])[:k]
        if len(finished) >= k:
            break
        live = [(prefix + (w,), s) for s, prefix, w in candidates if w != EOS_ID][:k]
    return list(max(finished, key=lambda c: c[0])[1]), steps


@pytest.fixture(scope="module", params=["standard", "skip", "lm"])
def case(request):
    model = tiny_model(request.param, seed={"standard": 0, "skip": 1, "lm": 2}[request.param])
    z = latents(model)
    tables = next_word_table(model, z)
    # the oracle's table agrees with the model's own teacher-forced scoring of every sentence
    batch = make_batch(SENTENCES, list(range(len(SENTENCES))))
    with torch.no_grad():
        for row in (0, ROWS - 1):
            zz = None if z is None else z[row:row + 1].expand(len(SENTENCES), -1)
            own = model.log_px_given_z(batch, zz).tolist()
            assert own == pytest.approx([score(tables[row], s) for s in SENTENCES], abs=1e-4)
    return model, z, tables


def run_beam(model, z, k: int, length_penalty: float = 0.0) -> list[list[int]]:
    return decode(model, z, DecodeOptions("beam", beam_size=k, length_penalty=length_penalty, max_len=MAX_LEN),
                  n=ROWS if z is None else None)


@pytest.mark.parametrize("length_penalty", [0.0, 0.5, 1.0, 2.0])
def test_a_beam_as_wide_as_the_hypothesis_set_finds_the_exhaustive_best(case, length_penalty):
    """k = 341: no hypothesis is ever pruned, so beam search is exact search under its ranking."""
    model, z, tables = case
    out = run_beam(model, z, len(SENTENCES), length_penalty)
    clear = 0
    for row, sentence in enumerate(out):
        best, value, runner_up = exhaustive_best(tables[row], length_penalty)
        got = score(tables[row], sentence) / (len(sentence) + 1) ** length_penalty
        assert got == pytest.approx(value, abs=1e-5), (row, sentence, best)
        if value - runner_up > 1e-4:                 # a clear winner: the very sentence
            assert sentence == best, (row, sentence, best)
            clear += 1
    assert clear >= ROWS // 2                         # the comparison has teeth on most rows


def test_exact_search_beats_greedy_somewhere(case):
    """Greedy (beam 1) is not exact: some row's exhaustive best scores clearly above greedy's sentence, and
    the wide beam returns that better sentence."""
    model, z, tables = case
    greedy = decode(model, z, DecodeOptions("greedy", max_len=MAX_LEN), n=ROWS if z is None else None)
    wide = run_beam(model, z, len(SENTENCES))
    gaps = [score(t, w) - score(t, g) for t, w, g in zip(tables, wide, greedy)]
    assert min(gaps) > -1e-5 and max(gaps) > 1e-3, gaps


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_narrow_beams_follow_the_documented_rule(case, k, length_penalty):
    model, z, tables = case
    out = run_beam(model, z, k, length_penalty)
    assert out == [reference_beam(t, k, length_penalty) for t in tables]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_beam_search_stops_once_every_sentence_is_done(case, k, monkeypatch):
    """The batch runs until its last sentence has k finished hypotheses: as many decoder steps as the
    slowest sentence needs by the reference rule, not max_len + 1 regardless."""
    from textsvae.model.decoding import _Stepper

    model, z, tables = case
    calls = {"n": 0}
    original = _Stepper.logits

    def counted(self, tokens):
        calls["n"] += 1
        return original(self, tokens)

    monkeypatch.setattr(_Stepper, "logits", counted)
    run_beam(model, z, k)
    needed = [reference_beam_steps(t, k, 0.0)[1] for t in tables]
    assert calls["n"] == max(needed)
    for row in range(ROWS):                                             # each sentence alone
        calls["n"] = 0
        decode(model, None if z is None else z[row:row + 1],
               DecodeOptions("beam", beam_size=k, max_len=MAX_LEN), n=1 if z is None else None)
        assert calls["n"] == needed[row], row
    if k == 1 and model.decoder.skip:
        assert min(needed) < MAX_LEN + 1                                # an early stop is exercised
