"""Public Python API: `load_run(path)` gives a trained run to encode, score and evaluate sentences.

    run = textsvae.load_run("runs/ptb-standard-vae-s0")
    mu, logvar = run.encode(["the cat sat", "a dog ran"])        # (2, D) each
    log_px = run.log_px_given_z(["the cat sat", "a dog ran"], mu)  # (2,) nats, end-of-sentence counted
    metrics = run.evaluate(split="test", iw_samples=500)           # the keys of `textsvae eval --json`

The model is in eval mode (no dropout) and q's parameters come through the run's method.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .data.batching import bucket_batches, make_batch
from .evaluation import encode_ids, evaluate_loaded, load_model


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


def load_run(path: str | Path, device: str | torch.device | None = None) -> Run:
    """Load a run folder's best checkpoint (best.pt) for evaluation; device defaults to cuda if available."""
    model, method, config, vocab, dev = load_model(path, device)
    return Run(model, method, config, vocab, dev, Path(path))
