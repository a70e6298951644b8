"""A benchmark whose metrics name mi_minibatch (He et al.'s per-minibatch MI) gets it in its rows."""
from __future__ import annotations

from textsvae.bench.grid import load_benchmark
from textsvae.bench.results import load_results
from textsvae.bench.runner import run_benchmark
from textsvae.evaluation.run_eval import evaluate_run

BENCH = """
description = "mi_minibatch rows"
preset = "tiny"
seeds = [0]
decoders = ["standard"]
eval_splits = ["test"]
metrics = ["iw_nll", "mi", "mi_minibatch"]
[settings]
synthetic_train = 100
epochs = 1
max_steps = 2
iw_samples = 2
monitor_size = 10
[[methods]]
method = "vae"
"""


def test_mi_minibatch_is_computed_when_the_benchmark_names_it(tmp_path, write_bench):
    bench = load_benchmark("mib", write_bench(tmp_path / "b", "mib", BENCH))
    assert [spec.mi_batch for spec in bench.runs] == [True]
    results = tmp_path / "results"
    report = run_benchmark(bench, results, jobs=1, threads=1)
    assert report.finished and not report.failed
    df = load_results(results)
    row = df[df.metric == "mi_minibatch"]
    assert len(row) == 1
    direct = evaluate_run(results / bench.runs[0].run_id, "test", mi_batch=True)
    assert row.value.iloc[0] == direct["mi_minibatch"] != direct["mi"]
    # a benchmark that does not name it computes no such row
    plain = load_benchmark("plain", write_bench(tmp_path / "c", "plain", BENCH.replace(', "mi_minibatch"', "")))
    assert [spec.mi_batch for spec in plain.runs] == [False]
