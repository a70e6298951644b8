"""Reconstruction metrics: greedy decodes of the posterior mean against their inputs.

- recon_bleu: corpus BLEU (0-100) of the reconstructions against the inputs, one reference each, computed
  by sacrebleu as multi-bleu.perl does (Papineni et al. 2002): tokenize="none" (the corpora are already
  tokenised, so the words are the whitespace-separated tokens), case kept, no smoothing (a corpus with
  no matching 4-gram scores 0).
- recon_acc: token accuracy (0-1), sum_n #{i < len(x_n): y_n,i == x_n,i} / sum_n len(x_n), the
  positions aligned from the start (a shorter reconstruction misses the rest, a longer one gains nothing).

The reconstruction of x is y = greedy_decode(mu(x)), at most (longest input + 10) words, so a
sentence's reconstruction does not depend on the other sentences of its batch or on the batch size.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ..core.progress import progress
from ..data.batching import bucket_batches
from ..model.decoding import DecodeOptions, decode

if TYPE_CHECKING:
    from ..model.models import TextVAE

EXTRA_WORDS = 10   # a reconstruction may be this many words longer than the longest input


def reconstruct(model: "TextVAE", mu: torch.Tensor, ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """Greedy decodes y_n of z = mu_n (N, D), one per sentence of `ids` and in its order (token ids
    without <s>/</s>), length-bucketed batches of batch_size; at most max_n len(x_n) + 10 words."""
    options = DecodeOptions(strategy="greedy", max_len=max((len(x) for x in ids), default=0) + EXTRA_WORDS)
    out: list[list[int]] = [[] for _ in ids]
    with progress(len(ids), "reconstruct", unit="sentences") as shown:
        for index in bucket_batches([len(x) for x in ids], batch_size):
            for i, y in zip(index, decode(model, mu[index], options)):
                out[i] = y
            shown.update(len(index))
    return out


def recon_bleu(refs: list[str], hyps: list[str]) -> float:
    """Corpus BLEU (0-100) of hyps against refs (one reference per hypothesis), words split on whitespace:
    BP * exp(mean_{n=1..4} log p_n), p_n the clipped n-gram precision, BP = min(1, exp(1 - ref_len / hyp_len))."""
    import sacrebleu

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    return float(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", lowercase=False, smooth_method="none").score)


def token_accuracy(refs: list[list[int]], hyps: list[list[int]]) -> float:
    """sum_n #{i < len(x_n): i < len(y_n) and y_n,i == x_n,i} / sum_n len(x_n), x = refs, y = hyps."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = sum(len(x) for x in refs)
    if total == 0:
        raise ValueError("token accuracy of empty references")
    return sum(sum(a == b for a, b in zip(x, y)) for x, y in zip(refs, hyps)) / total


def reconstruction_metrics(refs: list[list[int]], hyps: list[list[int]],
                           to_text: Callable[[list[int]], str] | None = None) -> dict[str, float]:
    """{recon_bleu, recon_acc} of reconstructions (token ids); BLEU on to_text(ids) (the vocabulary's
    decode), else on the ids as words, which gives the same BLEU for a word vocabulary."""
    text = to_text or (lambda s: " ".join(map(str, s)))
    return {"recon_bleu": recon_bleu([text(x) for x in refs], [text(y) for y in hyps]),
            "recon_acc": token_accuracy(refs, hyps)}
