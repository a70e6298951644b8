"""Paired comparisons (textsvae/reporting/compare.py, `textsvae compare`): the statistics against closed forms and a
coverage simulation, and the command on tiny real runs of a benchmark (made by `bench`, which writes the
per-sentence scores), including the one-line refusals."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from textsvae.bench.grid import load_benchmark
from textsvae.bench.runner import run_benchmark
from textsvae.cli import cli
from textsvae.reporting import compare as C

T975_2 = 4.302652729749464     # t_{0.975} with 2 degrees of freedom (tables)

BENCH = """
description = "two decoders, two seeds"
preset = "tiny"
seeds = [0, 1]
decoders = ["standard", "skip"]
eval_splits = ["test"]
metrics = ["iw_nll", "kl", "mi", "au"]
[settings]
synthetic_train = 200
epochs = 1
max_steps = 2
iw_samples = 3
monitor_size = 10
[[methods]]
method = "vae"
[[methods]]
label = "LSTM-LM"
method = "vae"
decoders = ["lm"]
seeds = [0]
"""


# -- the statistics on synthetic numbers --------------------------------------------------------------------
def test_paired_mean_and_ratio_equal_their_closed_forms():
    """d = 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), se = sd / 2, normal interval mean +- 1.959964 se.
    d = 2, 4 over T = 1, 3: R = 6 / 4, residuals d - R T = +-0.5, se = sqrt(0.5 / (2 * 1)) / mean(T) = 0.25."""
    r = C.paired_mean(np.array([1.0, 2.0, 3.0, 4.0]))
    se = math.sqrt(5 / 3) / 2
    assert r["mean"] == 2.5 and r["se"] == pytest.approx(se, rel=1e-12)
    assert r["normal"] == pytest.approx([2.5 - 1.959963984540054 * se, 2.5 + 1.959963984540054 * se], rel=1e-12)
    q = C.paired_ratio(np.array([2.0, 4.0]), np.array([1.0, 3.0]))
    assert q["mean"] == 1.5 and q["se"] == pytest.approx(0.25, rel=1e-12)
    assert q["normal"] == pytest.approx([1.5 - 1.959963984540054 * 0.25, 1.5 + 1.959963984540054 * 0.25])


def test_over_seeds_is_a_t_interval_with_n_minus_1_degrees_of_freedom():
    """D = 1, 2, 3: mean 2, std 1, interval 2 +- t_{0.975, 2} / sqrt(3); one seed gives no interval."""
    r = C.over_seeds([1.0, 2.0, 3.0])
    assert (r["n"], r["mean"], r["std"]) == (3, 2.0, 1.0)
    assert r["t95"] == pytest.approx([2 - T975_2 / math.sqrt(3), 2 + T975_2 / math.sqrt(3)], rel=1e-12)
    one = C.over_seeds([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7 and one["std"] is None and one["t95"] is None


def test_the_paired_bootstrap_interval_covers_the_true_difference_95_percent_of_the_time():
    """400 simulated paired samples (n = 100, A and B correlated): the 95% percentile interval of the mean
    difference holds the true difference (0.3) in 95% +- 3% of them (the simulation's own sd is 1.1%)."""
    rng = np.random.default_rng(7)
    hits = 0
    for i in range(400):
        common = rng.normal(0, 2, 100)
        a = common + rng.normal(0, 1, 100)
        b = common + 0.3 + rng.normal(0, 1, 100)
        low, high = C.bootstrap_interval((b - a,), C._mean, n_resamples=500, seed=i)
        hits += low <= 0.3 <= high
    assert 0.92 <= hits / 400 <= 0.98


def test_the_bootstrap_is_repeatable_with_its_seed():
    d = np.random.default_rng(0).normal(size=50)
    assert C.bootstrap_interval((d,), C._mean, 300, 5) == C.bootstrap_interval((d,), C._mean, 300, 5)
    assert C.bootstrap_interval((d,), C._mean, 300, 5) != C.bootstrap_interval((d,), C._mean, 300, 6)


def _fake(frame: pd.DataFrame, **meta) -> C.RunScores:
    base = {"split": "test", "iw_samples": 5, "eval_precision": "fp32", "mi": 0.5, "mi_se": 0.01, "au": 2,
            "au_threshold": 0.01}
    return C.RunScores(Path("x"), {**base, **meta}, frame, seed=0)


@pytest.mark.parametrize("change, message", [
    ({"split": "valid"}, "cannot compare: the splits differ (A: test, B: valid)"),
    ({"iw_samples": 50}, "cannot compare: K differs (A: K=5, B: K=50)"),
    ({"eval_precision": "bf16"}, "cannot compare: the precisions differ (A: fp32, B: bf16)"),
])
def test_runs_scored_differently_are_refused_naming_what_differs(change, message):
    frame = pd.DataFrame({"text_hash": [1, 2], "n_tokens": [3, 4]})
    with pytest.raises(C.CompareError) as err:
        C.check_comparable(_fake(frame), _fake(frame, **change))
    assert str(err.value).startswith(message)
    other = pd.DataFrame({"text_hash": [1, 9], "n_tokens": [3, 4]})
    with pytest.raises(C.CompareError, match=r"the sentences differ \(1 of 2, the first at sentence 1\)"):
        C.check_comparable(_fake(frame), _fake(other))
    C.check_comparable(_fake(frame), _fake(frame, iw_samples=None))   # an LM's exact scores have no K


# -- real runs ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_runs(tmp_path_factory):
    """The benchmark's five tiny runs, run by `bench` (which evaluates and writes the scores)."""
    root = tmp_path_factory.mktemp("cmp")
    (root / "b").mkdir()
    (root / "b" / "pair.toml").write_text(BENCH)
    spec = load_benchmark("pair", root / "b")
    report = run_benchmark(spec, root / "results", jobs=1, threads=1)
    assert not report.failed, report.failed
    folders = {(s.label, s.decoder, s.seed): root / "results" / s.run_id for s in spec.runs}
    return root, folders


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_bench_writes_scores_for_every_run(bench_runs):
    _, folders = bench_runs
    for (label, decoder, _), folder in folders.items():
        k = 0 if decoder == "lm" else 3
        frame = pd.read_parquet(folder / f"scores_test_k{k}.parquet")
        saved = json.loads((folder / f"eval_test_k{k}.json").read_text())
        assert -frame.iw_ll.mean() == pytest.approx(saved["iw_nll"], abs=1e-9)


def test_a_run_compared_with_itself_differs_by_zero(bench_runs):
    _, folders = bench_runs
    run = folders[("vae", "skip", 0)]
    a = C.load_scores(run)
    result = C.compare([(a, a)], n_resamples=50, mi_resamples=20)
    for name, entry in result["metrics"].items():
        (r,) = entry["runs"]
        parts = [r["per_sentence"], r["per_token"]] if name in C.SENTENCE_METRICS else [r]
        for part in parts:
            assert part.get("mean", part.get("value")) == 0.0
            assert part["bootstrap"] == [0.0, 0.0]
            if "normal" in part:
                assert part["normal"] == [0.0, 0.0] and part["se"] == 0.0


def test_a_constant_shift_per_sentence_is_found_exactly(bench_runs, tmp_path):
    """B = A with every log-likelihood lowered by 0.25 nats: IW-NLL differs by +0.25 per sentence, with se 0,
    interval [0.25, 0.25], and by 0.25 N / sum(T) per token; the other metrics by 0."""
    _, folders = bench_runs
    run = folders[("vae", "standard", 0)]
    shifted = tmp_path / "shifted"
    shutil.copytree(run, shifted)
    frame = pd.read_parquet(shifted / "scores_test_k3.parquet")
    frame["iw_ll"] = frame["iw_ll"] - 0.25
    frame.to_parquet(shifted / "scores_test_k3.parquet", index=False)
    result = C.compare([(C.load_scores(run), C.load_scores(shifted))], ["iw_nll", "kl"], n_resamples=50)
    nll = result["metrics"]["iw_nll"]["runs"][0]
    assert nll["per_sentence"]["mean"] == pytest.approx(0.25, abs=1e-12)
    assert nll["per_sentence"]["se"] == pytest.approx(0.0, abs=1e-12)
    assert nll["per_sentence"]["bootstrap"] == pytest.approx([0.25, 0.25], abs=1e-12)
    tokens = frame.n_tokens.sum()
    assert nll["per_token"]["mean"] == pytest.approx(0.25 * len(frame) / tokens, abs=1e-12)
    assert result["metrics"]["kl"]["runs"][0]["per_sentence"]["mean"] == 0.0


def test_compare_two_runs_on_the_command_line(bench_runs):
    _, folders = bench_runs
    a, b = folders[("vae", "standard", 0)], folders[("vae", "skip", 0)]
    out = invoke("compare", a, b, "--metric", "iw_nll", "--resamples", 50, "--json")
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    fa, fb = (pd.read_parquet(f / "scores_test_k3.parquet") for f in (a, b))
    d = -(fb.iw_ll - fa.iw_ll).to_numpy()
    ps = result["metrics"]["iw_nll"]["runs"][0]["per_sentence"]
    assert ps["mean"] == pytest.approx(d.mean(), abs=1e-12)
    assert ps["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)), rel=1e-9)
    text = invoke("compare", a, b, "--resamples", 50)
    assert text.exit_code == 0, text.output
    assert "over seeds: n = 1, no interval over seeds" in text.output and "\nmi (higher is better)" in text.output


def test_groups_of_a_benchmark_are_paired_by_seed(bench_runs):
    """vae/skip minus vae/standard over seeds 0 and 1: the mean of the two per-seed differences, their std
    and the t interval with 1 degree of freedom."""
    root, folders = bench_runs
    out = invoke("compare", "vae/standard", "vae/skip", "--bench", "pair", "--benchmarks-dir", root / "b",
                 "--results", root / "results", "--metric", "iw_nll", "--metric", "au", "--resamples", 50, "--json")
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    per_seed = []
    for seed in (0, 1):
        fa, fb = (pd.read_parquet(folders[("vae", d, seed)] / "scores_test_k3.parquet") for d in ("standard", "skip"))
        per_seed.append(float((fa.iw_ll - fb.iw_ll).mean()))
    over = result["metrics"]["iw_nll"]["over_seeds"]["per_sentence"]
    assert result["seeds"] == [0, 1] and over["n"] == 2
    assert over["mean"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    half = 12.706204736174707 * np.std(per_seed, ddof=1) / math.sqrt(2)      # t_{0.975} with 1 df
    assert over["t95"] == pytest.approx([np.mean(per_seed) - half, np.mean(per_seed) + half], abs=1e-9)
    # the LM group has seed 0 only: one pair, no interval over seeds, and seed 1 left out
    lm = invoke("compare", "LSTM-LM/lm", "vae/standard", "--bench", "pair", "--benchmarks-dir", root / "b",
                "--results", root / "results", "--resamples", 50)
    assert lm.exit_code == 0, lm.output
    assert "no interval over seeds" in lm.output and "left out: seed(s) 1" in lm.output


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bad_input_is_one_line_exit_2_and_writes_nothing(bench_runs, tmp_path, tiny_corpus):
    root, folders = bench_runs
    a = folders[("vae", "standard", 0)]
    unscored = tmp_path / "unscored"
    shutil.copytree(a, unscored)
    for p in unscored.glob("scores_*"):
        p.unlink()
    other_k = tmp_path / "other_k"
    shutil.copytree(a, other_k)
    for p in other_k.glob("*_test_k3.*"):
        p.rename(p.with_name(p.name.replace("_k3", "_k7")))
    saved = json.loads((other_k / "eval_test_k7.json").read_text())
    (other_k / "eval_test_k7.json").write_text(json.dumps({**saved, "iw_samples": 7}))
    other_data = tmp_path / "other_data"
    out = invoke("train", "--data", tiny_corpus, "--set", "max_steps=1", "--epochs", "1", "--set", "iw_samples=3",
                 "--threads", "1", "-o", other_data)
    assert out.exit_code == 0, out.output
    assert invoke("eval", other_data).exit_code == 0
    where = ["--bench", "pair", "--benchmarks-dir", root / "b", "--results", root / "results"]
    cases = [
        ([a, unscored], f"Error: {unscored} has no per-sentence scores for split test: run "
                        f"`textsvae eval {unscored} --split test`"),
        ([a, other_k], "Error: cannot compare: K differs (A: K=3, B: K=7)"),
        ([a, other_data], "Error: cannot compare: the sentences differ (A: 20 sentences, B: 8)"),
        ([a, a, "--split", "valid"], f"Error: {a} has no per-sentence scores for split valid"),
        (["vae/standard", "anneal/skip", *where], "Error: group anneal/skip has no finished run in"),
        (["vae/standard", "vae/skip", "--bench", "pair", "--benchmarks-dir", root / "b", "--results",
          tmp_path / "empty"], "Error: group vae/standard has no finished run in"),
    ]
    before = _files(tmp_path), _files(root)
    for args, message in cases:
        out = invoke("compare", *args)
        assert out.exit_code == 2, (args, out.output)
        assert out.output.startswith(message), (args, out.output)
        assert out.output.count("\n") == 1, out.output
    assert (_files(tmp_path), _files(root)) == before
