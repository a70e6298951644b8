"""`textsvae bench` under kills, concurrency and failures (issue 7): real `bench` subprocesses on a tiny grid.

Each case checks the store afterwards: every run finished exactly once, rows = runs x splits x metrics
with no duplicate (run_id, split, metric), and a SIGKILLed run resumed from its checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from textsvae.bench.grid import load_benchmark
from textsvae.bench.locks import pid_alive, read_lock
from textsvae.bench.results import load_results, write_rows
from textsvae.cli import cli
from textsvae.core.io import read_jsonl
from textsvae.core.metric_registry import metric_names

EPOCHS = 6
STEPS_PER_EPOCH = 7  # 200 synthetic sentences, batch 32
# three real runs (3 seeds) of 6 epochs x 7 steps, each about a second of training, K = 2
REL = f"""
description = "reliability test benchmark"
preset = "tiny"
seeds = [0, 1, 2]
eval_splits = ["test", "valid"]
metrics = ["iw_nll", "kl", "mi", "au", "ppl"]
[settings]
synthetic_train = 200
epochs = {EPOCHS}
iw_samples = 2
monitor_size = 10
[[methods]]
method = "vae"
"""
# every metric row a finished run has per split: each metric declared as reported by every evaluation
# (so a declared metric the evaluation does not compute fails here), among them the papers' five
METRICS = set(metric_names())
assert {"iw_nll", "ppl", "kl", "mi", "au"} <= METRICS
SPLITS = ("test", "valid")
ROW = re.compile(r"\[\d+/\d+\] (\w+)\s.*\[([0-9a-f]{12})\]")


def bench_proc(bdir: Path, results: Path, log: Path) -> subprocess.Popen:
    """`textsvae bench rel` as a child process: one job, one torch thread, output to a file."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "textsvae.cli", "bench", "rel", "--benchmarks-dir", str(bdir),
           "--results", str(results), "--jobs", "1", "--threads", "1"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL proc as soon as ready() holds (polled every 5 ms); fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "bench ended before the kill point"
        assert time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def check_store(results: Path, ids: list[str]) -> pd.DataFrame:
    """Every run finished; exactly runs x splits x metrics rows; no duplicate (run_id, split, metric)."""
    df = load_results(results)
    assert not df.duplicated(["run_id", "split", "metric"]).any()
    assert set(df.run_id) == set(ids) and (df.status == "finished").all()
    assert len(df) == len(ids) * len(SPLITS) * len(METRICS)
    for (_, split), group in df.groupby(["run_id", "split"]):
        assert split in SPLITS and set(group.metric) == METRICS
    for run in ids:
        folder = results / run
        assert json.loads((folder / "bench.json").read_text())["status"] == "finished"
        epochs = [r["epoch"] for r in read_jsonl(folder / "log.jsonl")]
        assert epochs == list(range(1, EPOCHS + 1))  # trained once, no doubled or lost epoch rows
        assert json.loads((folder / "summary.json").read_text())["steps"] == EPOCHS * STEPS_PER_EPOCH
        assert not list(folder.glob(".*.tmp"))
        if (folder / ".lock").exists():  # only a lock of a process killed after the run's rows, before unlocking
            assert not pid_alive(json.loads((folder / ".lock").read_text())["pid"])
    return df


def n_rows(results: Path) -> int:
    return len(load_results(results)) if results.exists() else 0


