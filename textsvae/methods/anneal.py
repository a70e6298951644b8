"""Linear KL annealing (Bowman et al. 2016; He et al. 2019; Kim et al. 2018; Li et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass

from . import schedules
from . import register
from .base import Method, check, param


@dataclass
class AnnealParams:
    start: float = param(0.1, "beta at step 0 (He et al., Kim et al.: 0.1; Li et al., BN-VAE: 0)")
    epochs: float = param(10.0, "ramp length in epochs (docs/protocol.md section 3: 10)")
    steps: int = param(0, "ramp length in optimiser steps; > 0 overrides epochs")

    def __post_init__(self) -> None:
        check(0.0 <= self.start <= 1.0, f"start must be in [0, 1], got {self.start}")
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        check(self.steps >= 0, f"steps must be >= 0, got {self.steps}")


@register("anneal")
class Anneal(Method):
    """Linear KL annealing: beta rises linearly from `start` to 1 per step (Bowman et al. 2016; He et al. 2019)."""

    Params = AnnealParams
    needs_latent = True

    def ramp_steps(self, steps_per_epoch: int) -> float:
        p = self.params
        return float(p.steps) if p.steps > 0 else p.epochs * steps_per_epoch

    def beta(self, step: int, epoch: int, steps_per_epoch: int) -> float:
        return schedules.linear(step, self.params.start, 1.0, self.ramp_steps(steps_per_epoch))
