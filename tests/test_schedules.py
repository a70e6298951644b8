"""KL-weight schedules: exact values at known steps (formulas in textsvae/schedules.py)."""
from __future__ import annotations

import math

import pytest

from textsvae import schedules


def test_constant():
    assert schedules.constant(0, 0.4) == 0.4
    assert schedules.constant(10_000, 0.4) == 0.4


def test_linear_from_start_to_end_then_flat():
    """beta(t) = 0.1 + 0.9 * min(1, t / 100)."""
    f = lambda t: schedules.linear(t, 0.1, 1.0, 100)  # noqa: E731
    assert f(0) == pytest.approx(0.1)
    assert f(50) == pytest.approx(0.55)
    assert f(100) == pytest.approx(1.0)
    assert f(10_000) == pytest.approx(1.0)
    assert schedules.linear(0, 0.0, 1.0, 0) == 1.0  # no ramp: the end value at once


def test_logistic_midpoint_and_symmetry():
    """beta(t) = 1 / (1 + exp(-k (t - x0))): 0.5 at x0, f(x0 + d) + f(x0 - d) = 1."""
    k, x0 = 0.0025, 2500
    assert schedules.logistic(2500, k, x0) == pytest.approx(0.5)
    assert schedules.logistic(0, k, x0) == pytest.approx(1 / (1 + math.exp(6.25)))
    assert schedules.logistic(3000, k, x0) + schedules.logistic(2000, k, x0) == pytest.approx(1.0)
    assert schedules.logistic(0, 10.0, 1e6) == 0.0  # exp overflow handled


def test_cyclical_four_cycles_half_ramp():
    """100 steps, M = 4, R = 0.5: period 25, beta = min(1, ((t mod 25) / 25) / 0.5)."""
    f = lambda t: schedules.cyclical(t, 100, 4, 0.5)  # noqa: E731
    assert [f(t) for t in (0, 5, 12, 13, 24)] == pytest.approx([0.0, 0.4, 0.96, 1.0, 1.0])
    assert [f(t) for t in (25, 30, 50, 75, 99)] == pytest.approx([0.0, 0.4, 0.0, 0.0, 1.0])
    assert schedules.cyclical(24, 100, 4, 1.0) == pytest.approx(24 / 25)  # R = 1: ramp the whole cycle
    assert schedules.cyclical(7, 10, 1, 0.5) == 1.0