def test_sigkill_between_runs_and_mid_run_resumes_without_duplicate_or_lost_rows(tmp_path, write_bench):
    """Kill (a) once the first run's rows are complete, (b) inside a run (log.jsonl and last.pt of
    2-4 epochs, no rows.csv); a third `bench` finishes everything and resumes (b)'s run from last.pt."""
    bdir = write_bench(tmp_path / "b", "rel", REL)
    results = tmp_path / "results"
    ids = [r.run_id for r in load_benchmark("rel", bdir).runs]
    per_run = len(SPLITS) * len(METRICS)
    counts = {}

    # (a) between runs
    proc = bench_proc(bdir, results, tmp_path / "a.log")
    kill_when(proc, lambda: (results / ids[0] / "bench.json").exists())  # written after rows.csv
    counts["a"] = n_rows(results)
    first_rows = (results / ids[0] / "rows.csv").read_bytes()
    assert counts["a"] % per_run == 0 and counts["a"] >= per_run

    # (b) mid-run: a run with 3 or 4 epochs logged (so last.pt holds at least 2) and no rows yet
    def mid_run() -> Path | None:
        for run in ids:
            folder = results / run
            if not (folder / "rows.csv").exists() and (folder / "last.pt").exists():
                try:
                    if 3 <= len(read_jsonl(folder / "log.jsonl")) <= 4:
                        return folder
                except OSError:
                    pass
        return None

    proc = bench_proc(bdir, results, tmp_path / "b.log")
    kill_when(proc, lambda: mid_run() is not None)
    killed = mid_run() or next(results / r for r in ids if not (results / r / "rows.csv").exists())
    counts["b"] = n_rows(results)
    assert counts["b"] % per_run == 0 and counts["b"] >= counts["a"]
    assert (killed / ".lock").exists()  # left by the dead process; taken over below
    ckpt_epoch = torch.load(killed / "last.pt", weights_only=False)["state"]["epoch"]
    assert 2 <= ckpt_epoch < EPOCHS
    logged = len((killed / "log.jsonl").read_text().splitlines())  # may be ckpt_epoch + 1: killed before last.pt
    before = (killed / "log.jsonl").read_text().splitlines()[:ckpt_epoch]

    proc = bench_proc(bdir, results, tmp_path / "c.log")
    assert proc.wait(180) == 0, (tmp_path / "c.log").read_text()
    out = (tmp_path / "c.log").read_text()
    assert re.search(rf"resume\s+synthetic standard vae seed \d \[{killed.name}\]", out)
    assert "0 failed" in out
    check_store(results, ids)
    counts["after"] = n_rows(results)
    assert counts["after"] == len(ids) * per_run
    # resumed from epoch ckpt_epoch: its log rows (with their timings) are the ones written before the kill
    assert (killed / "log.jsonl").read_text().splitlines()[:ckpt_epoch] == before
    assert (results / ids[0] / "rows.csv").read_bytes() == first_rows  # a finished run is not redone
    print(f"\nrows: kill (a) {counts['a']}, kill (b) {counts['b']} (run {killed.name}: {logged} epochs logged, "
          f"last.pt at epoch {ckpt_epoch}), "
          f"after {counts['after']} = {len(ids)} runs x {len(SPLITS)} splits x {len(METRICS)} metrics")


def test_two_concurrent_benches_train_each_run_once(tmp_path, write_bench):
    """Two `bench` processes on one results folder: the per-run lock gives each run to one of them."""
    bdir = write_bench(tmp_path / "b", "rel", REL)
    results = tmp_path / "results"
    ids = [r.run_id for r in load_benchmark("rel", bdir).runs]
    procs = [bench_proc(bdir, results, tmp_path / f"{i}.log") for i in range(2)]
    codes = [p.wait(240) for p in procs]
    for i, code in enumerate(codes):   # a bench that met a run held by the other says so and exits 1
        log = (tmp_path / f"{i}.log").read_text()
        held = re.search(r"^busy: [0-9a-f]{12} ", log, re.M) is not None
        assert code == (1 if held else 0) and held == ("not finished: held by another process or interrupted" in log), log
    outcomes: dict[str, list[str]] = {run: [] for run in ids}
    for i in range(2):
        for status, run in ROW.findall((tmp_path / f"{i}.log").read_text()):
            outcomes[run].append(status)
    for run, statuses in outcomes.items():
        assert statuses.count("finished") == 1, (run, statuses)
        assert set(statuses) <= {"finished", "busy", "done"}
    check_store(results, ids)


