"""Benchmark grids, run ids, the runner (skip finished, resume, failures, locks) and the executors."""
from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from click.testing import CliRunner

from textsvae.bench import runner as B
from textsvae.bench import grid as G
from textsvae.bench.executors import parse_jobs, threads_per_job
from textsvae.bench.executors.local import LocalProcessExecutor
from textsvae.bench.grid import BenchmarkError, load_benchmark, run_id
from textsvae.bench.locks import LockBusy, acquire_lock
from textsvae.bench.results import load_results
from textsvae.bench.runner import run_benchmark
from textsvae.cli import cli
from textsvae.core.config import ConfigError, apply_overrides

GRID = """
description = "a grid"
preset = "tiny"
seeds = [0, 1]
decoders = ["standard", "skip"]
[settings]
synthetic_train = 100
max_steps = 2
[[methods]]
method = "vae"
[[methods]]
method = "anneal"
params = { start = [0.0, 0.5], epochs = 2.0 }
[[methods]]
method = "vae"
decoders = ["lm"]
label = "LSTM-LM"
seeds = [0]
[[methods]]
method = "vae"            # listed twice: runs once
"""

# two real (tiny) runs: 2 optimiser steps on 100 synthetic sentences, K = 2
TINY = """
description = "tiny test benchmark"
preset = "tiny"
seeds = [0]
decoders = ["standard", "skip"]
eval_splits = ["test"]
probe = true
metrics = ["iw_nll", "kl", "mi", "au", "ppl", "probe_acc", "probe_mi"]
[settings]
synthetic_train = 100
epochs = 1
max_steps = 2
iw_samples = 2
monitor_size = 10
[[methods]]
method = "vae"
"""


def test_grid_expansion_and_labels(tmp_path, write_bench):
    bdir = write_bench(tmp_path / "b", "grid", GRID)
    b = load_benchmark("grid", bdir)
    # vae: 2 decoders x 2 seeds; anneal: 2 starts x 2 decoders x 2 seeds; LM: 1; the repeat adds none
    assert len(b.runs) == 4 + 8 + 1
    assert len({r.run_id for r in b.runs}) == len(b.runs)
    anneal = [r for r in b.runs if r.method == "anneal"]
    assert {r.label for r in anneal} == {"anneal (start=0.0, epochs=2.0)", "anneal (start=0.5, epochs=2.0)"}
    assert all(r.config.train.method_params["epochs"] == 2.0 for r in anneal)
    lm = [r for r in b.runs if r.decoder == "lm"]
    assert [(r.label, r.seed, r.config.model.decoder) for r in lm] == [("LSTM-LM", 0, "lm")]
    assert all(r.config.train.max_steps == 2 and r.config.data.synthetic_train == 100 for r in b.runs)


# the ids of GRID's runs, computed once (2026-12) and committed: an id must not change across versions, or
# every results folder made before stops matching its benchmark (and finished runs would be run again)
GRID_IDS = ["f9e4d2f6f96a", "6736cf80c3be", "c6ecaffc0079", "1716cb25335f", "d69688a0cc11", "f9ea82a5d4eb",
            "b3dc25ac7637", "6bd4ed453a08", "18ee52629528", "c3b34ddf4353", "5e90d80f33dd", "6c5a34bec8f8",
            "d202a8520c54"]


def test_run_ids_are_stable_and_depend_on_config_and_seed(tmp_path, write_bench):
    bdir = write_bench(tmp_path / "b", "grid", GRID)
    first = [r.run_id for r in load_benchmark("grid", bdir).runs]
    assert first == GRID_IDS
    config = load_benchmark("grid", bdir).runs[0].config
    assert run_id(config) == run_id(apply_overrides(config, {"threads": 7, "progress": False}))  # execution only
    assert run_id(config) != run_id(apply_overrides(config, {"seed": config.train.seed + 1}))
    assert run_id(config) != run_id(apply_overrides(config, {"iw_samples": 3}))
    # defaults written out or left implicit give the same id
    bdir2 = write_bench(tmp_path / "c", "grid", GRID.replace("epochs = 2.0 }", "epochs = 2.0, steps = 0 }"))
    assert first == [r.run_id for r in load_benchmark("grid", bdir2).runs]


