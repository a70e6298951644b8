"""The results store, paper tables (mean, std, n, best cell, reported rows), the probe and the plot."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from textsvae.bench.grid import RunSpec
from textsvae.bench.results import load_results, write_failure, write_rows
from textsvae.cli import cli
from textsvae.core.config import ConfigError, preset_config
from textsvae.evaluation.probe import fit_probe
from textsvae.reporting.published import REPORTED
from textsvae.reporting.tables import aggregate, build_table, render

PROV = {"git_commit": "abc123", "version": "0.1.0", "machine": "x86_64 2 cores"}


def spec(run_id: str, label: str = "vae", decoder: str = "standard", seed: int = 0, dataset: str = "synthetic",
         method: str = "vae") -> RunSpec:
    return RunSpec(run_id=run_id, benchmark="hand", dataset=dataset, decoder=decoder, method=method, label=label,
                   params={}, seed=seed, config=preset_config("tiny"))


def hand_rows(values: dict[tuple[str, str], list[float]], metric_names=("iw_nll", "mi")) -> pd.DataFrame:
    """{(label, decoder): [(nll, mi) per seed]} -> tidy rows of the test split."""
    rows = []
    for (label, decoder), per_seed in values.items():
        for seed, vals in enumerate(per_seed):
            for metric, value in zip(metric_names, vals):
                rows.append({"run_id": f"{label}-{decoder}-{seed}", "dataset": "synthetic", "label": label,
                             "decoder": decoder, "seed": seed, "split": "test", "metric": metric, "value": value,
                             "status": "finished"})
    return pd.DataFrame(rows)


def test_store_round_trip(tmp_path):
    summary = {"epochs": 3, "steps": 30, "train_seconds": 4.0, "device": "cpu", "last": {"tokens_per_s": 1000.0}}
    evals = {"test": {"iw_nll": 50.5, "kl": 1.25, "mi": 0.5, "au": 2, "ppl": 90.0, "iw_samples": 50, "mi_n": 400,
                      "au_threshold": 0.01, "n_sentences": 400, "mi_samples": 64, "au_variances": [0.1, 0.0], "split": "test",
                      "run_dir": "x", "probe_acc": 0.75},
             "valid": {"iw_nll": 51.0, "kl": None, "iw_samples": 50, "n_sentences": 40}}
    (tmp_path / "r1").mkdir()
    write_rows(tmp_path / "r1", spec("r1"), summary, evals, 1.5, PROV)
    (tmp_path / "r2").mkdir()
    write_failure(tmp_path / "r2", spec("r2", decoder="skip"), "TrainingDiverged: NaN", PROV)
    df = load_results(tmp_path)
    ok = df[df.run_id == "r1"].set_index(["split", "metric"])
    assert sorted(ok.index) == sorted([("test", m) for m in ("iw_nll", "kl", "mi", "au", "ppl", "probe_acc")]
                                      + [("valid", "iw_nll")])
    assert ok.loc[("test", "kl"), "value"] == 1.25 and ok.loc[("test", "au"), "value"] == 2
    row = ok.loc[("test", "mi")]                      # each row holds the settings its metric depends on
    assert (row.mi_n, row.mi_samples, row.epochs, row.steps) == (400, 64, 3, 30) and math.isnan(row.iw_samples)
    assert ok.loc[("test", "iw_nll"), "iw_samples"] == 50 and ok.loc[("test", "au"), "au_threshold"] == 0.01
    assert (row.wall_seconds, row.tokens_per_s, row.device, row.git_commit) == (5.5, 1000.0, "cpu", "abc123")
    assert ok.loc[("valid", "iw_nll"), "n_sentences"] == 40
    bad = df[df.run_id == "r2"]
    assert list(bad.status) == ["failed"] and bad.error.iloc[0] == "TrainingDiverged: NaN"
    assert math.isnan(bad.value.iloc[0])
    assert json.loads((tmp_path / "r1" / "bench.json").read_text())["status"] == "finished"


def test_aggregate_mean_std_n_and_best_cells():
    df = hand_rows({("vae", "standard"): [(10.0, 0.1), (12.0, 0.3), (14.0, 0.2)],
                    ("vae", "skip"): [(11.0, 1.0), (11.0, 2.0)]})
    stats = aggregate(df, ["iw_nll", "mi"]).set_index(["label", "decoder", "metric"])
    std = stats.loc[("vae", "standard", "iw_nll")]
    assert (std["mean"], std["std"], std["n"]) == (12.0, 2.0, 3)        # sample std of 10, 12, 14
    skip = stats.loc[("vae", "skip", "mi")]
    assert (skip["mean"], round(skip["std"], 6), skip["n"]) == (1.5, round(math.sqrt(0.5), 6), 2)
    # NLL: lower is better (11 < 12); MI: higher is better (1.5 > 0.2)
    assert stats.loc[("vae", "skip", "iw_nll"), "best"] and not stats.loc[("vae", "standard", "iw_nll"), "best"]
    assert stats.loc[("vae", "skip", "mi"), "best"] and not stats.loc[("vae", "standard", "mi"), "best"]
    # a column where every row ties at the printed precision marks nothing
    tie = aggregate(hand_rows({("a", "standard"): [(5.0, 0.0)], ("b", "standard"): [(5.001, 0.0)]}),
                    ["iw_nll", "mi"])
    assert not tie.best.any()
    # failed runs and other splits are left out
    left_out = [("x", "test", "failed"), ("y", "valid", "finished")]
    extra = pd.concat([df, pd.DataFrame([{"run_id": r, "dataset": "synthetic", "label": "vae", "decoder": "skip",
                                          "split": split, "metric": "iw_nll", "value": 0.0, "status": status}
                                         for r, split, status in left_out])])
    left = aggregate(extra, ["iw_nll"]).set_index(["label", "decoder"]).loc[("vae", "skip")]
    assert (left["n"], left["mean"]) == (2, 11.0)


def table_of(df, runs: list[RunSpec], metrics=("iw_nll", "mi"), reported=()):
    return build_table(df, runs, metrics, reported)


def test_rendered_tables_mark_the_best_cell():
    df = hand_rows({("vae", "standard"): [(10.0, 0.1), (12.0, 0.3), (14.0, 0.2)],
                    ("vae", "skip"): [(11.0, 1.0), (11.0, 2.0)]})
    runs = [spec(f"vae-{d}-{s}", decoder=d, seed=s) for d in ("standard", "skip") for s in range(3)]
    table = table_of(df, runs)
    md = render(table, "md")
    assert "| Method | Decoder | n | NLL | MI |" in md
    assert "| vae | standard | 3 | 12.00 ± 2.00 | 0.20 ± 0.10 |" in md
    assert "| vae | skip | 2 | **11.00 ± 0.00** | **1.50 ± 0.71** |" in md
    latex = render(table, "latex")
    assert r"\textbf{11.00 $\pm$ 0.00}" in latex and latex.strip().endswith(r"\end{tabular}")
    csv = render(table, "csv", header=["made by a test"])
    assert csv.startswith("# made by a test\n")
    back = pd.read_csv(__import__("io").StringIO(csv), comment="#").set_index("decoder")
    assert back.loc["skip", "iw_nll_best"] and back.loc["standard", "iw_nll_n"] == 3
    with pytest.raises(ConfigError, match="unknown format"):
        render(table, "html")


def test_numbers_just_below_zero_print_as_zero_not_minus_zero():
    from textsvae.core.metric_registry import fixed

    assert [fixed(v, 2) for v in (-0.0004, -0.006, 0.0, 2.5)] == ["0.00", "-0.01", "0.00", "2.50"]
    assert [fixed(v, 2, signed=True) for v in (-0.004, 0.004, -1.0)] == ["+0.00", "+0.00", "-1.00"]
    assert [fixed(v, 0) for v in (-0.3, 12.0)] == ["0", "12"]
    df = hand_rows({("vae", "standard"): [(10.0, -0.001)], ("vae", "skip"): [(11.0, 0.5)]})
    runs = [spec("vae-standard-0"), spec("vae-skip-0", decoder="skip")]
    assert "| vae | standard | 1 | **10.00** | 0.00 |" in render(table_of(df, runs), "md")


def test_reported_rows_only_where_the_protocol_matches():
    df = hand_rows({("vae", "standard"): [(330.0, 0.5)]})
    df["dataset"] = "yahoo"
    runs = [spec("vae-standard-0", dataset="yahoo")]
    md = render(table_of(df, runs, reported=["he2019-yahoo"]), "md")
    assert "| vae (reported: He et al. 2019) | standard | - | 328.80 | - |" in md   # no whole-split MI published
    assert "| LSTM-LM (exact NLL) (reported: He et al. 2019) | lm | - | 328.10 | - |" in md
    assert md.count("**") == 0  # one suite row: nothing to compare; reported rows never take part
    assert "reported" not in render(table_of(df, runs), "md").split("\n\n")[0]


def test_he_et_al_published_mi_sits_in_the_minibatch_mi_column_not_the_whole_split_one():
    """He et al. average MI over their evaluation minibatches: their 3.4 nats (beta-VAE 0.2) is an mi_minibatch."""
    names = ("iw_nll", "mi", "mi_minibatch")
    df = hand_rows({("beta (beta=0.2)", "standard"): [(333.0, 3.0, 2.5)]}, metric_names=names)
    df["dataset"] = "yahoo"
    runs = [spec("beta (beta=0.2)-standard-0", label="beta (beta=0.2)", dataset="yahoo", method="beta")]
    table = table_of(df, runs, metrics=names, reported=["he2019-yahoo"])
    header, _, ours, *published = render(table, "md").split("\n\n")[0].splitlines()
    assert header == "| Method | Decoder | n | NLL | MI | MI (He et al. batches) |"
    assert ours == "| beta (beta=0.2) | standard | 1 | 333.00 | 3.00 | 2.50 |"
    assert "| beta-VAE (0.2) (reported: He et al. 2019) | standard | - | 333.10 | - | 3.40 |" in published
    assert all("mi" not in row for key in ("he2019-yahoo", "he2019-yelp") for row in REPORTED[key]["rows"])


def test_active_units_print_as_whole_numbers_unless_averaged_over_seeds():
    df = hand_rows({("vae", "standard"): [(101.0, 3.0)], ("vae", "skip"): [(102.0, 3.0), (103.0, 4.0)]},
                   metric_names=("iw_nll", "au"))
    df["dataset"] = "ptb"
    runs = [spec("vae-standard-0", dataset="ptb")] + [spec(f"vae-skip-{s}", decoder="skip", seed=s, dataset="ptb")
                                                      for s in range(2)]
    md = render(table_of(df, runs, metrics=("iw_nll", "au"), reported=["li2019-ptb"]), "md")
    assert "| vae | standard | 1 | **101.00** | 3 |" in md
    assert "| vae | skip | 2 | 102.50 ± 0.71 | **3.5 ± 0.7** |" in md
    assert "| AE pretrain + free bits (lambda 5) (reported: Li et al. 2019) | standard | - | - | 32 |" in md


def test_probe_recovers_a_planted_label():
    """Means = 3 * one_hot(y) + N(0, 0.3^2): the probe is ~always right and I(z; y) >= H(y) - CE is
    close to H(y) ~= log 4; with pure-noise features the bound is ~0 and accuracy is chance."""
    g = torch.Generator().manual_seed(0)
    y_train, y_test = torch.randint(4, (800,), generator=g), torch.randint(4, (400,), generator=g)

    def features(y: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(len(y), 6)
        x[torch.arange(len(y)), y] = 3.0
        return x + 0.3 * torch.randn(len(y), 6, generator=g)

    r = fit_probe(features(y_train), y_train.tolist(), features(y_test), y_test.tolist())
    assert r.accuracy > 0.98
    assert r.log_k == pytest.approx(math.log(4))
    assert r.label_entropy - 0.1 < r.mi_lower_bound <= r.label_entropy <= r.log_k + 1e-9
    p = torch.bincount(y_test, minlength=4).double() / len(y_test)      # H(y) of the test labels, plug-in
    assert r.label_entropy == pytest.approx(float(-(p * p.log()).sum()))
    assert r.mi_lower_bound == pytest.approx(r.label_entropy - r.cross_entropy)
    noise = fit_probe(torch.randn(800, 6, generator=g), y_train.tolist(), torch.randn(400, 6, generator=g),
                      y_test.tolist())
    assert noise.accuracy < 0.4 and noise.mi_lower_bound < 0.05


def test_plot_writes_a_png(tmp_path):
    from textsvae.reporting.plot import plot_runs

    dirs = []
    for i, decoder in enumerate(("standard", "skip")):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model": {"decoder": decoder}, "train": {"method": "vae",
                                                                                           "seed": 0}}))
        rows = [{"epoch": e, "step": 10 * e, "beta": min(1.0, e / 2), "valid_kl": 1.0 / e, "valid_mi": 0.5,
                 "valid_au": 2, "valid_rec": 50.0 - e} for e in (1, 2, 3)]
        (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        dirs.append(d)
    out = CliRunner().invoke(cli, ["plot", *map(str, dirs), "-o", str(tmp_path / "curves.png")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="no training log"):
        plot_runs([tmp_path], tmp_path / "x.png")
    (dirs[0] / "monitor.jsonl").write_text(json.dumps({"step": 5, "valid_kl": 3.0}) + "\n")   # no lr in it
    with pytest.raises(ConfigError, match="unknown panel"):
        plot_runs(dirs, tmp_path / "x.png", panels=("valid_kl", "lr_typo"))


@pytest.fixture
def drawn(monkeypatch) -> dict:
    """{"axes": the panels} of the next figure that matplotlib.pyplot.subplots makes."""
    seen = {}
    real_subplots = __import__("matplotlib.pyplot").pyplot.subplots

    def spy(*args, **kwargs):
        fig, axes = real_subplots(*args, **kwargs)
        seen["axes"] = axes[0]
        return fig, axes

    monkeypatch.setattr("matplotlib.pyplot.subplots", spy)
    return seen


def test_protocol_panels_read_the_per_epoch_log(tmp_path, drawn):
    """lr and valid_loss are per-epoch values: per_epoch reads log.jsonl even beside a monitor.jsonl."""
    from textsvae.reporting import plot

    d = tmp_path / "run"
    d.mkdir()
    (d / "log.jsonl").write_text("".join(json.dumps({"epoch": e, "lr": 1.0 / 2 ** (e // 3), "valid_loss": 9.0 - e,
                                                     "valid_kl": 0.1, "valid_mi": 0.0, "valid_au": 0}) + "\n"
                                         for e in range(1, 7)))
    (d / "monitor.jsonl").write_text(json.dumps({"step": 5, "epoch": 0.5, "valid_kl": 3.0}) + "\n")
    plot.plot_runs([d], tmp_path / "p.png", panels=plot.PROTOCOL_PANELS, per_epoch=True)
    lr_panel = drawn["axes"][list(plot.PROTOCOL_PANELS).index("lr")]
    assert list(lr_panel.lines[0].get_ydata()) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert [ax.get_title() for ax in drawn["axes"]][0] == "loss, -ELBO (valid)"


def test_an_lm_is_labelled_as_one_and_draws_no_z_curves(tmp_path, drawn):
    """The LM logs KL 0 and beta 1 (no z): its line is in the loss and LR panels only, named LSTM-LM."""
    from textsvae.reporting import plot

    dirs = []
    for decoder in ("lm", "skip"):
        d = tmp_path / decoder
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model": {"decoder": decoder},
                                                   "train": {"method": "vae", "seed": 2}}))
        (d / "log.jsonl").write_text("".join(json.dumps({"epoch": e, "lr": 1.0, "beta": 1.0, "valid_loss": 9.0 - e,
                                                         "valid_kl": 0.0, "valid_mi": 0.0, "valid_au": 0}) + "\n"
                                             for e in (1, 2)))
        dirs.append(d)
    plot.plot_runs(dirs, tmp_path / "p.png", panels=plot.PROTOCOL_PANELS, per_epoch=True)
    points = {(ax.get_title(), line.get_label()): len(line.get_xdata()) for ax in drawn["axes"] for line in ax.lines}
    assert points[("loss, -ELBO (valid)", "LSTM-LM s2")] == points[("learning rate", "LSTM-LM s2")] == 2
    assert points[("KL (valid)", "LSTM-LM s2")] == points[("MI (valid)", "LSTM-LM s2")] == 0
    assert points[("active units (valid)", "LSTM-LM s2")] == 0 and points[("KL (valid)", "skip vae s2")] == 2


def test_run_labels_name_a_precision_other_than_fp32(tmp_path):
    """Two runs of one method in fp32 and bf16 get two labels in a plot's legend."""
    from textsvae.reporting.plot import run_label

    labels = []
    for precision in ("fp32", "bf16", None):
        d = tmp_path / str(precision)
        d.mkdir()
        train = {"method": "anneal", "seed": 0, **({"precision": precision} if precision else {})}
        (d / "config.json").write_text(json.dumps({"model": {"decoder": "skip"}, "train": train}))
        labels.append(run_label(d))
    assert labels == ["skip anneal s0", "skip anneal s0 bf16", "skip anneal s0"]