PLUGIN = '''
"""A method whose training loss becomes NaN from optimiser step `at` (1-based) on."""
from dataclasses import dataclass

from textsvae.methods import register
from textsvae.methods.base import Method, param


@dataclass
class NanParams:
    at: int = param(3, "first step with a NaN loss")


@register("nan-at")
class NanAt(Method):
    """The ELBO, NaN from step `at`."""

    Params = NanParams

    def train_step(self, trainer, batch, beta):
        self.poison = trainer.state.step + 1 >= self.params.at
        return super().train_step(trainer, batch, beta)

    def loss(self, model, batch, beta):
        out = super().loss(model, batch, beta)
        if getattr(self, "poison", False):
            out.loss = out.loss * float("nan")
        return out
'''


@pytest.fixture
def nan_method(tmp_path):
    from textsvae.methods import REGISTRY, load_plugin

    path = tmp_path / "nan_plugin.py"
    path.write_text(PLUGIN)
    load_plugin(path)
    yield "nan-at"
    REGISTRY.pop("nan-at", None)
    sys.modules.pop("textsvae_plugin_nan_plugin", None)


def test_a_run_with_a_nan_loss_is_marked_failed_and_bench_goes_on(tmp_path, nan_method, write_bench):
    """The middle run's loss is NaN at step 3: bench trains the others, lists the failure last, exits 1,
    and the store holds one 'failed' row for that run, no metric rows. A second bench does not retry it."""
    text = REL.replace("seeds = [0, 1, 2]", "seeds = [0]") + '[[methods]]\nmethod = "nan-at"\nparams = { at = 3 }\n' \
        '[[methods]]\nmethod = "vae"\nseeds = [1]\n'
    bdir = write_bench(tmp_path / "b", "rel", text)
    results = tmp_path / "results"
    results.mkdir()
    (results / "rel.bench.jsonl").write_text('{"seconds": 1')  # a torn line (a kill mid-append) costs only itself
    runs = load_benchmark("rel", bdir).runs
    assert [r.method for r in runs] == ["vae", "nan-at", "vae"]
    bad = runs[1].run_id
    args = ["bench", "rel", "--benchmarks-dir", str(bdir), "--results", str(results), "--jobs", "1", "--threads", "1"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 1, out.output
    assert "2 run(s) finished" in out.output and "1 failed" in out.output
    assert f"FAILED: {bad} synthetic standard nan-at (at=3) seed 0: TrainingDiverged: loss became NaN or infinite " \
           f"at step 3 (epoch 1)" in out.output
    df = load_results(results)
    rows = df[df.run_id == bad]
    assert len(rows) == 1 and rows.status.iloc[0] == "failed" and rows.metric.iloc[0] == "failed"
    assert math.isnan(rows.value.iloc[0]) and "step 3" in rows.error.iloc[0]
    assert json.loads((results / bad / "bench.json").read_text())["status"] == "failed"
    assert json.loads((results / bad / "state.json").read_text())["status"] == "failed"
    good = [r.run_id for r in runs if r.run_id != bad]
    assert len(df) == 1 + len(good) * len(SPLITS) * len(METRICS)
    assert (df[df.run_id.isin(good)].status == "finished").all() and not df.duplicated(["run_id", "split", "metric"]).any()

    stamp = (results / bad / "rows.csv").stat().st_mtime_ns
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and f"FAILED: {bad}" in again.output and "failed before" in again.output
    assert (results / bad / "rows.csv").stat().st_mtime_ns == stamp  # not retried without --retry-failed
    assert [r["failed"] for r in read_jsonl(results / "rel.bench.jsonl")] == [1]  # the second bench ran nothing
    assert load_results(results).equals(df)

    table = tmp_path / "tables" / "rel.md"
    made = CliRunner().invoke(cli, ["table", "rel", "--benchmarks-dir", str(bdir), "--results", str(results),
                                    "-o", str(table)])
    assert made.exit_code == 0, made.output
    assert "Runs: 2 finished, 1 failed, 0 not finished of 3" in table.read_text()
    assert "over 1 invocation(s)" in table.read_text()
    assert sorted(p.name for p in table.parent.iterdir()) == ["rel.md"]


def test_store_writes_are_atomic(tmp_path, monkeypatch, write_bench):
    """A crash inside the rename of rows.csv, bench.json or a table leaves the previous complete files
    and no temporaries."""
    import textsvae.core.io

    bdir = write_bench(tmp_path / "b", "rel", REL)
    spec = load_benchmark("rel", bdir).runs[0]
    folder = tmp_path / "results" / spec.run_id
    folder.mkdir(parents=True)
    evals = {"test": {"iw_nll": 50.0, "kl": 1.0, "iw_samples": 2, "eval_batch_size": 64, "mem_budget_mb": 512,
                      "mi_samples": 1}}
    write_rows(folder, spec, {"steps": 42}, evals, 0.5, {})
    assert sorted(load_results(folder.parent).metric) == ["iw_nll", "kl"]  # settings are not metric rows
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(textsvae.core.io.os, "replace", crash)
    with pytest.raises(OSError):
        write_rows(folder, spec, {"steps": 42}, {"test": {"iw_nll": 1.0}}, 0.5, {})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    table = tmp_path / "t.md"
    table.write_text("old\n")
    out = CliRunner().invoke(cli, ["table", "rel", "--benchmarks-dir", str(bdir), "--results",
                                   str(folder.parent), "-o", str(table)])
    assert out.exit_code != 0 and table.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "results", "t.md"]