def test_committed_results_keep_their_run_ids():
    """The shipped `quick` benchmark's run ids are the folder names under results/quick, made by the code of
    the day they were trained (README: '92e5d20d0cf2' is its first run): the id of each folder's own
    config.json, and of the benchmark's runs today, is still that name."""
    from pathlib import Path

    from textsvae.core.rundir import read_run_config

    committed = Path(__file__).resolve().parents[1] / "results" / "quick"
    folders = sorted(p.name for p in committed.iterdir() if (p / "config.json").is_file())
    assert len(folders) == 41
    assert [run_id(read_run_config(committed / name)) for name in folders] == folders
    ids = [r.run_id for r in load_benchmark("quick").runs]
    assert ids[0] == "92e5d20d0cf2" and sorted(ids) == folders


def test_bad_benchmarks_give_one_line_errors(tmp_path, write_bench):
    bdir = write_bench(tmp_path / "b", "grid", GRID)
    with pytest.raises(BenchmarkError, match="unknown benchmark 'nope'; valid benchmarks: .*grid"):
        load_benchmark("nope", bdir)
    write_bench(bdir, "typo", GRID.replace("seeds = [0, 1]", "sedes = [0]"))
    with pytest.raises(BenchmarkError, match=r"unknown key\(s\) \['sedes'\]"):
        load_benchmark("typo", bdir)
    write_bench(bdir, "badparam", GRID.replace("start = [0.0, 0.5]", "stat = 1.0"))
    with pytest.raises(BenchmarkError, match="unknown parameter 'stat'"):
        load_benchmark("badparam", bdir)
    write_bench(bdir, "badfield", GRID.replace("max_steps = 2", "max_stepz = 2"))
    with pytest.raises(BenchmarkError, match="unknown setting 'max_stepz'"):
        load_benchmark("badfield", bdir)
    for value in ('"iw_nll"', '[{ name = "kl" }]'):
        write_bench(bdir, "badmetrics", f"metrics = {value}\n" + GRID)
        with pytest.raises(BenchmarkError, match="metrics must be a list of metric names"):
            load_benchmark("badmetrics", bdir)
    for bad in ("0", "-2", "two"):
        with pytest.raises(ConfigError, match="--jobs"):
            parse_jobs(bad, 4, gpu=False)
    assert isinstance(BenchmarkError("x"), ConfigError)


def test_repo_benchmarks_are_found_and_valid():
    names = G.list_benchmarks()
    assert {"quick", "ptb-skip", "ptb-paper", "yahoo-paper"} <= set(names)
    skip = load_benchmark("ptb-skip")
    assert len(skip.runs) == 2 * 2 * 3 + 1  # decoders x methods x seeds, plus one LSTM-LM
    assert {r.method for r in skip.runs} == {"vae", "anneal"}
    assert {r.decoder for r in skip.runs} == {"standard", "skip", "lm"}
    assert load_benchmark("yahoo-paper").reported == ("he2019-yahoo",)
    assert load_benchmark("ptb-paper").reported == ()


def test_jobs_and_threads():
    assert parse_jobs("auto", 3, gpu=True) == 1
    assert 1 <= parse_jobs("auto", 3, gpu=False) <= 3
    assert parse_jobs("2", 10, gpu=False) == 2
    from textsvae.bench.executors import available_cores

    cores = available_cores()
    assert threads_per_job(1) == cores
    assert threads_per_job(cores * 4) == 1


def test_process_executor_returns_every_result():
    got = sorted(LocalProcessExecutor(2).map_unordered(operator.neg, [1, 2, 3]))
    assert got == [-3, -2, -1]


def test_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path):
    lock = acquire_lock(tmp_path)
    with pytest.raises(LockBusy, match="held by process"):
        acquire_lock(tmp_path)
    lock.unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    info = json.loads(acquire_lock(tmp_path).read_text())
    (tmp_path / ".lock").write_text(json.dumps({**info, "pid": dead.pid}))
    assert json.loads(acquire_lock(tmp_path).read_text())["pid"] != dead.pid


