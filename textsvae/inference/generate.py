"""Text from a trained model: prior samples, reconstructions, interpolations, and the latents of a corpus.

- sample: z ~ N(0, I) from a generator seeded by the options' seed, decoded (an LM decodes without z).
- reconstruct: z = mu of q(z|x), or z ~ q(z|x) = N(mu, diag exp(logvar)), decoded (Bowman et al. 2016).
- interpolate: z(t) = (1 - t) z_A + t z_B at t = 0, 1/(steps - 1), ..., 1, decoded.

Functions here take the model pieces, not `api.Run`, so that `api` builds on them.
"""
from __future__ import annotations

import io
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

import torch

from ..core.config import ConfigError, EvalConfig, RunConfig
from ..core.io import atomic_write_bytes
from ..core.progress import progress
from ..data.corpus import split_labels
from ..data.vocab import UNK_ID, UNK_SPELLINGS
from ..evaluation.scoring import encode_ids
from ..model.decoding import DecodeOptions, decode

log = logging.getLogger(__name__)
Z_MODES = ("mean", "sample")
DECODE_FIELDS = tuple(f.name for f in fields(DecodeOptions))


# -- checks ------------------------------------------------------------------------------------------
def decode_options(**options: Any) -> DecodeOptions:
    """DecodeOptions from keyword arguments named as its fields; an unknown name is a one-line ConfigError."""
    unknown = sorted(set(options) - set(DECODE_FIELDS))
    if unknown:
        raise ConfigError(f"unknown decoding option(s) {', '.join(unknown)}; valid options: {', '.join(DECODE_FIELDS)}")
    return DecodeOptions(**options)


def check_at_least(value: int, minimum: int, name: str) -> None:
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")


def require_latent(model, command: str) -> None:
    """Refuse an LSTM language model (decoder 'lm') for a command that needs q(z|x) or z."""
    if model.is_lm:
        raise ConfigError(f"an LSTM language model has no encoder: {command} needs a VAE run "
                          f"(decoder standard or skip); this run's decoder is 'lm'")


def check_sentences(sentences: list[str]) -> None:
    """Refuse a single string (not a list), no sentences, or an empty one (numbered from 1)."""
    if isinstance(sentences, str):
        raise TypeError("expected a list of sentences, got one string")
    if not sentences:
        raise ConfigError("no sentences given")
    for i, sentence in enumerate(sentences, 1):
        if not sentence.split():
            raise ConfigError(f"sentence {i} is empty")


def count_unknown(vocab, sentences: Iterable[str]) -> int:
    """Words read as <unk> that were not written as an unknown-token spelling (<unk>, _UNK)."""
    total = 0
    for sentence in sentences:
        written = sum(w in UNK_SPELLINGS for w in sentence.split())
        total += sum(i == UNK_ID for i in vocab.encode(sentence)) - written
    return total


def warn_unknown(vocab, sentences: Iterable[str]) -> int:
    """Log one warning with the number of words outside the vocabulary (if any); returns that number."""
    n = count_unknown(vocab, sentences)
    if n:
        log.warning("%d word%s outside the vocabulary %s read as <unk>", n, "" if n == 1 else "s",
                    "was" if n == 1 else "were")
    return n


# -- reading lines -----------------------------------------------------------------------------------
def read_lines(path: str | Path) -> tuple[list[str], list[str | None]]:
    """(texts, labels) of a text file's non-blank lines; `label<TAB>text` keeps the label, as corpora do."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"not a file: {path}")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid UTF-8 (byte {exc.start})") from None
    texts, labels = split_labels(raw.splitlines())
    if not texts:
        raise ConfigError(f"{path} has no non-blank lines")
    return texts, labels


# -- z -----------------------------------------------------------------------------------------------
def prior_z(n: int, dim: int, seed: int, device: torch.device) -> torch.Tensor:
    """(n, dim) draws of N(0, I) from a generator on `device` seeded with `seed`."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(n, dim, generator=generator, device=device)


def posterior_z(mu: torch.Tensor, logvar: torch.Tensor, mode: str, samples: int, seed: int) -> torch.Tensor:
    """(N * samples, D), rows of one sentence together: mu repeated, or mu + exp(logvar / 2) * eps."""
    if mode == "mean":
        return mu.repeat_interleave(samples, 0)
    generator = torch.Generator(device=mu.device).manual_seed(seed)
    eps = torch.randn(mu.size(0), samples, mu.size(1), generator=generator, device=mu.device)   # (N, S, D)
    return (mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps).reshape(-1, mu.size(1))


def interpolation_points(steps: int) -> list[float]:
    """t = 0, 1/(steps - 1), ..., 1 (steps >= 2)."""
    check_at_least(steps, 2, "steps")
    return [i / (steps - 1) for i in range(steps)]