def test_stale_lock_takeover_never_removes_a_live_lock(tmp_path):
    """Process B saw a dead holder's lock, but A replaced it with its own live lock before B acted:
    B's takeover must put A's lock back. An empty lock (its creator died before writing it) is stale
    once older than STALE_EMPTY_LOCK_S, and busy before."""
    from textsvae.bench.locks import STALE_EMPTY_LOCK_S, LockBusy, _remove_stale_lock, acquire_lock

    lock = tmp_path / ".lock"
    seen = b'{"host": "h", "pid": 999999999}'
    live = json.dumps({"host": "h", "pid": os.getpid()}).encode()
    lock.write_bytes(live)
    assert _remove_stale_lock(lock, seen) is False
    assert lock.read_bytes() == live and sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    lock.write_bytes(seen)
    assert _remove_stale_lock(lock, seen) is True and not lock.exists()

    lock.write_bytes(b"")
    with pytest.raises(LockBusy):
        acquire_lock(tmp_path)
    old = time.time() - STALE_EMPTY_LOCK_S - 1
    os.utime(lock, (old, old))
    assert json.loads(acquire_lock(tmp_path).read_text())["pid"] == os.getpid()


def test_a_process_killed_while_locking_leaves_no_lock_behind(tmp_path, monkeypatch):
    """Killed while writing its holder's pid (here: an exception at that write), a process must not
    leave an empty .lock that would hold the run busy for STALE_EMPTY_LOCK_S: the lock is written
    under another name and linked into place whole."""
    from pathlib import Path as PathType

    from textsvae.bench.locks import acquire_lock

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(json, "dump", killed)
        patch.setattr(PathType, "write_text", killed)
        with pytest.raises(KeyboardInterrupt):
            acquire_lock(tmp_path)
    assert not (tmp_path / ".lock").exists()
    assert json.loads(acquire_lock(tmp_path).read_text())["pid"] == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]        # no draft left either


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, write_bench):
    """Killed between config.json and vocab.json (or anywhere before the first last.pt): nothing to
    resume, so the run starts from scratch instead of failing on the missing vocabulary."""
    from textsvae.bench.runner import run_benchmark

    bdir = write_bench(tmp_path / "b", "rel", REL.replace("seeds = [0, 1, 2]", "seeds = [0]"))
    bench = load_benchmark("rel", bdir)
    folder = tmp_path / "results" / bench.runs[0].run_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(bench.runs[0].config.to_json())
    report = run_benchmark(bench, tmp_path / "results", jobs=1, threads=1)
    assert report.finished == [bench.runs[0].run_id] and not report.failed
    check_store(tmp_path / "results", [bench.runs[0].run_id])