def test_bench_runs_missing_runs_once_and_resumes(tmp_path, monkeypatch, write_bench):
    """First call is interrupted after training run 1 (Ctrl-C during its evaluation); the second
    resumes it without retraining and does the rest; the third does nothing and says so."""
    bdir = write_bench(tmp_path / "b", "tiny", TINY)
    results = tmp_path / "results"
    b = load_benchmark("tiny", bdir)
    assert len(b.runs) == 2

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    import textsvae.evaluation.run_eval

    with monkeypatch.context() as m:
        m.setattr(textsvae.evaluation.run_eval, "evaluate_loaded", interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_benchmark(b, results, jobs=1, threads=1)
    first = results / b.runs[0].run_id
    assert (first / "best.pt").exists() and not (first / "rows.csv").exists() and not (first / ".lock").exists()
    log_rows = (first / "log.jsonl").read_text().splitlines()

    report = run_benchmark(b, results, jobs=1, threads=1)
    assert sorted(report.finished) == sorted(r.run_id for r in b.runs) and not report.failed
    assert (first / "log.jsonl").read_text().splitlines() == log_rows  # resumed, not retrained
    df = load_results(results)
    assert set(df.run_id) == {r.run_id for r in b.runs}
    test_rows = df[(df.split == "test")]
    assert {"iw_nll", "kl", "mi", "au", "ppl", "probe_acc", "probe_mi"} <= set(test_rows.metric)
    importance = test_rows[test_rows.metric.isin(["iw_nll", "ppl", "elbo"])]
    assert (importance.iw_samples == 2).all() and test_rows[test_rows.metric == "kl"].iw_samples.isna().all()
    mi_rows = test_rows[test_rows.metric == "mi"]
    assert (mi_rows.mi_n == mi_rows.n_sentences).all() and (df.status == "finished").all()
    stamp = (first / "rows.csv").stat().st_mtime_ns

    again = run_benchmark(b, results, jobs=1, threads=1)
    assert again.finished == [] and again.already_done == 2
    assert (first / "rows.csv").stat().st_mtime_ns == stamp
    out = CliRunner().invoke(cli, ["bench", "tiny", "--benchmarks-dir", str(bdir), "--results", str(results),
                                   "--threads", "1"])
    assert out.exit_code == 0, out.output
    assert "nothing to do, all 2 runs are finished" in out.output
    assert "| vae | standard | 1 |" in out.output
    import torch

    assert torch.get_num_threads() == 1  # runs used the threads asked for (conftest's 1)


def test_a_failed_run_is_recorded_and_bench_goes_on(tmp_path, monkeypatch, write_bench):
    from textsvae.training.train import TrainingDiverged

    bdir = write_bench(tmp_path / "b", "tiny", TINY.replace("probe = true", "probe = false"))
    results = tmp_path / "results"
    b = load_benchmark("tiny", bdir)
    real_train = B._train

    def diverge_on_skip(folder, spec, threads, fresh):
        if spec.decoder == "skip":
            raise TrainingDiverged("loss became NaN at step 1")
        return real_train(folder, spec, threads, fresh)

    monkeypatch.setattr(B, "_train", diverge_on_skip)
    report = run_benchmark(b, results, jobs=1, threads=1)
    assert len(report.finished) == 1
    assert [(s.decoder, msg) for s, msg in report.failed] == [("skip", "TrainingDiverged: loss became NaN at step 1")]
    df = load_results(results)
    failed = df[df.status == "failed"]
    assert list(failed.decoder) == ["skip"] and "NaN" in failed.error.iloc[0]
    # not retried unless asked; still reported
    again = run_benchmark(b, results, jobs=1, threads=1)
    assert again.finished == [] and len(again.failed) == 1
    monkeypatch.setattr(B, "_train", real_train)
    retried = run_benchmark(b, results, jobs=1, retry_failed=True, threads=1)
    assert len(retried.finished) == 1 and not retried.failed
    assert (load_results(results).status == "finished").all()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_run_this_machine_cannot_run_is_skipped_not_failed(tmp_path, write_bench):
    """A grid entry for a device (or precision) this machine lacks waits for a machine that has it."""
    text = TINY.replace("probe = true", "probe = false") + '[[methods]]\nmethod = "anneal"\ndecoders = ["standard"]\n' \
        'settings = { device = "cuda" }\n'
    bdir = write_bench(tmp_path / "b", "tiny", text)
    results = tmp_path / "results"
    b = load_benchmark("tiny", bdir)
    report = run_benchmark(b, results, jobs=1, threads=1)
    assert len(report.finished) == 2 and not report.failed
    [(spec, message)] = report.skipped
    assert spec.method == "anneal" and message == "device 'cuda' requested but CUDA is not available"
    assert B.outcome_of(results / spec.run_id) == "missing"          # not marked failed: another machine runs it
    out = CliRunner().invoke(cli, ["bench", "tiny", "--benchmarks-dir", str(bdir), "--results", str(results)])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert f"skipped: {spec.run_id} synthetic standard anneal seed 0: device 'cuda' requested" in out.output
    assert "1 run(s) skipped: this machine cannot run them" in out.output


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli, ["bench", "nope", "--benchmarks-dir", str(tmp_path)])
    assert out.exit_code == 2 and "unknown benchmark 'nope'" in out.output and "Traceback" not in out.output
    out = runner.invoke(cli, ["bench", "quick", "--jobs", "0", "--results", str(tmp_path / "r")])
    assert out.exit_code == 2 and "--jobs must be a positive integer" in out.output
    out = runner.invoke(cli, ["table", "quick", "--results", str(tmp_path / "missing")])
    assert out.exit_code == 2 and "results folder not found" in out.output