def test_results_and_table_commands(tmp_path):
    (tmp_path / "r1").mkdir()
    write_rows(tmp_path / "r1", spec("r1"), {"epochs": 1, "steps": 2, "train_seconds": 60.0, "device": "cpu"},
               {"test": {"iw_nll": 50.0, "kl": 1.0, "mi": 0.4, "au": 1, "ppl": 80.0}}, 0.0, PROV)
    runner = CliRunner()
    out = runner.invoke(cli, ["results", "--results", str(tmp_path)])
    assert out.exit_code == 0 and "hand: 1 run(s) finished" in out.output and "50.0" in out.output
    bdir = tmp_path / "benchmarks"
    bdir.mkdir()
    (bdir / "one.toml").write_text('preset = "tiny"\n[[methods]]\nmethod = "vae"\n')
    out = runner.invoke(cli, ["table", "one", "--benchmarks-dir", str(bdir), "--results", str(tmp_path)])
    assert out.exit_code == 0 and "| vae | standard | 0 | - |" in out.output  # its run is not in the store
    target = tmp_path / "tables" / "one.md"
    out = runner.invoke(cli, ["table", "one", "--benchmarks-dir", str(bdir), "--results", str(tmp_path),
                              "-o", str(target)])
    assert out.exit_code == 0, out.output
    text = target.read_text()
    assert "Regenerate: `textsvae bench one --results" in text and "textsvae table one" in text
    assert "Runs: 0 finished, 0 failed, 1 not finished of 1" in text and "| Method | Decoder |" in text
