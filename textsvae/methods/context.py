"""The contract between a method and the code that runs it: exactly what a method may use.

`SetupContext` is what `Method.setup` gets: once, after the model is built and before its
optimiser is, both when a run trains (the `Trainer`) and when a run is rebuilt for evaluation
(`EvalSetup`). `TrainingContext` is what `train_step` and `end_epoch` get: the trainer, seen
through the few attributes and calls listed here. A method that needs more should say so here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol

import torch

if TYPE_CHECKING:
    from ..core.config import RunConfig
    from ..data.batching import Batch
    from ..model.models import TextVAE


class LoopState(Protocol):
    """The training loop's counters a method reads (and pretrain-fb's reset writes)."""

    epoch: int          # epochs completed
    step: int           # optimiser steps taken
    lr: float           # the current learning rate (halved on validation plateaus)
    done: bool          # the run ends after this epoch (restart_phase clears it)
    stop_reason: str    # why it ends, once done
    best_epoch: int     # the epoch best.pt holds


class SetupContext(Protocol):
    model: "TextVAE"            # a method may add modules here (BN-VAE's layer) before the optimiser is built
    config: "RunConfig"         # the whole run config, read-only
    device: torch.device
    steps_per_epoch: int        # optimiser steps per epoch; 0 when the run is rebuilt for evaluation


class TrainingContext(SetupContext, Protocol):
    state: LoopState
    optimizer: torch.optim.Optimizer    # the whole model's optimiser; a method may replace it (a reset)

    def make_optimizer(self, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """An optimiser of the run's kind (SGD or Adam, its momentum) over `params`."""

    def clip_and_step(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter] | None = None
                      ) -> None:
        """Clip the gradient's global norm over `params` (default: all the model's) and step `optimizer`."""

    def random_train_batch(self, generator: torch.Generator) -> "Batch":
        """A uniformly drawn training batch, on the device (aggressive training's fresh minibatches)."""

    def restart_model_selection(self) -> None:
        """Forget the best model so far and the plateau count (after a change of model or objective)."""

    def reload_best(self) -> None:
        """Load best.pt's weights into the model."""

    def restart_phase(self) -> None:
        """Go on as a new run from the current model: initial LR, no halvings, a fresh optimiser, no best
        model, the epoch budget and decay start counted from now, and the run no longer done."""


@dataclass
class EvalSetup:
    """The SetupContext of a run rebuilt for evaluation: no training data, no optimiser."""

    model: "TextVAE"
    config: "RunConfig"
    device: torch.device
    steps_per_epoch: int = 0
