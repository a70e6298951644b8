"""Bowman et al. 2016's logistic (sigmoid) KL annealing."""
from __future__ import annotations

from dataclasses import dataclass

from . import schedules
from . import register
from .base import Method, check, param


@dataclass
class LogisticParams:
    k: float = param(0.0025, "steepness of the sigmoid, per step (Bowman et al.'s code: 0.0025)")
    x0: float = param(2500.0, "step at which beta = 0.5 (Bowman et al.'s code: 2500)")

    def __post_init__(self) -> None:
        check(self.k > 0, f"k must be > 0, got {self.k}")
        check(self.x0 >= 0, f"x0 must be >= 0, got {self.x0}")


@register("logistic")
class Logistic(Method):
    """Sigmoid KL annealing, beta = 1 / (1 + exp(-k (step - x0))) (Bowman et al. 2016)."""

    Params = LogisticParams
    needs_latent = True

    def beta(self, step: int, epoch: int, steps_per_epoch: int) -> float:
        return schedules.logistic(step, self.params.k, self.params.x0)
