"""Word dropout on the decoder's inputs (Bowman et al. 2016)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..data.vocab import UNK_ID
from . import register
from .base import Method, check, param

if TYPE_CHECKING:
    from ..data.batching import Batch
    from ..model.models import TextVAE


def drop_words(batch: "Batch", rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Decoder inputs (B, T) with each real word replaced by <unk> with probability `rate`.

    Position 0 (<s>) and padding are never replaced; real inputs are <s> w_1 .. w_n.
    """
    inputs = batch.inputs                                                  # (B, T)
    real = batch.target_mask.clone()                                       # (B, T): <s> w_1..w_n
    real[:, 0] = False                                                     # keep <s>
    draw = torch.rand(inputs.shape, generator=generator, device=inputs.device)
    return torch.where(real & (draw < rate), torch.full_like(inputs, UNK_ID), inputs)


@dataclass
class WordDropoutParams:
    rate: float = param(0.3, "probability of replacing each decoder input word by <unk> (Bowman et al. 2016 vary it; 0.3 is ours)")

    def __post_init__(self) -> None:
        check(0.0 <= self.rate <= 1.0, f"rate must be in [0, 1], got {self.rate}")


@register("word-dropout")
class WordDropout(Method):
    """Word dropout: decoder input words become <unk> at a rate, in training only (Bowman et al. 2016)."""

    Params = WordDropoutParams

    def decoder_inputs(self, model: "TextVAE", batch: "Batch") -> torch.Tensor | None:
        if not model.training or self.params.rate == 0.0:
            return None
        return drop_words(batch, self.params.rate)
