"""Held-out evaluation of a model on sentences (docs/protocol.md section 4): Rec, KL, ELBO, IW-NLL, PPL, MI, AU, KL(q(z)||p(z)).

IW-NLL decodes sentences AND importance samples together: a batch of B sentences times a chunk
of S samples is one decoder pass of B*S rows, with S chosen so the chunk's logits
(targets x S x vocab x 4 bytes) fit `eval.mem_budget_mb`. Every random draw is keyed by
(eval_seed, sentence position in the split), so the numbers do not depend on the batch size,
the padding or the order of evaluation.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..core.config import ConfigError, EvalConfig, replace_eval
from ..core.metric_registry import latent_metric_names, metric_names
from ..data.batching import Batch, bucket_batches, make_batch, to_device
from ..kernels.metrics import (active_units, aggregate_posterior_terms, iw_log_weights, iw_nll, iw_relative_se,
                      kl_per_dimension, kl_total, mutual_information_minibatch, perplexity, standard_error)
from ..core.progress import progress

if TYPE_CHECKING:
    from ..methods import Method
    from ..model.models import TextVAE

log = logging.getLogger(__name__)
HE_MI_BATCH = 32  # He et al.'s evaluation minibatch, for their per-minibatch MI
WORKER_POLL_S = 0.5  # how often the progress of forked scoring workers is read


@dataclass
class SentenceScores:
    """Per-sentence results in split order (row n is sentence n)."""

    n_tokens: torch.Tensor             # (N,) targets: words + end-of-sentence
    iw_nll: torch.Tensor               # (N,) double; the exact NLL for an LM
    iw_mc_se: torch.Tensor             # (N,) delta-method Monte-Carlo SE of each IW estimate
    rec: torch.Tensor | None = None    # (N,) -mean_k log p(x|z_k) over the K importance samples
    mu: torch.Tensor | None = None     # (N, D) double
    logvar: torch.Tensor | None = None


# -- determinism and memory --------------------------------------------------------------------------
def sentence_noise(index: list[int], n_samples: int, dim: int, seed: int) -> torch.Tensor:
    """(B, K, D) standard normal noise; row b is a pure function of (seed, index[b]) (CPU generators)."""
    out = torch.empty(len(index), n_samples, dim)
    g = torch.Generator()
    for row, i in enumerate(index):
        g.manual_seed(seed * 1_000_003 + int(i))
        out[row] = torch.randn(n_samples, dim, generator=g)
    return out


def samples_per_chunk(n_targets: int, vocab_size: int, mem_budget_mb: int, k: int) -> int:
    """Largest S <= K with n_targets * S * vocab * 4 bytes <= budget (at least 1)."""
    per_sample = max(n_targets, 1) * vocab_size * 4
    return max(1, min(k, (mem_budget_mb * 2**20) // per_sample))


def eval_batches(sentences: list[list[int]], batch_size: int, vocab_size: int, mem_budget_mb: int) -> list[list[int]]:
    """Length-bucketed index lists, split further where one sample's logits alone exceed the budget."""
    budget_targets = max(1, (mem_budget_mb * 2**20) // (vocab_size * 4))
    out = []
    for index in bucket_batches([len(s) for s in sentences], batch_size):
        part, targets = [], 0
        for i in index:
            t = len(sentences[i]) + 1
            if part and targets + t > budget_targets:
                out.append(part)
                part, targets = [], 0
            part.append(i)
            targets += t
        out.append(part)
    return out


def posterior(model: "TextVAE", method: "Method", batch: Batch, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) through the run's method (SA-VAE refines them, turning autograd on for itself), with the
    global RNG forked and seeded, so a stochastic refinement is repeatable; detached."""
    devices = list(range(torch.cuda.device_count())) if batch.tokens.is_cuda else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        mu, logvar = method.posterior(model, batch)
    return mu.detach(), logvar.detach()


def encode_ids(model: "TextVAE", method: "Method", ids: list[list[int]], eval_cfg: EvalConfig,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar), each (N, latent_dim), of q(z|x) for token-id sentences in the order given
    (length-bucketed batches of eval_batch_size, each through `posterior` with seed eval_seed)."""
    if model.is_lm:
        raise ConfigError("an LSTM language model (decoder 'lm') has no encoder")
    mu = torch.zeros(len(ids), model.latent_dim, device=device)
    logvar = torch.zeros_like(mu)
    for index in bucket_batches([len(s) for s in ids], eval_cfg.eval_batch_size):
        batch = make_batch(ids, index).to(device)
        m, lv = posterior(model, method, batch, eval_cfg.eval_seed)
        mu[batch.index], logvar[batch.index] = m, lv
    return mu, logvar


# -- per-sentence scores ---------------------------------------------------------------------------
def score_sentences(model: "TextVAE", method: "Method", sentences: list[list[int]], eval_cfg: EvalConfig,
                    device: torch.device, iw_samples: int | None = None, pad_to: int | None = None,
                    keys: list[int] | None = None) -> SentenceScores:
    """IW-NLL (exact NLL for an LM), Rec and q's parameters of every sentence; pad_to adds padding (tests).

    keys[i] is sentence i's position in its split, which keys its random draws (default: i).
    With eval.workers > 1 on the CPU the sentences are scored by that many forked processes.
    The progress shown counts sentences scored.
    """
    if not sentences:
        raise ConfigError("no sentences to evaluate")
    k = eval_cfg.iw_samples if iw_samples is None else iw_samples
    with progress(len(sentences), "iw-nll" if model.is_lm else f"iw-nll K={k}", unit="sentences") as shown:
        if eval_cfg.workers > 1 and device.type == "cpu" and len(sentences) > 1 and _can_fork():
            return _score_in_workers(model, method, sentences, eval_cfg, device, k, pad_to, keys, shown.update)
        return _score_here(model, method, sentences, eval_cfg, device, k, pad_to, keys, shown.update)


def _score_here(model: "TextVAE", method: "Method", sentences: list[list[int]], eval_cfg: EvalConfig,
                device: torch.device, k: int, pad_to: int | None, keys: list[int] | None,
                scored: Callable[[int], None]) -> SentenceScores:
    """score_sentences in this process, calling scored(n) after each batch of n sentences."""
    was_training, precision = model.training, model.autocast_dtype
    model.eval()
    model.set_precision(eval_cfg.eval_precision)
    batches = eval_batches(sentences, eval_cfg.eval_batch_size, model.vocab_size, eval_cfg.mem_budget_mb)
    parts = []
    try:
        for index in batches:
            parts.append(score_batch(model, method, sentences, index, eval_cfg, device, k, pad_to, keys))
            scored(len(index))
    finally:
        model.train(was_training)
        model.autocast_dtype = precision
    on_device = _merge_scores(parts, batches, len(sentences))   # read back once, not once per batch
    n_tokens = torch.tensor([len(s) + 1 for s in sentences], dtype=torch.long)
    return SentenceScores(n_tokens, *(None if t is None else t.cpu() for t in (
        on_device.iw_nll, on_device.iw_mc_se, on_device.rec, on_device.mu, on_device.logvar)))


def score_batch(model: "TextVAE", method: "Method", sentences: list[list[int]], index: list[int], eval_cfg: EvalConfig,
                device: torch.device, k: int, pad_to: int | None = None,
                keys: list[int] | None = None) -> SentenceScores:
    """The scores of the sentences at `index`, left on `device` (n_tokens None); no host sync on a GPU."""
    batch = make_batch(sentences, index, pad_to=pad_to).to(device)
    if model.is_lm:
        with torch.no_grad():
            nll = -model.log_px_given_z(batch, None).double()
        return SentenceScores(None, nll, torch.zeros_like(nll))
    mu, logvar = posterior(model, method, batch, eval_cfg.eval_seed)
    mu, logvar = mu.double(), logvar.double()
    noise_keys = index if keys is None else [keys[i] for i in index]
    eps = to_device(sentence_noise(noise_keys, k, model.latent_dim, eval_cfg.eval_seed), device).double()
    chunk = samples_per_chunk(batch.n_targets, model.vocab_size, eval_cfg.mem_budget_mb, k)
    with torch.no_grad():
        log_w, log_px = iw_log_weights(lambda z: model.log_px_given_z(batch, z.float()), mu, logvar, eps, chunk)
    nll = iw_nll(log_w).double()
    mc_se = iw_relative_se(log_w).double() if k > 1 else torch.full_like(nll, float("nan"))
    return SentenceScores(None, nll, mc_se, (-log_px.mean(1)).double(), mu, logvar)


# -- several processes ---------------------------------------------------------------------------------
_FORKED: dict[str, Any] = {}   # what forked workers inherit (the model is shared copy-on-write, not pickled)


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _score_shard(shard: list[int]) -> SentenceScores:
    """In a forked worker: score the sentences at these positions with this worker's share of the threads."""
    a = _FORKED
    torch.set_num_threads(a["threads"])
    sentences = [a["sentences"][i] for i in shard]
    keys = [a["keys"][i] for i in shard]
    done = a["done"]

    def scored(n: int) -> None:
        with done.get_lock():
            done.value += n

    return _score_here(a["model"], a["method"], sentences, a["eval_cfg"], a["device"], a["k"], a["pad_to"], keys,
                       scored)


def _score_in_workers(model: "TextVAE", method: "Method", sentences: list[list[int]], eval_cfg: EvalConfig,
                      device: torch.device, k: int, pad_to: int | None, keys: list[int] | None,
                      scored: Callable[[int], None]) -> SentenceScores:
    """score_sentences over eval.workers forked processes, each with threads // workers torch threads;
    the workers count the sentences they score in a shared counter, passed on to scored(n).

    On a few cores, processes with one thread each keep the cores busier than one process whose
    threads wait for each other at every op (the same reason `bench --jobs` packs runs). Sentences
    are dealt round-robin in length order, so every worker gets a similar mix; each sentence keeps
    its own random draws (keyed by its position), so the scores do not depend on the split (SA-VAE's
    refinement draws excepted: they follow the batch, as they do with eval_batch_size).
    """
    import multiprocessing

    workers = min(eval_cfg.workers, len(sentences))
    by_length = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    shards = [by_length[w::workers] for w in range(workers)]
    context = multiprocessing.get_context("fork")
    done = context.Value("q", 0)
    _FORKED.update(model=model, method=method, sentences=sentences, eval_cfg=replace(eval_cfg, workers=1),
                   device=device, k=k, pad_to=pad_to, keys=list(range(len(sentences))) if keys is None else keys,
                   threads=max(1, torch.get_num_threads() // workers), done=done)
    try:
        with context.Pool(workers) as pool:
            result, seen = pool.map_async(_score_shard, shards), 0
            while not result.ready():
                result.wait(WORKER_POLL_S)
                value = done.value
                scored(value - seen)
                seen = value
            parts = result.get()
        scored(done.value - seen)
    finally:
        _FORKED.clear()
    return _merge_scores(parts, shards, len(sentences))


def _merge_scores(parts: list[SentenceScores], shards: list[list[int]], n: int) -> SentenceScores:
    """Put each shard's rows back at its sentences' positions (on the parts' device)."""
    def gather(name: str) -> torch.Tensor | None:
        first = getattr(parts[0], name)
        if first is None:
            return None
        out = first.new_zeros((n, *first.shape[1:]))
        for part, shard in zip(parts, shards):
            out[torch.tensor(shard, device=out.device)] = getattr(part, name)
        return out

    return SentenceScores(**{f.name: gather(f.name) for f in fields(SentenceScores)})


# -- split-level metrics ------------------------------------------------------------------------------
def latent_metrics(mu: torch.Tensor, logvar: torch.Tensor, eval_cfg: EvalConfig, device: torch.device,
                   mi_batch: bool | int = False, lengths: list[int] | None = None) -> dict[str, Any]:
    """KL, MI (with its Monte-Carlo standard error), KL(q(z)||p(z)) and AU from q's parameters (N, D)
    over the whole split, in split order; `lengths` (one per row) only for He et al.'s per-minibatch MI.

    MI and the aggregate KL use generator seed eval_seed + 1 on `device`, as validation does.
    """
    mu_d, logvar_d = mu.to(device, torch.float64), logvar.to(device, torch.float64)
    gen = torch.Generator(device=device).manual_seed(eval_cfg.eval_seed + 1)
    agg = aggregate_posterior_terms(mu_d, logvar_d, generator=gen, n_samples=eval_cfg.mi_samples)
    au, variances = active_units(mu_d, eval_cfg.au_threshold)
    out = {"kl": float(kl_total(mu, logvar).mean()), "kl_per_dim": kl_per_dimension(mu, logvar).tolist(),
           "mi": agg["mi"], "mi_se": agg["mi_se"], "mi_n": mu.size(0), "mi_samples": eval_cfg.mi_samples, "agg_kl": agg["agg_kl"],
           "au": au, "au_threshold": eval_cfg.au_threshold, "au_variances": variances.cpu().tolist()}
    if mi_batch:
        size = HE_MI_BATCH if mi_batch is True else int(mi_batch)
        gen = torch.Generator(device=device).manual_seed(eval_cfg.eval_seed + 1)
        if lengths is None:
            raise ConfigError("He et al.'s per-minibatch MI needs the sentence lengths")
        out["mi_minibatch"] = mutual_information_minibatch(mu_d, logvar_d, lengths, size, gen, eval_cfg.mi_samples)
        out["mi_minibatch_size"] = size
    return out


def split_means(scores: SentenceScores) -> dict[str, Any]:
    """Split means per sentence (nats) and PPL = exp(sum NLL / sum tokens incl. end-of-sentence)."""
    n, tokens = scores.iw_nll.numel(), int(scores.n_tokens.sum())
    total = float(scores.iw_nll.sum())
    out = {"iw_nll": total / n, "iw_nll_se": standard_error(scores.iw_nll), "ppl": perplexity(total, tokens),
           "iw_nll_mc_se": None if bool(scores.iw_mc_se.isnan().any())
           else float(scores.iw_mc_se.pow(2).sum().sqrt()) / n,
           "n_sentences": n, "n_tokens": tokens}
    return out


def sentence_columns(scores: SentenceScores) -> dict[str, Any]:
    """The per-sentence scores as columns in split order (docs/protocol.md section 6.2).

    sentence: position in the split; n_tokens: targets (words + end-of-sentence); iw_ll = -IW-NLL, the
    K-sample estimate of log p(x) (the exact log-likelihood for an LM), so -mean(iw_ll) is the split's
    iw_nll; iw_mc_se: its delta-method Monte-Carlo SE. With a z also rec = -mean_k log p(x|z_k),
    kl = KL(q(z|x) || p(z)) in closed form, elbo = -(rec + kl), and q's parameters mu and logvar (D each).
    """
    n = scores.iw_nll.numel()
    out: dict[str, Any] = {"sentence": torch.arange(n).numpy(), "n_tokens": scores.n_tokens.numpy(),
                           "iw_ll": (-scores.iw_nll).double().numpy(), "iw_mc_se": scores.iw_mc_se.double().numpy()}
    if scores.mu is not None:
        kl = kl_total(scores.mu, scores.logvar).double()
        rec = scores.rec.double()
        out.update({"elbo": (-(rec + kl)).numpy(), "rec": rec.numpy(), "kl": kl.numpy(),
                    "mu": scores.mu.double().tolist(), "logvar": scores.logvar.double().tolist()})
    return out


def evaluate_model(model: "TextVAE", method: "Method", sentences: list[list[int]], eval_cfg: EvalConfig,
                   device: torch.device, iw_samples: int | None = None, mi_batch: bool | int = False,
                   recon: bool = False, vocab=None) -> dict[str, Any]:
    """All section-4 metrics of `sentences`: `evaluate_scored`'s metrics without the per-sentence scores."""
    return evaluate_scored(model, method, sentences, eval_cfg, device, iw_samples, mi_batch, recon, vocab)[0]


def evaluate_scored(model: "TextVAE", method: "Method", sentences: list[list[int]], eval_cfg: EvalConfig,
                    device: torch.device, iw_samples: int | None = None, mi_batch: bool | int = False,
                    recon: bool = False, vocab=None) -> tuple[dict[str, Any], SentenceScores]:
    """All section-4 metrics of `sentences` (token ids without <s>/</s>); per-sentence means in nats.

    rec: -mean_k log p(x|z_k) over the K importance samples (an unbiased Rec estimate with K samples);
    elbo = -(rec + kl); ppl_bound = exp((sum rec + sum kl) / tokens). For an LM, iw_nll is the exact
    NLL, elbo = -iw_nll and the z-metrics are None. mi_batch adds He et al.'s per-minibatch MI
    (their batches of one length, at most 32 rows, or that many for an int) as mi_minibatch;
    `mi` is always over the whole split. recon adds recon_bleu and recon_acc (reconstruction.py) of the
    greedy decodes of the posterior means behind kl and mi, BLEU on vocab.decode's text (without a vocab,
    on the ids as words); None for an LM. Also returns the per-sentence scores behind the means.
    """
    if iw_samples is not None:
        eval_cfg = replace_eval(eval_cfg, iw_samples=iw_samples)
    k = eval_cfg.iw_samples
    if not sentences:
        raise ConfigError("no sentences to evaluate")
    start = time.perf_counter()
    scores = score_sentences(model, method, sentences, eval_cfg, device)
    out: dict[str, Any] = split_means(scores)
    if model.is_lm:   # no z: its metrics and the settings they depend on are None
        asked = ("",) + (("mi_batch",) if mi_batch else ())
        out.update({key: None for key in latent_metric_names(asked)})
        out.update({key: None for key in ("kl_per_dim", "mi_n", "mi_samples", "au_variances")})
        out.update({"elbo": -out["iw_nll"], "ppl_bound": out["ppl"], "au_threshold": eval_cfg.au_threshold,
                    "iw_samples": None})
    else:
        lengths = scores.n_tokens.tolist() if mi_batch else None   # only He et al.'s batches need them
        out.update(latent_metrics(scores.mu, scores.logvar, eval_cfg, device, mi_batch, lengths))
        rec_sum = float(scores.rec.sum())
        kl_sum = out["kl"] * out["n_sentences"]
        out.update({"rec": rec_sum / out["n_sentences"], "elbo": -(rec_sum + kl_sum) / out["n_sentences"],
                    "ppl_bound": perplexity(rec_sum + kl_sum, out["n_tokens"]), "iw_samples": k})
    if recon:
        out.update(dict.fromkeys(metric_names(("recon",))) if model.is_lm else _reconstruction(model, scores.mu, sentences,
                                                                                 eval_cfg, vocab))
    out.update({"eval_seed": eval_cfg.eval_seed, "eval_batch_size": eval_cfg.eval_batch_size,
                "eval_precision": eval_cfg.eval_precision,
                "mem_budget_mb": eval_cfg.mem_budget_mb, "decoder": model.cfg.decoder,
                "method": getattr(method, "name", None), "device": str(device), "split": None,
                "seconds": time.perf_counter() - start})
    return out, scores


def _reconstruction(model: "TextVAE", mu: torch.Tensor, sentences: list[list[int]], eval_cfg: EvalConfig,
                    vocab) -> dict[str, Any]:
    from .reconstruction import reconstruct, reconstruction_metrics

    hyps = reconstruct(model, mu, sentences, eval_cfg.eval_batch_size)
    return reconstruction_metrics(sentences, hyps, None if vocab is None else vocab.decode)
