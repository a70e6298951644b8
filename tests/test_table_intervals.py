"""`table --ci`, `table --vs` and `table --gaps --ci`: t intervals over seeds, differences paired by seed,
and the mark on a difference whose interval excludes 0; the table without the flags is unchanged."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from textsvae.bench.grid import RunSpec
from textsvae.bench.results import ResultsError
from textsvae.cli import cli
from textsvae.core.config import preset_config
from textsvae.reporting.gaps import build_gap_table, build_vs_table
from textsvae.reporting.tables import build_table, render, t_interval

QUICK = Path(__file__).resolve().parents[1] / "results" / "quick"
T975_2 = 4.302652729749464     # t_{0.975}, 2 degrees of freedom


def run(run_id: str, label: str, decoder: str, seed: int) -> RunSpec:
    return RunSpec(run_id=run_id, benchmark="hand", dataset="ptb", decoder=decoder, method="vae", label=label,
                   params={}, seed=seed, config=preset_config("tiny"))


RUNS = [run(f"{label}-{decoder}-{seed}", label, decoder, seed)
        for label in ("vae", "anneal") for decoder in ("standard", "skip") for seed in (0, 1, 2)]
# NLL per run: anneal/standard is vae/standard + (0.9, 1.0, 1.1) seed by seed; skip rows 0.1 apart
NLL = {"vae-standard": [100.0, 102.0, 101.0], "anneal-standard": [100.9, 103.0, 102.1],
       "vae-skip": [99.0, 99.5, 100.0], "anneal-skip": [99.1, 99.4, 100.2]}


def frame() -> pd.DataFrame:
    return pd.DataFrame([{"run_id": r.run_id, "dataset": "ptb", "label": r.label, "decoder": r.decoder,
                          "seed": r.seed, "split": "test", "metric": "iw_nll", "status": "finished",
                          "value": NLL[f"{r.label}-{r.decoder}"][r.seed]} for r in RUNS])


def test_t_interval_is_mean_plus_minus_t_std_over_root_n():
    assert t_interval(2.0, 1.0, 3) == pytest.approx((2 - T975_2 / math.sqrt(3), 2 + T975_2 / math.sqrt(3)))
    assert all(math.isnan(v) for v in t_interval(2.0, math.nan, 1))


def test_ci_adds_the_t_interval_to_each_cell():
    table = build_table(frame(), RUNS, ["iw_nll"])
    plain = render(table, "md")
    table.ci = True
    text = render(table, "md")
    half = T975_2 * 1.0 / math.sqrt(3)               # vae/standard: mean 101, std 1
    assert f"| vae | standard | 3 | 101.00 ± 1.00 [{101 - half:.2f}, {101 + half:.2f}] |" in text
    assert "95% t interval of the mean over seeds" in text and "95% t interval" not in plain
    csv = pd.read_csv(pd.io.common.StringIO(render(table, "csv")))
    assert csv.iw_nll_ci_low[0] == pytest.approx(101 - half) and csv.iw_nll_ci_high[0] == pytest.approx(101 + half)


def test_vs_pairs_the_seeds_and_marks_an_interval_that_excludes_zero():
    """anneal/standard - vae/standard per seed: 0.9, 1.0, 1.1 (mean 1, std 0.1): [1 -+ t 0.1 / sqrt 3]
    excludes 0, so it is marked; anneal/skip - vae/skip: 0.1, -0.1, 0.2 is not."""
    table = build_vs_table(frame(), RUNS, ["iw_nll"], "vae")
    rows = {(r["label"], r["decoder"]): r["cells"][("ptb", "iw_nll")] for r in table.rows}
    assert set(rows) == {("anneal vs vae", "standard"), ("anneal vs vae", "skip")}
    mean, std, n, _ = rows[("anneal vs vae", "standard")]
    assert (mean, std, n) == pytest.approx((1.0, 0.1, 3))
    table.ci = True
    text = render(table, "md")
    half = T975_2 * 0.1 / math.sqrt(3)
    assert f"| anneal vs vae | standard | 3 | +1.00 ± 0.10 [+{1 - half:.2f}, +{1 + half:.2f}]* |" in text
    skip = [line for line in text.splitlines() if "| skip |" in line][0]
    assert not skip.rstrip(" |").endswith("*")
    fixed = build_vs_table(frame(), RUNS, ["iw_nll"], "vae/skip")          # one base row for every row
    assert {r["label"] for r in fixed.rows} == {"vae vs vae/skip", "anneal vs vae/skip"}
    with pytest.raises(ResultsError, match="--vs nope: no such label"):
        build_vs_table(frame(), RUNS, ["iw_nll"], "nope")


def test_gaps_with_ci_shift_the_seed_interval_by_the_published_value():
    lm = [RunSpec(run_id=f"lm{s}", benchmark="hand", dataset="ptb", decoder="lm", method="vae", label="LSTM-LM",
                  params={}, seed=s, config=preset_config("tiny")) for s in (0, 1, 2)]
    df = pd.DataFrame([{"run_id": r.run_id, "dataset": "ptb", "label": r.label, "decoder": "lm", "seed": r.seed,
                        "split": "test", "metric": "iw_nll", "status": "finished", "value": v}
                       for r, v in zip(lm, (101.0, 103.0, 102.0))])
    table = build_gap_table(df, lm, ["iw_nll"], ["li2019-ptb"])
    ((mean, std, n, _),) = table.rows[0]["cells"].values()
    table.ci = True
    low, high = t_interval(mean, std, n)
    assert f"[{low:+.2f}, {high:+.2f}]" in render(table, "md")
    assert low == pytest.approx(102.0 - T975_2 / math.sqrt(3) - (102.0 - mean))


@pytest.mark.skipif(not (QUICK / "rows.csv").exists() and not QUICK.is_dir(), reason="no committed quick results")
def test_the_committed_quick_table_takes_the_new_flags():
    ok = CliRunner().invoke(cli, ["table", "quick", "--results", str(QUICK), "--vs", "vae"])
    assert ok.exit_code == 0, ok.output
    assert "anneal (start=0.0, epochs=4.0) vs vae" in ok.output and "t interval" in ok.output
    both = CliRunner().invoke(cli, ["table", "quick", "--results", str(QUICK), "--vs", "vae", "--gaps"])
    assert both.exit_code == 2 and "--gaps and --vs are two different tables" in both.output


@pytest.mark.skipif(not QUICK.is_dir(), reason="no committed quick results")
def test_the_report_with_ci_and_vs_shows_the_intervals_and_the_marks():
    from textsvae.bench.grid import load_benchmark
    from textsvae.reporting.page import build_report

    bench = load_benchmark("quick")
    plain = build_report(bench, QUICK)
    page = build_report(bench, QUICK, ci=True, vs="vae")
    assert 'id="vs"' not in plain and "t interval" not in plain
    section = page[page.index('<section id="vs">'):]
    section = section[:section.index("</section>")]
    assert "free-bits (target=4.0) vs vae" in section and "]*</td>" in section
    assert "*: the interval excludes 0." in section
