"""Cyclical KL annealing (Fu, Li, Liu, Gao, Celikyilmaz & Carin, NAACL 2019)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import schedules
from . import register
from .base import Method, check, param

if TYPE_CHECKING:
    from .context import SetupContext


@dataclass(frozen=True)
class Recipe:
    """A published cyclical schedule: the parameter values it fixes, and `lead` (see schedules.cycle_ramp)."""

    start: float
    ratio: float
    cycle_epochs: float
    lead: int


# Fu et al.'s PTB code (haofuml/cyclical_annealing, language_model/train_text_cyc_ptb.py, --cycle 10
# --warmup 5): every 10 epochs beta restarts at 0.1, then grows by 1 / (5 epochs of steps) before each
# step, so it reaches 1 after 4.5 epochs and stays at 1 for the cycle's last 5.5 epochs
PRESETS: dict[str, Recipe] = {"fu2019-ptb": Recipe(start=0.1, ratio=0.5, cycle_epochs=10.0, lead=1)}

# parameters added after cyclical runs were made: left out of the saved parameters (and so of run ids)
# while at these values, so those runs keep their ids
NEUTRAL = {"start": 0.0, "cycle_epochs": 0.0, "preset": ""}


@dataclass
class CyclicalParams:
    cycles: int = param(4, "M, the number of cycles over the run (Fu et al.: 4)")
    ratio: float = param(0.5, "R, the fraction of each cycle spent ramping beta up to 1 (Fu et al.: 0.5)")
    total_steps: int = param(0, "steps the M cycles span; 0: the run's epochs * steps_per_epoch, or max_steps")
    start: float = param(0.0, "beta at the start of each cycle; the ramp keeps its slope 1 / (R P) "
                              "(Fu et al.'s code: 0.1)")
    cycle_epochs: float = param(0.0, "cycle length in epochs; > 0 replaces cycles and total_steps "
                                     "(Fu et al.'s PTB code: 10)")
    preset: str = param("", "a published recipe that sets start, ratio and cycle_epochs: "
                            + ", ".join(PRESETS) + " (Fu et al.'s PTB code: 10-epoch cycles from 0.1, "
                            "beta raised before each step)")

    def __post_init__(self) -> None:
        if self.preset:
            self._apply_preset()
        check(self.cycles >= 1, f"cycles must be >= 1, got {self.cycles}")
        check(0.0 < self.ratio <= 1.0, f"ratio must be in (0, 1], got {self.ratio}")
        check(self.total_steps >= 0, f"total_steps must be >= 0, got {self.total_steps}")
        check(0.0 <= self.start <= 1.0, f"start must be in [0, 1], got {self.start}")
        check(self.cycle_epochs >= 0, f"cycle_epochs must be >= 0, got {self.cycle_epochs}")
        check(self.cycle_epochs == 0 or (self.total_steps == 0 and self.cycles == _default("cycles")),
              "cycle_epochs sets the cycle length: leave cycles and total_steps at their defaults")

    def _apply_preset(self) -> None:
        """Give start, ratio and cycle_epochs the recipe's values; each must be at its default or at that value."""
        check(self.preset in PRESETS, f"unknown preset '{self.preset}'; valid presets: {', '.join(PRESETS)}")
        recipe = PRESETS[self.preset]
        for name in ("start", "ratio", "cycle_epochs"):
            value, fixed = getattr(self, name), getattr(recipe, name)
            check(value in (_default(name), fixed),
                  f"preset '{self.preset}' sets {name} = {fixed}; leave {name} out (got {value})")
            setattr(self, name, fixed)

    @property
    def lead(self) -> int:
        """1 where the recipe raises beta before each step (schedules.cycle_ramp), else 0."""
        return PRESETS[self.preset].lead if self.preset else 0


def _default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(CyclicalParams) if f.name == name)


@register("cyclical")
class Cyclical(Method):
    """Cyclical annealing: cycles of P steps, beta = min(1, start + (t mod P) / (R P)) (Fu et al. 2019)."""

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

    def period(self, steps_per_epoch: int) -> float:
        """P in steps: cycle_epochs * steps_per_epoch, else the run's steps / M."""
        if self.params.cycle_epochs > 0:
            return self.params.cycle_epochs * steps_per_epoch
        if self.total_steps <= 0:
            raise RuntimeError("cyclical: the run length is unknown before setup(); or set total_steps")
        return self.total_steps / self.params.cycles

    def beta(self, step: int, epoch: int, steps_per_epoch: int) -> float:
        p = self.params
        return schedules.cycle_ramp(step, self.period(steps_per_epoch), p.ratio, p.start, p.lead)

    def param_values(self) -> dict[str, Any]:
        """The parameters as saved in config.json, less those of NEUTRAL at their neutral value."""
        return {k: v for k, v in super().param_values().items() if not (k in NEUTRAL and v == NEUTRAL[k])}
