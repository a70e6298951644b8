"""Gaps to the published rows: which run reproduces which row, the signed differences, the errors."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from textsvae.bench.grid import RunSpec
from textsvae.cli import cli
from textsvae.core.config import ConfigError, preset_config
from textsvae.reporting.gaps import build_gap_table, reproduces
from textsvae.reporting.published import REPORTED
from textsvae.reporting.tables import build_table, render

PTB_REPRO = Path(__file__).resolve().parents[1] / "results" / "ptb-repro"
LI = {row["label"]: row for row in REPORTED["li2019-ptb"]["rows"]}


def ptb_run(run_id: str, decoder: str, method: str, params: dict | None = None, seed: int = 0,
            label: str | None = None) -> RunSpec:
    return RunSpec(run_id=run_id, benchmark="hand", dataset="ptb", decoder=decoder, method=method,
                   label=label or method, params=params or {}, seed=seed, config=preset_config("tiny"))


def rows_of(values: dict[str, dict[str, float]], runs: list[RunSpec]) -> pd.DataFrame:
    by_id = {r.run_id: r for r in runs}
    return pd.DataFrame([{"run_id": rid, "dataset": "ptb", "label": by_id[rid].label, "decoder": by_id[rid].decoder,
                          "seed": by_id[rid].seed, "split": "test", "metric": name, "value": value,
                          "status": "finished"}
                         for rid, metrics in values.items() for name, value in metrics.items()])


def test_a_run_reproduces_a_row_of_its_decoder_method_and_named_params():
    fb = LI["AE pretrain + free bits (lambda 5)"]
    assert reproduces(fb, ptb_run("a", "standard", "pretrain-fb", {"target": 5.0}))
    assert not reproduces(fb, ptb_run("b", "standard", "pretrain-fb", {"target": 3.0}))
    assert not reproduces(fb, ptb_run("c", "skip", "pretrain-fb", {"target": 5.0}))
    assert reproduces(LI["LSTM-LM (exact NLL)"], ptb_run("d", "lm", "vae"))
    assert not reproduces(LI["LSTM-LM (exact NLL)"], ptb_run("e", "standard", "vae"))
    # a published row that names no method (a model the suite lacks) is reproduced by nothing
    cnn = next(r for r in REPORTED["he2019-yahoo"]["rows"] if r["decoder"] == "cnn")
    assert not any(reproduces(cnn, ptb_run("f", d, "vae")) for d in ("standard", "skip", "lm", "cnn"))


def test_gaps_are_our_mean_minus_the_published_value_with_our_std():
    runs = [ptb_run("lm0", "lm", "vae", label="LSTM-LM"), ptb_run("lm1", "lm", "vae", seed=1, label="LSTM-LM"),
            ptb_run("an0", "standard", "anneal"), ptb_run("sk0", "skip", "anneal"),
            ptb_run("fb3", "standard", "pretrain-fb", {"target": 3.0}, label="fb3")]
    df = rows_of({"lm0": {"iw_nll": 102.04, "ppl": 101.47}, "lm1": {"iw_nll": 103.04, "ppl": 102.47},
                  "an0": {"ppl": 100.90, "elbo": -102.28, "kl": 0.25, "mi": 0.0, "au": 1.0},
                  "sk0": {"ppl": 99.0}, "fb3": {"ppl": 90.0}}, runs)
    table = build_gap_table(df, runs, ["ppl", "iw_nll", "elbo", "kl", "mi", "au"], ["li2019-ptb"])
    by_label = {row["label"]: row for row in table.rows}
    # only the standard decoder's anneal run reproduces "vae + anneal"; no target-5 free-bits run exists
    assert list(by_label) == ["LSTM-LM vs LSTM-LM (exact NLL) (Li et al. 2019)",
                              "anneal vs vae + anneal (Li et al. 2019)"]
    lm = by_label["LSTM-LM vs LSTM-LM (exact NLL) (Li et al. 2019)"]["cells"]
    mean, std, n, best = lm[("ptb", "iw_nll")]
    assert (round(mean, 6), round(std, 6), n, best) == (1.5, round(2 ** -0.5, 6), 2, False)
    assert set(lm) == {("ptb", "iw_nll"), ("ptb", "ppl")}   # the LM row publishes no ELBO, KL, MI or AU
    md = render(table, "md")
    assert "| LSTM-LM vs LSTM-LM (exact NLL) (Li et al. 2019) | lm | 2 | +1.50 ± 0.71 | +1.50 ± 0.71 |" in md
    # 100.90 - 101.40, -102.28 - (-101.28), 0.25 - 0.00, 1 - 0
    assert "| anneal vs vae + anneal (Li et al. 2019) | standard | 1 | -0.50 | - | -1.00 | +0.25 | +0.00 | +1 |" in md
    assert "**" not in md and "Gap = this suite's mean minus the published value" in md


def test_he_et_al_mi_is_compared_with_our_minibatch_mi_and_never_with_the_whole_split_mi():
    runs = [RunSpec(run_id="b2", benchmark="hand", dataset="yahoo", decoder="standard", method="beta",
                    label="beta (beta=0.2)", params={"beta": 0.2}, seed=0, config=preset_config("tiny"))]
    df = rows_of({"b2": {"iw_nll": 334.1, "mi": 5.0, "mi_minibatch": 3.0}}, runs).assign(dataset="yahoo")
    table = build_gap_table(df, runs, ["iw_nll", "mi", "mi_minibatch"], ["he2019-yahoo"])
    (row,) = table.rows
    assert row["label"] == "beta (beta=0.2) vs beta-VAE (0.2) (He et al. 2019)"
    assert set(row["cells"]) == {("yahoo", "iw_nll"), ("yahoo", "mi_minibatch")}    # 5.0 - 3.4 is not a gap
    assert row["cells"][("yahoo", "mi_minibatch")][0] == pytest.approx(3.0 - 3.4)
    assert table.metrics == ["iw_nll", "mi_minibatch"]
    md = render(table, "md")
    assert "| beta (beta=0.2) vs beta-VAE (0.2) (He et al. 2019) | standard | 1 | +1.00 | -0.40 |" in md


def test_unfinished_runs_show_their_row_with_empty_cells():
    runs = [ptb_run("an0", "standard", "anneal")]
    table = build_gap_table(rows_of({}, runs).reindex(columns=["run_id", "dataset", "label", "decoder", "seed",
                                                                 "split", "metric", "value", "status"]),
                            runs, ["ppl", "kl"], ["li2019-ptb"])
    assert render(table, "md").splitlines()[2] == "| anneal vs vae + anneal (Li et al. 2019) | standard | 0 | - | - |"


def test_a_label_edited_after_the_run_keeps_its_rows_under_the_new_label():
    # the run id names what the run computed; its rows.csv keeps the label of the file that ran it
    old, new = ptb_run("an0", "standard", "anneal", label="anneal, bf16"), \
        ptb_run("an0", "standard", "anneal", label="anneal (start=0.0, epochs=10.0), bf16")
    df = rows_of({"an0": {"ppl": 100.90, "kl": 0.25}}, [old])
    table = build_table(df, [new], ["ppl", "kl"], ["li2019-ptb"])
    assert render(table, "md").splitlines()[2] == "| anneal (start=0.0, epochs=10.0), bf16 | standard | 1 | 100.90 | 0.25 |"
    gaps = render(build_gap_table(df, [new], ["ppl", "kl"], ["li2019-ptb"]), "md")
    assert "| anneal (start=0.0, epochs=10.0), bf16 vs vae + anneal (Li et al. 2019) | standard | 1 | -0.50 | +0.25 |" in gaps


def test_no_published_rows_or_no_reproducing_run_is_a_one_line_error():
    runs = [ptb_run("sk0", "skip", "vae")]
    with pytest.raises(ConfigError, match="names no published rows"):
        build_gap_table(rows_of({"sk0": {"ppl": 1.0}}, runs), runs, ["ppl"], [])
    with pytest.raises(ConfigError, match=r"no run of this benchmark reproduces one of its published rows \(li2019"):
        build_gap_table(rows_of({"sk0": {"ppl": 1.0}}, runs), runs, ["ppl"], ["li2019-ptb"])


def test_cli_gaps_on_the_committed_ptb_repro_folder_and_its_error(tmp_path):
    runner = CliRunner()
    out = tmp_path / "gaps.md"
    result = runner.invoke(cli, ["table", "ptb-repro", "--results", str(PTB_REPRO), "--gaps", "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert f"--gaps -o {out}`" in text                      # the regenerate line keeps the flag
    for published in ("LSTM-LM (exact NLL)", "vae + anneal", "AE pretrain + free bits (lambda 5)", "cyclical anneal",
                      "aggressive"):
        assert f" vs {published} (Li et al. 2019) |" in text
    assert "bn-vae" not in text                             # no published BN-VAE row at this protocol
    bad = runner.invoke(cli, ["table", "quick", "--results", str(PTB_REPRO), "--gaps"])
    assert bad.exit_code != 0 and bad.output.count("\n") == 1 and "names no published rows" in bad.output


def test_every_published_method_builds_and_he_et_al_rows_all_have_a_yahoo_paper_run():
    """A typo in a published row's method would silently leave it without a gap."""
    from textsvae.bench.grid import load_benchmark
    from textsvae.methods import build_method

    named = [row for rows in REPORTED.values() for row in rows["rows"] if "method" in row]
    assert len(named) >= 17
    for row in named:
        build_method(row["method"], row.get("params", {}))          # raises on an unknown method or parameter
    runs = load_benchmark("yahoo-paper").runs
    for row in REPORTED["he2019-yahoo"]["rows"]:
        assert ("method" in row) == any(reproduces(row, run) for run in runs), row["label"]


def test_every_packaged_benchmark_loads_and_has_a_column_for_every_metric_its_published_rows_give():
    """A published value with no column of its own would silently drop out of the table and the gaps."""
    from textsvae.bench.grid import list_benchmarks, load_benchmark
    from textsvae.core.metric_registry import METRICS
    from textsvae.reporting.published import reported_rows

    names = list_benchmarks()
    assert {"skip-vae-paper", "yahoo-paper", "ptb-repro"} <= set(names)
    for name in names:
        bench = load_benchmark(name)
        datasets = {run.dataset for run in bench.runs}
        for row in reported_rows(bench.reported):
            missing = {key for key in row if key in METRICS} - set(bench.metrics)
            assert row["dataset"] not in datasets or not missing, (name, row["label"], missing)
