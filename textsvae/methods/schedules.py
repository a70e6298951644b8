"""KL-weight schedules: pure functions of the optimiser step (0-based), each with its formula.

Methods call these from `Method.beta(step, epoch, steps_per_epoch)`; lengths are in steps
(an epoch-based length is `epochs * steps_per_epoch`).
"""
from __future__ import annotations

import math


def constant(step: int, value: float = 1.0) -> float:
    """beta(t) = value (the beta-VAE of Higgins et al. 2017; value 1 is the plain ELBO)."""
    return float(value)


def linear(step: int, start: float, end: float, length: float) -> float:
    """beta(t) = start + (end - start) * min(1, t / length); length <= 0 gives `end` at once.

    Linear KL annealing (Bowman et al. 2016; He et al. 2019 start 0.1 over 10 epochs).
    """
    if length <= 0:
        return float(end)
    return float(start + (end - start) * min(1.0, step / length))


def logistic(step: int, k: float, x0: float) -> float:
    """beta(t) = 1 / (1 + exp(-k (t - x0)))  (Bowman et al. 2016's sigmoid schedule)."""
    x = -k * (step - x0)
    if x > 700:  # exp overflows a double; the limit is 0
        return 0.0
    return 1.0 / (1.0 + math.exp(x))


def cyclical(step: int, total_steps: float, n_cycles: int, ratio: float, start: float = 0.0,
             lead: int = 0) -> float:
    """Fu et al. 2019: M = n_cycles cycles of period P = total_steps / M over the run; see `cycle_ramp`.

    With the defaults, beta ramps linearly 0 -> 1 over the first `ratio` of each cycle, then stays at 1.
    """
    return cycle_ramp(step, total_steps / n_cycles, ratio, start, lead)


def cycle_ramp(step: int, period: float, ratio: float, start: float = 0.0, lead: int = 0) -> float:
    """tau = ((t mod P) + lead) / P,  beta = min(1, start + tau / R)  (Fu et al. 2019, R = ratio).

    The slope is 1 / (R P) per step whatever `start` is, so beta reaches 1 at step (1 - start) R P - lead
    of each cycle and stays there until the cycle ends. start = 0.1 with lead = 1 is Fu et
    al.'s code (haofuml/cyclical_annealing, language_model/train_text_cyc_ptb.py): every cycle
    resets beta to 0.1 and beta grows by 1 / (R P) before each step, so a cycle's first step already
    has 0.1 + 1 / (R P). Steps past the run keep cycling with the same period.
    """
    tau = (math.fmod(step, period) + lead) / period
    return min(1.0, start + tau / ratio)
