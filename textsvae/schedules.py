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


def cyclical(step: int, total_steps: float, n_cycles: int, ratio: float) -> float:
    """Fu et al. 2019: period P = total_steps / n_cycles, tau = (t mod P) / P, beta = min(1, tau / ratio).

    beta ramps linearly 0 -> 1 over the first `ratio` of each cycle, then stays at 1; steps past
    `total_steps` keep cycling with the same period.
    """
    period = total_steps / n_cycles
    tau = math.fmod(step, period) / period
    return min(1.0, tau / ratio)