def test_executors_are_a_registry_with_one_line_errors():
    """An engine is a factory registered by name; an unknown name lists the valid ones, a duplicate fails."""
    from textsvae.bench.executors import EXECUTORS, make_executor, register_executor
    from textsvae.bench.executors.base import Executor

    class Reversed(Executor):
        def map_unordered(self, fn, tasks):
            for task in reversed(list(tasks)):
                self._started(task)
                yield fn(task)

    register_executor("reversed-test")(lambda jobs, settings: Reversed())
    try:
        started = []
        executor = make_executor(1, "reversed-test")
        executor.on_start(started.append)
        assert list(executor.map_unordered(operator.neg, [1, 2, 3])) == [-3, -2, -1] and started == [3, 2, 1]
        with pytest.raises(ConfigError, match="already registered"):
            register_executor("reversed-test")(lambda jobs, settings: Reversed())
    finally:
        EXECUTORS.pop("reversed-test")
    with pytest.raises(ConfigError, match=r"unknown executor 'nope'; valid executors: local"):
        make_executor(1, "nope")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) partition for executor 'local'; valid settings: gpus"):
        make_executor(2, "local", {"partition": "gpu"})
    with pytest.raises(ConfigError, match="gpus must be GPU indices"):
        make_executor(2, "local", {"gpus": "0,a"})


def visible_gpu(seconds: float) -> str:
    time.sleep(seconds)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_local_gpus_give_each_worker_its_own_device():
    """-E gpus=0,1 with 3 jobs: workers see GPU 0, 1, 0 (round robin, set before torch loads); no CUDA needed."""
    from textsvae.bench.executors import make_executor

    seen = list(make_executor(3, "local", {"gpus": "0,1"}).map_unordered(visible_gpu, [0.5] * 3))
    assert sorted(seen) == ["0", "0", "1"]


