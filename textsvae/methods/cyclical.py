"""Cyclical KL annealing (Fu, Li, Liu, Gao, Celikyilmaz & Carin, NAACL 2019)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import schedules
from . import register
from .base import Method, check, param

if TYPE_CHECKING:
    from .context import SetupContext


@dataclass
class CyclicalParams:
    cycles: int = param(4, "M, the number of cycles over the run (Fu et al.: 4)")
    ratio: float = param(0.5, "R, the fraction of each cycle spent ramping beta 0 -> 1 (Fu et al.: 0.5)")
    total_steps: int = param(0, "steps the M cycles span; 0: the run's epochs * steps_per_epoch, or max_steps")

    def __post_init__(self) -> None:
        check(self.cycles >= 1, f"cycles must be >= 1, got {self.cycles}")
        check(0.0 < self.ratio <= 1.0, f"ratio must be in (0, 1], got {self.ratio}")
        check(self.total_steps >= 0, f"total_steps must be >= 0, got {self.total_steps}")


@register("cyclical")
class Cyclical(Method):
    """Cyclical annealing: M cycles, beta 0 -> 1 over the first R of each, then 1 (Fu et al. 2019)."""

    Params = CyclicalParams
    needs_latent = True

    def __init__(self, params: CyclicalParams | None = None):
        super().__init__(params)
        self.total_steps = float(self.params.total_steps)

    def setup(self, ctx: "SetupContext") -> None:
        super().setup(ctx)
        if self.params.total_steps == 0:
            t = ctx.config.train
            total = t.epochs * ctx.steps_per_epoch
            self.total_steps = float(min(total, t.max_steps) if t.max_steps is not None else total)

    def beta(self, step: int, epoch: int, steps_per_epoch: int) -> float:
        if self.total_steps <= 0:
            raise RuntimeError("cyclical: the run length is unknown before setup(); or set total_steps")
        return schedules.cyclical(step, self.total_steps, self.params.cycles, self.params.ratio)
