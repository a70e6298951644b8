"""A run's loop state and random generators: what a resumed run restores to continue exactly."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    epoch: int = 0                 # epochs completed
    step: int = 0                  # optimiser steps taken
    batch_in_epoch: int = 0        # batches of the current epoch already done (Ctrl-C mid-epoch)
    lr: float = 0.0
    decays: int = 0                # LR halvings so far (skip-vae: > 0 once it halves every epoch)
    bad_epochs: int = 0            # worse epochs in a row (validation loss above plateau_loss)
    plateau_loss: float = math.inf  # the last non-worse validation loss (the plateau rule's reference)
    best_loss: float = math.inf
    best_epoch: int = -1
    done: bool = False
    stop_reason: str = ""
    phase_start: int = 0           # epochs completed when this phase began (the LR rule and budget count from it)
    train_seconds: float = 0.0
    partial: dict[str, float] = field(default_factory=dict)  # sums of the interrupted epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The state of every generator a training step draws from (torch, Python, NumPy, CUDA)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EpochTotals:
    """The running sums of one epoch's training (on the device: no host sync per step), carried across a
    stop mid-epoch through TrainState.partial."""

    def __init__(self, device: torch.device, partial: dict[str, float] | None = None):
        self.sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in ("rec", "kl", "loss")}
        self.counts: dict[str, float] = {"sentences": 0, "tokens": 0, "beta": 0.0, "seconds": 0.0}
        if partial:                                        # resuming mid-epoch: the done part's sums
            for k in self.sums:
                self.sums[k] += partial.get(k, 0.0)
            self.counts = {k: partial.get(k, 0) for k in self.counts}

    def add(self, out, sentences: int, tokens: int, beta: float) -> None:
        """One step's StepOutput (rec and kl per sentence, loss the batch mean)."""
        self.sums["rec"] += out.rec.detach().sum()
        self.sums["kl"] += out.kl.detach().sum()
        self.sums["loss"] += out.loss.detach() * sentences
        self.counts["sentences"] += sentences
        self.counts["tokens"] += tokens
        self.counts["beta"] = beta

    def mean(self, name: str) -> float:
        """A sum per training sentence so far (a host read)."""
        return float(self.sums[name]) / max(self.counts["sentences"], 1)

    def partial(self) -> dict[str, float]:
        return {**{k: float(v) for k, v in self.sums.items()}, **self.counts}