def test_status_reads_a_grids_state_from_the_results_folder(tmp_path, write_bench, monkeypatch):
    """One run of each state, made by hand; `bench --status` names them without running anything."""
    from textsvae.bench.results import write_failure, write_rows

    monkeypatch.setenv("TEXTSVAE_LOCK_STALE_S", "60")
    bdir = write_bench(tmp_path / "b", "six", TINY.replace("seeds = [0]", "seeds = [0, 1, 2]")
                       .replace("epochs = 1\n", "epochs = 4\n"))
    runs = load_benchmark("six", bdir).runs
    assert len(runs) == 6
    results = tmp_path / "results"
    folders = [results / r.run_id for r in runs]
    for f in folders:
        f.mkdir(parents=True)
    prov = {"git_commit": "x", "version": "0", "machine": "m"}
    write_rows(folders[0], runs[0], {"epochs": 1, "steps": 2, "train_seconds": 7380.0}, {"test": {"iw_nll": 1.0}},
               3000.0, prov)
    (folders[0] / "summary.json").write_text(json.dumps({"epochs": 62, "stop_reason": "stopped at plateau 5"}))
    write_failure(folders[1], runs[1], "TrainingDiverged: NaN at step 2", prov)
    for f, age in ((folders[2], 5), (folders[3], 3600)):
        (f / ".lock").write_text(json.dumps({"pid": 7, "host": "node-3", "job": "55"}))
        os.utime(f / ".lock", (time.time() - age, time.time() - age))
    (folders[4] / "config.json").write_text("{}")
    lr0 = runs[4].config.train.lr
    (folders[4] / "log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in (
        {"epoch": 1, "lr": lr0, "valid_loss": 104.5, "valid_kl": 0.5, "valid_mi": 0.25, "valid_au": 3,
         "seconds": 500.0},
        {"epoch": 2, "lr": lr0 / 4, "valid_loss": 105.125, "valid_kl": 0.125, "valid_mi": 0.0, "valid_au": 0,
         "seconds": 40.0},
        {"epoch": 3, "lr": lr0 / 4, "valid_loss": 105.125, "valid_kl": 0.125, "valid_mi": 0.0, "valid_au": 0,
         "seconds": 92.0})))                                       # median 92 s: "1.5 min", not "2 min"
    (folders[3] / "log.jsonl").write_text('{"epoch": 1}\n')        # no validation logged: epochs only
    out = CliRunner().invoke(cli, ["bench", "six", "--benchmarks-dir", str(bdir), "--results", str(results),
                                   "--status"])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert lines[0].startswith("six: 1 finished, 1 running, 1 failed, 3 left (1 started, 1 stale, 1 not started)")
    by_id = {line.split()[1]: line for line in lines[1:]}
    assert by_id[runs[0].run_id].endswith(": 62 epochs (stopped at plateau 5); train 2.0 h, eval 50 min")
    assert by_id[runs[1].run_id].startswith("failed") and "NaN at step 2" in by_id[runs[1].run_id]
    assert by_id[runs[2].run_id].startswith("running") and "node-3, job 55" in by_id[runs[2].run_id]
    assert by_id[runs[3].run_id].startswith("stale") and by_id[runs[4].run_id].startswith("started")
    assert by_id[runs[5].run_id].startswith("missing")
    epochs = runs[4].config.train.epochs
    max_decays = runs[4].config.train.max_decays
    assert (f"epoch 3 of {epochs} (valid loss 105.12, best 104.50 at epoch 1; kl 0.12, mi 0.00, au 0; "
            f"lr {lr0 / 4:g}: 2 of {max_decays} halvings, 2 of {runs[4].config.train.decay_patience} worse epochs; "
            f"1.5 min per epoch)") in by_id[runs[4].run_id]
    assert f"epoch 1 of {epochs}; pid 7 on node-3" in by_id[runs[3].run_id]
    assert not (folders[5] / "rows.csv").exists()                  # nothing ran


def test_worse_epochs_replays_the_lr_rule_from_the_log():
    """Patience 2 from epoch 2 on: the count of worse epochs in a row that --status shows."""
    from textsvae.bench.status import worse_epochs
    from textsvae.core.config import TrainConfig

    train = TrainConfig(decay_start_epoch=2, decay_patience=2)

    def rows(losses, lrs, **extra):
        return [{"epoch": e, "valid_loss": v, "lr": lr, **extra} for e, (v, lr) in enumerate(zip(losses, lrs), 1)]

    # 10 is the reference; 11 and 10.5 are worse than it: 2 = patience after epoch 2, so the trainer halved
    assert worse_epochs(rows([10, 11, 10.5], [1, 1, 1]), train) == 0
    assert worse_epochs(rows([10, 11], [1, 1]), train) == 1
    assert worse_epochs(rows([10, 9, 9.5], [1, 1, 1]), train) == 1       # 9 became the reference
    # before the decay start the count reaches the patience without a halving (epoch 2 is not > 2)
    assert worse_epochs(rows([10, 11], [1, 1]), TrainConfig(decay_start_epoch=2, decay_patience=1)) == 1
    # a halving after epoch 3 (the next epoch's LR is lower) makes epoch 3's loss the reference
    assert worse_epochs(rows([10, 11, 12, 11.5, 12.5], [1, 1, 1, 0.5, 0.5]), train) == 1
    # pretrain-fb: reconstruction decides while pretraining; the second run (LR back up) starts afresh
    ae = [{"epoch": e, "valid_loss": 50.0 + e, "valid_rec": 40.0 - e, "lr": 1, "method_pretraining": True}
          for e in (1, 2)]
    assert worse_epochs(ae, train) == 0
    restarted = [{**ae[0]}, {**ae[1], "lr": 0.5}, {"epoch": 3, "valid_loss": 90.0, "lr": 1},
                 {"epoch": 4, "valid_loss": 91.0, "lr": 1}]
    assert worse_epochs(restarted, train) == 1


