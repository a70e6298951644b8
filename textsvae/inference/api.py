"""Public Python API: `load_run(path)` gives a trained run to encode, score and evaluate sentences.

    run = textsvae.load_run("runs/ptb-standard-vae-s0")
    mu, logvar = run.encode(["the cat sat", "a dog ran"])        # (2, D) each
    log_px = run.log_px_given_z(["the cat sat", "a dog ran"], mu)  # (2,) nats, end-of-sentence counted
    metrics = run.evaluate(split="test", iw_samples=500)           # the keys of `textsvae eval --json`
    run.sample(n=3, strategy="sample", top_p=0.9, seed=1)         # sentences from z ~ N(0, I)
    run.reconstruct(["the cat sat"], z="sample", samples=3)        # [[three decodings of z ~ q(z|x)]]
    run.interpolate("the cat sat", "a dog ran", steps=5)           # [(t, sentence), ...]
    run.latents(split="test")                                      # DataFrame: text, label, mu, logvar

Decoding options are the fields of `textsvae.model.decoding.DecodeOptions` as keyword arguments:
strategy (greedy | beam | sample), beam_size, length_penalty, temperature, top_p, max_len, seed.

The model is in eval mode (no dropout) and q's parameters come through the run's method.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.config import ConfigError, RunConfig
from ..data.batching import bucket_batches, make_batch
from ..evaluation.run_eval import evaluate_loaded, load_model
from ..evaluation.scoring import encode_ids
from .generate import (check_at_least, check_reconstruct, check_sentences, decode_options, interpolate_ids,
                       latent_frame, prior_z, reconstruct_ids, require_latent, sample_ids, split_lines, warn_unknown)


@dataclass
class Run:
    """A trained run: its best model, method, config, vocabulary and device."""

    model: Any
    method: Any
    config: RunConfig
    vocab: Any
    device: torch.device
    path: Path

    def tokenize(self, sentences: list[str]) -> list[list[int]]:
        """Token ids (without <s> and </s>) with the run's vocabulary."""
        if isinstance(sentences, str):
            raise TypeError("expected a list of sentences, got one string")
        return [self.vocab.encode(s) for s in sentences]

    def _batches(self, ids: list[list[int]]):
        for index in bucket_batches([len(s) for s in ids], self.config.eval.eval_batch_size):
            yield make_batch(ids, index).to(self.device)

    def encode(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (N, latent_dim), of q(z|x) for the sentences in the order given."""
        return encode_ids(self.model, self.method, self.tokenize(sentences), self.config.eval, self.device)

    def log_px_given_z(self, sentences: list[str], z: torch.Tensor | None) -> torch.Tensor:
        """log p(x|z) in nats with end-of-sentence counted: z (N, D) -> (N,), (N, S, D) -> (N, S); None for an LM."""
        ids = self.tokenize(sentences)
        if z is not None and z.size(0) != len(ids):
            raise ValueError(f"z has {z.size(0)} rows for {len(ids)} sentences")
        shape = (len(ids),) if z is None or z.dim() == 2 else (len(ids), z.size(1))
        out = torch.zeros(shape, device=self.device)
        with torch.no_grad():
            for batch in self._batches(ids):
                zb = None if z is None else z[batch.index.to(z.device)].to(self.device, torch.float32)
                out[batch.index] = self.model.log_px_given_z(batch, zb)
        return out

    def evaluate(self, split: str = "test", sentences: list[str] | None = None, iw_samples: int | None = None,
                 mi_batch: bool | int = False, save: bool = True) -> dict[str, Any]:
        """The metrics of `textsvae eval --json` on a split, or on `sentences` when given (not saved).

        iw_samples defaults to the run's eval.iw_samples (500 unless the config says otherwise); a
        split's result is saved as eval_<split>_k<K>.json in the run folder when save is True.
        """
        return evaluate_loaded(self.model, self.method, self.config, self.vocab, self.device, self.path, split,
                               iw_samples, sentences, mi_batch, save)

    # -- generation (textsvae/inference/generate.py) -----------------------------------------------------------
    def detokenize(self, ids: list[list[int]]) -> list[str]:
        """Text of token-id sentences with the run's vocabulary."""
        return [self.vocab.decode(s) for s in ids]

    def sample(self, n: int = 10, **options: Any) -> list[str]:
        """n sentences decoded from z ~ N(0, I) drawn under `seed` (an LM decodes without z)."""
        return self.detokenize(sample_ids(self.model, n, decode_options(**options), self.device))

    def reconstruct(self, sentences: list[str], z: str = "mean", samples: int = 1,
                    **options: Any) -> list[list[str]]:
        """`samples` reconstructions per sentence: decodings of z = mu, or of z ~ q(z|x) drawn under `seed`
        (z="sample"); words outside the vocabulary are read as <unk> (one warning counts them)."""
        opts = decode_options(**options)
        check_reconstruct(z, samples, opts)
        check_sentences(sentences)
        require_latent(self.model, "reconstruct")
        warn_unknown(self.vocab, sentences)
        out = reconstruct_ids(self.model, self.method, self.tokenize(sentences), self.config.eval, self.device,
                              z, samples, opts)
        return [self.detokenize(group) for group in out]

    def interpolate(self, a: str | None = None, b: str | None = None, steps: int = 8, prior: bool = False,
                    **options: Any) -> list[tuple[float, str]]:
        """(t, sentence) for z(t) = (1 - t) z_A + t z_B, t = 0, 1/(steps - 1), ..., 1: z_A, z_B the posterior
        means of a and b, or with prior=True two draws of N(0, I) under `seed` (then a and b stay None)."""
        opts = decode_options(**options)
        check_at_least(steps, 2, "steps")
        require_latent(self.model, "interpolate")
        if prior:
            if a is not None or b is not None:
                raise ConfigError("--prior interpolates between two prior draws; give no sentences")
            z_a, z_b = prior_z(2, self.model.latent_dim, opts.seed, self.device)
        else:
            if a is None or b is None:
                raise ConfigError("interpolate needs two sentences A and B (or --prior)")
            check_sentences([a, b])
            warn_unknown(self.vocab, [a, b])
            z_a, z_b = self.encode([a, b])[0]                                              # (D,) each
        return [(t, self.vocab.decode(ids)) for t, ids in interpolate_ids(self.model, z_a, z_b, steps, opts)]

    def latents(self, split: str | None = None, sentences: list[str] | None = None,
                labels: list[str | None] | None = None):
        """A DataFrame, one row per sentence of a split (default test) or of `sentences`: text, label (None
        where there is none), mu and logvar of q(z|x) (lists of floats)."""
        require_latent(self.model, "encode")
        if sentences is None:
            texts, labels, ids = split_lines(self.config, self.vocab, split or "test")
        else:
            if split is not None:
                raise ConfigError("give a split or sentences, not both")
            check_sentences(sentences)
            warn_unknown(self.vocab, sentences)
            texts, ids = list(sentences), self.tokenize(sentences)
            labels = [None] * len(ids) if labels is None else list(labels)
            if len(labels) != len(ids):
                raise ValueError(f"{len(labels)} labels for {len(ids)} sentences")
        mu, logvar = encode_ids(self.model, self.method, ids, self.config.eval, self.device)
        return latent_frame(texts, labels, mu, logvar)

    def plot_latent(self, out: str | Path, split: str | None = None, sentences: list[str] | None = None,
                    labels: list[str | None] | None = None) -> Path:
        """Write the latent PNG (textsvae.reporting.plot.plot_latent) of a split (default test) or of `sentences`."""
        from ..reporting.plot import plot_latent

        require_latent(self.model, "plot-latent")
        frame = self.latents(split, sentences, labels)
        where = "sentences" if sentences is not None else f"{split or 'test'} split"
        return plot_latent(torch.tensor(frame["mu"].tolist()), frame["label"].tolist(),
                           self.config.eval.au_threshold, out, f"{self.path.name}: {where}, N={len(frame)}")


def load_run(path: str | Path, device: str | torch.device | None = None) -> Run:
    """Load a run folder's best checkpoint (best.pt) for evaluation; device defaults to cuda if available."""
    model, method, config, vocab, dev = load_model(path, device)
    return Run(model, method, config, vocab, dev, Path(path))