def test_workers_die_with_a_killed_bench_and_their_runs_resume(tmp_path, write_bench):
    """SIGKILL of a `bench --jobs 2` while both workers train: the workers (the pids in the runs' locks) end
    within seconds instead of running on as orphans; the next bench takes the dead locks over and finishes."""
    bdir = write_bench(tmp_path / "b", "rel", REL.replace("epochs = 6", "epochs = 40"))
    results = tmp_path / "results"
    ids = [r.run_id for r in load_benchmark("rel", bdir).runs]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "textsvae.cli", "bench", "rel", "--benchmarks-dir", str(bdir),
           "--results", str(results), "--jobs", "2", "--threads", "1"]
    with open(tmp_path / "a.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

    def worker_pids() -> list[int]:
        pids = [held[0].get("pid") for held in map(read_lock, (results / r / ".lock" for r in ids)) if held]
        return pids if len(pids) == 2 and all((results / r / "log.jsonl").exists() for r in ids[:2]) else []

    kill_when(proc, lambda: bool(worker_pids()))
    pids = worker_pids() or [json.loads((results / r / ".lock").read_text())["pid"] for r in ids[:2]]
    assert proc.pid not in pids
    deadline = time.monotonic() + 15
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in pids), "workers outlived their killed bench"
    with open(tmp_path / "b.log", "wb") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=600)
    assert done.returncode == 0, (tmp_path / "b.log").read_text()
    assert "0 failed; 0 not finished" in (tmp_path / "b.log").read_text()


def test_a_remote_holders_lock_is_taken_over_only_once_its_heartbeat_is_stale(tmp_path, monkeypatch):
    """A lock from another host: busy while its heartbeat is fresh, taken over once older than the timeout;
    a held lock's heartbeat keeps it fresh."""
    from textsvae.bench.locks import LockBusy, acquire_lock, release_lock

    monkeypatch.setenv("TEXTSVAE_LOCK_STALE_S", "30")
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": 4242, "host": "node-17", "job": "991"}))
    with pytest.raises(LockBusy, match="held by process 4242 on node-17, job 991"):
        acquire_lock(tmp_path, heartbeat=None)
    old = time.time() - 31
    os.utime(lock, (old, old))
    mine = acquire_lock(tmp_path, heartbeat=0.05)
    assert json.loads(mine.read_text())["pid"] == os.getpid()
    os.utime(mine, (old, old))
    time.sleep(0.3)                                          # the heartbeat touches it again
    assert time.time() - mine.stat().st_mtime < 5
    release_lock(mine)
    assert not mine.exists()


def test_sigterm_stops_a_serial_bench_not_just_its_current_run(tmp_path, write_bench):
    """SIGTERM to a one-job `bench` (a scheduler stopping it) once its first run has a checkpoint: that run
    stops with last.pt saved, the others are not started, exit 1; the next `bench` finishes all of them."""
    bdir = write_bench(tmp_path / "b", "rel", REL)
    results = tmp_path / "results"
    ids = [r.run_id for r in load_benchmark("rel", bdir).runs]
    proc = bench_proc(bdir, results, tmp_path / "a.log")
    deadline = time.monotonic() + 120
    while not (results / ids[0] / "last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "a.log").read_text()
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 1, (tmp_path / "a.log").read_text()
    log = (tmp_path / "a.log").read_text()
    assert json.loads((results / ids[0] / "state.json").read_text())["status"] == "interrupted"
    assert not any((results / run / "config.json").exists() for run in ids[1:]), log   # never started
    assert f"{len(ids) - 1} run(s) not started" in log
    proc = bench_proc(bdir, results, tmp_path / "b.log")
    assert proc.wait(180) == 0, (tmp_path / "b.log").read_text()
    assert re.search(rf"resume\s+synthetic standard vae seed 0 \[{ids[0]}\]", (tmp_path / "b.log").read_text())
    check_store(results, ids)
