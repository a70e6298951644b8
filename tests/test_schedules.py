"""KL-weight schedules: exact values at known steps (formulas in textsvae/methods/schedules.py)."""
from __future__ import annotations

import math

import pytest

from textsvae.methods import schedules


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


def fu2019_ptb_betas(epochs: int, batches: int, cycle: int = 10, warmup: int = 5) -> list[float]:
    """Fu et al.'s loop (haofuml/cyclical_annealing, language_model/train_text_cyc_ptb.py), transcribed:
    beta is reset to 0.1 when a cycle's first epoch begins and raised by 1 / (warmup * batches), capped
    at 1, before every step. Returns the beta that each step trains with."""
    betas, beta = [], 0.1
    for epoch in range(epochs):
        if epoch % cycle == 0:
            beta = 0.1
        for _ in range(batches):
            beta = min(1.0, beta + 1.0 / (warmup * batches))
            betas.append(beta)
    return betas


def test_the_fu2019_ptb_preset_is_their_schedule_at_every_step():
    """40 epochs of 8 batches: ours at step t equals their loop's beta, steps of every cycle included."""
    from textsvae.methods import build_method

    n = 8
    method = build_method("cyclical", {"preset": "fu2019-ptb"})
    ours = [method.beta(t, t // n, n) for t in range(40 * n)]
    assert ours == pytest.approx(fu2019_ptb_betas(40, n), abs=1e-12)


def test_the_fu2019_ptb_preset_at_known_steps():
    """N = 1315 steps per epoch, P = 10 N, slope 1 / (5 N): beta_t = min(1, 0.1 + ((t mod P) + 1) / (5 N))."""
    from textsvae.methods import build_method

    n = 1315
    beta = lambda t: build_method("cyclical", {"preset": "fu2019-ptb"}).beta(t, t // n, n)  # noqa: E731
    assert beta(0) == pytest.approx(0.1 + 1 / (5 * n))              # raised once before the first step
    assert beta(n - 1) == pytest.approx(0.1 + 0.2)                   # end of epoch 1: 0.1 + N / (5 N)
    assert beta(4 * n - 1) == pytest.approx(0.9)
    assert beta(5916) == pytest.approx(0.1 + 5917 / (5 * n)) and beta(5916) < 1   # 4.5 N = 5917.5 steps
    assert beta(5917) == 1.0 and beta(5 * n) == 1.0 and beta(10 * n - 1) == 1.0   # held at 1 for 5.5 epochs
    assert beta(10 * n) == pytest.approx(beta(0)) and beta(35 * n) == 1.0          # every cycle restarts


def test_cyclical_start_lifts_the_floor_at_the_same_slope():
    """start = 0.2, P = 100, R = 0.5: beta = min(1, 0.2 + (t mod 100) / 50), so 1 from step 40 on."""
    f = lambda t: schedules.cyclical(t, 400, 4, 0.5, start=0.2)  # noqa: E731
    assert [f(t) for t in (0, 10, 39, 40, 99, 100)] == pytest.approx([0.2, 0.4, 0.98, 1.0, 1.0, 0.2])


def test_cyclical_defaults_and_saved_parameters_are_unchanged():
    """The added parameters stay out of the saved ones at their neutral values, so run ids do not move."""
    from textsvae.methods import build_method

    default = build_method("cyclical")
    assert default.param_values() == {"cycles": 4, "ratio": 0.5, "total_steps": 0}
    default.total_steps = 100.0
    assert [default.beta(t, 0, 10) for t in (0, 5, 12, 13, 25, 30)] == \
        [schedules.cyclical(t, 100, 4, 0.5) for t in (0, 5, 12, 13, 25, 30)] == pytest.approx([0, 0.4, 0.96, 1, 0, 0.4])
    saved = build_method("cyclical", {"preset": "fu2019-ptb"}).param_values()
    assert saved == {"cycles": 4, "ratio": 0.5, "total_steps": 0, "start": 0.1, "cycle_epochs": 10.0,
                     "preset": "fu2019-ptb"}
    assert build_method("cyclical", saved).param_values() == saved    # config.json builds the same method back


@pytest.mark.parametrize("params, message", [
    ({"preset": "fu2019"}, "unknown preset 'fu2019'; valid presets: fu2019-ptb"),
    ({"preset": "fu2019-ptb", "start": "0.2"}, "preset 'fu2019-ptb' sets start = 0.1"),
    ({"cycle_epochs": "10", "cycles": "2"}, "cycle_epochs sets the cycle length"),
    ({"start": "1.5"}, r"start must be in \[0, 1\]"),
])
def test_cyclical_bad_parameters_are_one_line_errors(params, message):
    from textsvae.methods import MethodError, build_method

    with pytest.raises(MethodError, match=message):
        build_method("cyclical", params)
