"""Bag-of-words loss (Zhao, Zhao & Eskenazi, ACL 2017, "Learning Discourse-level Diversity for Neural Dialog
Models using Conditional Variational Autoencoders", section 3.2): an auxiliary head predicts the sentence's
words from z, without their order, so z must carry them.

    f = softmax(W_2 tanh(W_1 z + b_1) + b_2),   L_bow(x) = -sum_{t=1..n+1} log f_{x_t}

over the sentence's targets (its words and </s>), added to the training loss as Rec + beta KL + weight L_bow
with z the sample the reconstruction used. As in Zhao et al.'s code (snakeztc/NeuralDialog-CVAE,
models/cvae.py: `bow_fc1` with 400 tanh units, `bow_project`, `aug_elbo = avg_bow_loss + elbo`) the term
has weight 1 and is not annealed; their head also reads the dialog context, which a sentence VAE has not.
The head (installed on the model as `bow`, initialised like the rest of the model) is not part of p(x|z):
evaluation, model selection and every metric ignore it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import register
from .base import Method, check, param

if TYPE_CHECKING:
    from ..data.batching import Batch
    from ..model.models import TextVAE
    from .context import SetupContext


def bag_of_words_nll(logits: torch.Tensor, batch: "Batch") -> torch.Tensor:
    """(B,) -sum_t log softmax(logits_b)[x_bt] over each sentence's targets; logits (B, V)."""
    log_f = torch.log_softmax(logits, dim=-1)                                          # (B, V)
    rows, steps = batch.target_positions()
    picked = log_f[rows, batch.targets[rows, steps]]                                   # (N,) one per target
    return torch.zeros(logits.size(0), device=logits.device, dtype=log_f.dtype).index_add_(0, rows, -picked)


@dataclass
class BowParams:
    weight: float = param(1.0, "weight of the bag-of-words loss (Zhao et al. 2017: 1)")
    hidden: int = param(400, "tanh units of the head's hidden layer (Zhao et al.'s code: 400)")

    def __post_init__(self) -> None:
        check(self.weight >= 0, f"weight must be >= 0, got {self.weight}")
        check(self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}")


@register("bow")
class BagOfWords(Method):
    """Bag-of-words loss: an MLP head predicts the sentence's words from z, added to the loss (Zhao et al. 2017)."""

    Params = BowParams
    needs_latent = True

    def setup(self, ctx: "SetupContext") -> None:
        """Install the head on the model before the optimiser is built, so that it trains (and checkpoints) with it."""
        super().setup(ctx)
        model = ctx.model
        head = nn.Sequential(nn.Linear(model.latent_dim, self.params.hidden), nn.Tanh(),
                             nn.Linear(self.params.hidden, model.vocab_size))
        model.reset_parameters(head)
        model.bow = head.to(next(model.parameters()).device)

    def extra_loss(self, model: "TextVAE", batch: "Batch", z: torch.Tensor) -> torch.Tensor | None:
        if self.params.weight == 0.0:
            return None
        return self.params.weight * bag_of_words_nll(model.bow(z), batch)