def interpolation_z(z_a: torch.Tensor, z_b: torch.Tensor, points: list[float]) -> torch.Tensor:
    """(steps, D): z(t) = (1 - t) z_a + t z_b for each t (exactly z_a at t = 0 and z_b at t = 1)."""
    t = torch.tensor(points, dtype=z_a.dtype, device=z_a.device).unsqueeze(1)                  # (steps, 1)
    return (1 - t) * z_a.reshape(1, -1) + t * z_b.reshape(1, -1)


# -- decoding ----------------------------------------------------------------------------------------
def sample_ids(model, n: int, options: DecodeOptions, device: torch.device) -> list[list[int]]:
    """n sentences (token ids) decoded from z ~ N(0, I) seeded by options.seed, or from an LM without z."""
    check_at_least(n, 1, "n")
    if model.is_lm:
        return decode(model, None, options, n=n)
    return decode(model, prior_z(n, model.latent_dim, options.seed, device), options)


def check_reconstruct(mode: str, samples: int, options: DecodeOptions) -> None:
    """Refuse a z mode other than mean|sample, samples < 1, beam search of a drawn z, and repeats of one
    deterministic decoding (z = mean decoded greedily or by beam gives one sentence)."""
    if mode not in Z_MODES:
        raise ConfigError(f"z must be one of {', '.join(Z_MODES)}, got '{mode}'")
    check_at_least(samples, 1, "samples")
    if mode == "sample" and options.strategy == "beam":
        raise ConfigError("--z sample takes --decode greedy or sample")
    if mode == "mean" and samples > 1 and options.strategy != "sample":
        raise ConfigError(f"{samples} samples of z = mean need --decode sample (decoding the mean by "
                          f"{options.strategy} gives one sentence); or use --z sample")


def reconstruct_ids(model, method, ids: list[list[int]], eval_cfg: EvalConfig, device: torch.device,
                    mode: str, samples: int, options: DecodeOptions) -> list[list[list[int]]]:
    """`samples` decodings per sentence of z = mu or z ~ q(z|x) (draws seeded by options.seed), eval_batch_size
    sentences at a time; `--decode sample` draws every row's words from one generator, so in one pass."""
    check_reconstruct(mode, samples, options)
    require_latent(model, "reconstruct")
    mu, logvar = encode_ids(model, method, ids, eval_cfg, device)
    z = posterior_z(mu, logvar, mode, samples, options.seed)                    # (N * samples, D)
    step = len(ids) if options.strategy == "sample" else eval_cfg.eval_batch_size
    out: list[list[int]] = []
    with progress(len(ids), "reconstruct", unit="sentences") as shown:
        for start in range(0, len(ids), step):
            out += decode(model, z[start * samples:(start + step) * samples], options)
            shown.update(min(step, len(ids) - start))
    return [out[i * samples:(i + 1) * samples] for i in range(len(ids))]


def interpolate_ids(model, z_a: torch.Tensor, z_b: torch.Tensor, steps: int,
                    options: DecodeOptions) -> list[tuple[float, list[int]]]:
    """(t, token ids) for z(t) = (1 - t) z_a + t z_b at `steps` evenly spaced t from 0 to 1."""
    points = interpolation_points(steps)
    return list(zip(points, decode(model, interpolation_z(z_a, z_b, points), options)))


# -- latents of a corpus -----------------------------------------------------------------------------
def split_lines(config: RunConfig, vocab, split: str) -> tuple[list[str], list[str | None], list[list[int]]]:
    """(texts, labels, token ids) of a corpus split, read and length-limited as in training; each text is
    what the model reads (its ids written back, unknown words as <unk>); labels are None where the corpus
    has none."""
    from ..data.corpus import SPLITS, load_corpus

    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    corpus = load_corpus(config.data, vocab=vocab, needed=(split,))
    ids = corpus.splits[split]
    labels = corpus.labels.get(split) or [None] * len(ids)
    return [vocab.decode(s) for s in ids], list(labels), ids


def latent_frame(texts: list[str], labels: list[str | None], mu: torch.Tensor, logvar: torch.Tensor):
    """A pandas DataFrame, one row per sentence: text, label, mu (list of floats), logvar (list of floats)."""
    import pandas as pd

    return pd.DataFrame({"text": list(texts), "label": pd.Series(list(labels), dtype=object),   # None stays None
                         "mu": mu.double().cpu().tolist(), "logvar": logvar.double().cpu().tolist()})


def write_parquet(frame, path: str | Path) -> Path:
    """Write a DataFrame as parquet, atomically (the folder is made if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())
    return path