def test_runs_an_older_grid_made_are_named_not_silently_dropped(tmp_path, write_bench):
    """A run folder whose bench.json names this benchmark but whose id the grid no longer makes (the file or
    textsvae changed the config) is left out of table and status, with a note that says so."""
    from textsvae.bench.results import write_rows

    bdir = write_bench(tmp_path / "b", "one", TINY)
    runs = load_benchmark("one", bdir).runs
    results = tmp_path / "results"
    prov = {"git_commit": "x", "version": "0", "machine": "m"}
    for folder_id, benchmark in (("0ld0ld0ld0ld", "one"), ("0ther0ther00", "another")):
        (results / folder_id).mkdir(parents=True)
        write_rows(results / folder_id, replace(runs[0], run_id=folder_id, benchmark=benchmark), {"epochs": 1},
                   {"test": {"iw_nll": 1.0}}, 0.1, prov)
    where = ["--benchmarks-dir", str(bdir), "--results", str(results)]
    status = CliRunner().invoke(cli, ["bench", "one", *where, "--status"])
    note = (f"note: 1 run folder(s) of 'one' in {results} are not in this grid (another version of textsvae or "
            f"of the benchmark file made them, so their run ids differ) and are left out, e.g. 0ld0ld0ld0ld; "
            f"`textsvae results --results {results}` shows every run")
    assert status.exit_code == 0 and status.output.strip().splitlines()[-1] == note, status.output
    assert status.output.startswith("one: 0 finished")
    table = CliRunner().invoke(cli, ["table", "one", *where])
    assert table.exit_code == 0 and table.stderr.strip() == note and note not in table.stdout
    assert "| 0 | - |" in table.stdout                       # the old run's 1.0 is not in the table
    (results / "0ld0ld0ld0ld" / "bench.json").unlink()
    assert "note:" not in CliRunner().invoke(cli, ["bench", "one", *where, "--status"]).output


def test_bad_engine_settings_are_refused_even_when_every_run_is_finished(tmp_path, write_bench):
    bdir = write_bench(tmp_path / "b", "one", TINY)     # two runs of two steps
    args = ["bench", "one", "--benchmarks-dir", str(bdir), "--results", str(tmp_path / "r"), "--threads", "1"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "2 run(s) finished" in first.output, first.output
    out = CliRunner().invoke(cli, [*args, "-E", "nope=1"])
    assert out.exit_code == 2, out.output
    assert "unknown setting(s) nope for executor 'local'; valid settings: gpus" in out.output


def test_the_commit_comes_from_the_environment_the_checkout_or_nowhere(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    source = Path(B.__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=source, capture_output=True,
                          text=True).stdout.strip()
    monkeypatch.delenv("TEXTSVAE_GIT_COMMIT", raising=False)
    if head:  # a source checkout (CI's clone, an editable install)
        assert B.checkout_commit() in (head, head + "-dirty")
    monkeypatch.setenv("TEXTSVAE_GIT_COMMIT", " 0123456789ab ")
    assert B.checkout_commit() == B.provenance()["git_commit"] == "0123456789ab"
    # an installed copy inside some other git repository must not report that repository's commit
    site = tmp_path / "project" / "venv" / "site-packages"
    shutil.copytree(source / "textsvae", site / "textsvae", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "project" / "README").write_text("another project\n")
    for git in (["init", "-q"], ["add", "README"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *git], cwd=tmp_path / "project", check=True)
    env = {k: v for k, v in os.environ.items() if k != "TEXTSVAE_GIT_COMMIT"} | {"PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", "import textsvae.bench.runner as b; print(repr(b.checkout_commit()))"],
                         env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "''"


def test_the_machine_of_a_row_names_its_cpu_as_lscpu_does():
    """Rows say which CPU made them (float results differ between CPUs); lscpu, another reader of the
    same facts, is the oracle."""
    import shutil

    if shutil.which("lscpu") is None:
        pytest.skip("no lscpu here")
    out = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name:")]
    if not names:
        pytest.skip("lscpu names no CPU model here")
    assert B.provenance()["machine"].endswith(f" cores, {names[0]}")
