"""The Slurm engine through submitit's local mode (`-E cluster=local`: every job a process on this machine,
the code path a Slurm job takes, without Slurm): results, a real grid row for row equal to the local
engine's, a killed `bench` driver, a pre-empted job resumed, lost jobs and one-line errors (issue 18)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

submitit = pytest.importorskip("submitit")
import cloudpickle  # noqa: E402  (submitit's dependency)

from textsvae.bench import runner as B  # noqa: E402
from textsvae.bench.executors import ExecutorError, make_executor  # noqa: E402
from textsvae.bench.grid import load_benchmark  # noqa: E402
from textsvae.bench.locks import pid_alive as running, read_lock  # noqa: E402
from textsvae.bench.results import load_results  # noqa: E402
from textsvae.bench.runner import run_benchmark, outcome_of  # noqa: E402
from textsvae.cli import cli  # noqa: E402
from textsvae.core.config import ConfigError  # noqa: E402

# the jobs unpickle this module's functions: send them by value (tests/ is not importable there)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# three real (tiny) runs: 2 optimiser steps on 100 synthetic sentences, K = 2
TINY3 = """
description = "three tiny runs"
preset = "tiny"
seeds = [0, 1, 2]
decoders = ["standard"]
eval_splits = ["test"]
metrics = ["iw_nll", "kl", "mi", "au", "ppl"]
[settings]
synthetic_train = 100
epochs = 1
max_steps = 2
iw_samples = 2
monitor_size = 10
[[methods]]
method = "vae"
"""
KEY = ["run_id", "split", "metric"]


def local_mode(folder: Path) -> dict:
    return {"cluster": "local", "folder": str(folder)}


def rows(results: Path):
    """The tidy rows as (run_id, split, metric, value), sorted; no key twice."""
    df = load_results(results)
    assert not df.duplicated(KEY).any()
    return df.sort_values(KEY)[KEY + ["value"]].reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """TINY3 through the local engine (in this process): its benchmark folder and results folder."""
    root = tmp_path_factory.mktemp("reference")
    (root / "b").mkdir()
    (root / "b" / "tiny3.toml").write_text(TINY3)
    report = run_benchmark(load_benchmark("tiny3", root / "b"), root / "results", jobs=1, threads=1)
    assert len(report.finished) == 3
    return root / "b", root / "results"


def square_where(x: int) -> tuple[int, str, int]:
    return x * x, submitit.JobEnvironment().job_id, os.getpid()


def test_tasks_run_as_jobs_at_most_jobs_at_a_time(tmp_path):
    """Every result comes back, each from its own job process; with 2 jobs for 3 tasks the third is
    submitted only once a first job has ended (lazy submission)."""
    executor = make_executor(2, "slurm", local_mode(tmp_path / "logs"))
    events = []
    executor.on_start(lambda task: events.append(("start", task)))
    out = []
    for result in executor.map_unordered(square_where, [1, 2, 3]):
        events.append(("result", result[0]))
        out.append(result)
    assert sorted(r[0] for r in out) == [1, 4, 9]
    ids, pids = {r[1] for r in out}, {r[2] for r in out}
    assert len(ids) == 3 and len(pids) == 3 and os.getpid() not in pids
    assert all((tmp_path / "logs" / f"{job}_0_log.out").exists() for job in ids)
    assert [e[0] for e in events[:3]] == ["start", "start", "result"] and len(events) == 6


def test_a_grid_through_slurm_local_mode_gives_the_local_engines_rows(tmp_path, reference):
    bdir, local_results = reference
    results = tmp_path / "results"
    report = run_benchmark(load_benchmark("tiny3", bdir), results, jobs=2, threads=1, executor="slurm",
                           settings=local_mode(tmp_path / "logs"))
    assert len(report.finished) == 3 and not report.failed and not report.busy
    mine, theirs = rows(results), rows(local_results)
    assert len(mine) == 3 * len(mine[mine.run_id == mine.run_id[0]]) and mine.equals(theirs)


def preempted_execute_run(task):
    """execute_run, with the job sending itself SIGUSR2 (Slurm's time-limit warning) after step 1."""
    import os
    import signal

    from textsvae.bench.runner import execute_run
    from textsvae.methods import REGISTRY

    vae = REGISTRY["vae"]
    original = vae.train_step

    def step(self, trainer, batch, beta):
        out = original(self, trainer, batch, beta)
        if trainer.state.step + 1 == 1:
            os.kill(os.getpid(), signal.SIGUSR2)
        return out

    vae.train_step = step
    return execute_run(task)


def test_a_preempted_job_saves_its_run_and_the_next_bench_resumes_it(tmp_path, monkeypatch, reference):
    """SIGUSR2 inside a job mid-epoch: the run stops after the step with last.pt, is neither finished nor
    failed (the bench calls it not finished), leaves no lock; the next bench (here the local engine, in
    this process) resumes it to the rows of an uninterrupted run."""
    bdir, local_results = reference
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "one.toml").write_text(TINY3.replace("seeds = [0, 1, 2]", "seeds = [0]"))
    bench = load_benchmark("one", tmp_path / "b")
    results, folder = tmp_path / "results", tmp_path / "results" / bench.runs[0].run_id
    settings = local_mode(tmp_path / "logs")
    with monkeypatch.context() as m:
        m.setattr(B, "execute_run", preempted_execute_run)
        report = run_benchmark(bench, results, jobs=1, threads=1, executor="slurm", settings=settings)
    assert not report.finished and not report.failed
    assert [(spec.run_id, message) for spec, message in report.busy] == \
        [(bench.runs[0].run_id, "stopped by SIGUSR2 at step 1; last.pt is saved and resumes it")]
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "interrupted" and state["step"] == 1 and (folder / "last.pt").exists()
    assert outcome_of(folder) == "missing" and not (folder / ".lock").exists()

    report = run_benchmark(bench, results, jobs=1, threads=1)
    assert report.finished == [bench.runs[0].run_id]
    expected = rows(local_results)
    assert rows(results).equals(expected[expected.run_id == bench.runs[0].run_id].reset_index(drop=True))


def kill_or_raise(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 3:
        raise ValueError("boom")
    return x


def test_lost_jobs_are_one_line_with_their_id_and_logs_once_the_others_end(tmp_path, monkeypatch, caplog):
    """A job killed (no result) and one whose function raised: the other task's result still comes, then
    one ExecutorError line naming a lost task, its job id and log files; each loss is logged."""
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 0)  # no wait for a result file
    out = []
    with pytest.raises(ExecutorError) as error:
        for result in make_executor(2, "slurm", local_mode(tmp_path / "logs")).map_unordered(kill_or_raise, [1, 2, 3]):
            out.append(result)
    assert out == [1]
    message = str(error.value)
    assert "\n" not in message and "(1 more job(s) lost, see the log)" in message
    job = message.split("local job ")[1].split()[0]
    assert f"{tmp_path / 'logs'}/{job}_0_log.out, {tmp_path / 'logs'}/{job}_0_log.err" in message
    lost = " | ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert lost.count("local job ") == 2 and "running 2 ended without a result; logs: " in lost
    assert "running 3 raised ValueError: boom; logs: " in lost


# -- a killed driver ------------------------------------------------------------------------------------
KILL_GRID = TINY3.replace("seeds = [0, 1, 2]", "seeds = [0, 1, 2, 3]").replace("max_steps = 2", "max_steps = 12") \
    .replace("epochs = 1", "epochs = 3").replace("synthetic_train = 100", "synthetic_train = 128")


def test_a_killed_bench_loses_and_duplicates_nothing(tmp_path, write_bench):
    """SIGKILL of `bench --executor slurm -E cluster=local` once the first run's rows exist. Its jobs run
    on (as a cluster's would) and hold their runs' locks, so a second bench started at once (in this
    process) runs none of them twice: they are busy, or done; once they end, a third finishes the grid.
    Every run trained once, no lost or duplicated row."""
    bdir = write_bench(tmp_path / "b", "kill", KILL_GRID)
    results = tmp_path / "results"
    ids = [r.run_id for r in load_benchmark("kill", bdir).runs]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "textsvae.cli", "bench", "kill", "--benchmarks-dir", str(bdir), "--results",
           str(results), "--jobs", "2", "--threads", "1", "--executor", "slurm", "-E", "cluster=local",
           "-E", f"folder={tmp_path / 'logs'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not list(results.glob("*/rows.csv")):
        assert proc.poll() is None and time.monotonic() < deadline, "bench ended before the kill point"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL

    def holders() -> list[int]:
        held = [read_lock(results / run / ".lock") for run in ids]
        return [h[0]["pid"] for h in held if h and isinstance(h[0].get("pid"), int) and running(h[0]["pid"])]

    bench, settings = load_benchmark("kill", bdir), local_mode(tmp_path / "logs")
    second = run_benchmark(bench, results, jobs=2, threads=1, executor="slurm", settings=settings)
    assert not second.failed and all("is held by process" in message for _, message in second.busy)
    assert {spec.run_id for spec, _ in second.busy} <= set(ids) - set(second.finished)
    deadline = time.monotonic() + 120
    while holders() or _jobs_running(tmp_path / "logs"):
        assert time.monotonic() < deadline, "the killed bench's jobs did not end"
        time.sleep(0.2)
    third = run_benchmark(bench, results, jobs=2, threads=1, executor="slurm", settings=settings)
    assert not third.failed and not third.busy
    df = load_results(results)
    assert not df.duplicated(KEY).any() and set(df.run_id) == set(ids) and (df.status == "finished").all()
    assert len(df) == 4 * len(df[df.run_id == ids[0]])
    for run in ids:
        log_rows = [json.loads(line) for line in (results / run / "log.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in log_rows] == [1, 2, 3]          # trained once: no doubled epoch rows
        assert json.loads((results / run / "summary.json").read_text())["steps"] == 12


def _jobs_running(logs: Path) -> bool:
    """Whether a local job of this folder still runs (its id, the controller's pid, names its log files)."""
    return any(running(int(p.name.split("_")[0])) for p in logs.glob("*_0_log.out"))


# -- one-line errors --------------------------------------------------------------------------------

def test_bad_settings_are_one_line_naming_the_valid_ones(tmp_path, write_bench):
    valid = "valid settings: account, cluster, cpus, folder, gpus, mem_gb, partition, timeout_min"
    with pytest.raises(ConfigError, match=rf"unknown setting\(s\) partiton for executor 'slurm'; {valid}$"):
        make_executor(2, "slurm", {"partiton": "gpu"})
    with pytest.raises(ConfigError, match="cluster must be one of slurm, local, debug or empty"):
        make_executor(2, "slurm", {"cluster": "lokal"})
    with pytest.raises(ConfigError, match="gpus must be a int, got 'two'"):
        make_executor(2, "slurm", {"gpus": "two"})
    bdir = write_bench(tmp_path / "b", "tiny3", TINY3)
    out = CliRunner().invoke(cli, ["bench", "tiny3", "--benchmarks-dir", str(bdir), "--results",
                                   str(tmp_path / "r"), "--executor", "slurm", "-E", "partiton=gpu"])
    assert out.exit_code == 2 and valid in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_settings_become_sbatch_options_and_a_refused_submission_is_one_line(tmp_path, monkeypatch):
    """Against a stand-in `sbatch` (no Slurm here): the settings are the job script's #SBATCH lines, with
    SIGUSR2 90 s before the time limit; sbatch's refusal is one ExecutorError line with its reason."""
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nif [ -n "$REFUSE" ]; then echo "$REFUSE" >&2; exit 1; fi\necho "Submitted batch job 4242"\n')
    fake.chmod(0o755)
    (fake.parent / "srun").symlink_to(fake)       # submitit looks for it; the stand-in runs nothing
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    executor = make_executor(2, "slurm", {"cluster": "slurm", "folder": str(tmp_path / "logs"), "partition": "gpu",
                                          "account": "lab", "gpus": "1", "cpus": "4", "mem_gb": "16",
                                          "timeout_min": "60"})
    job = executor._executor.submit(print, "x")    # the submitit executor the engine configured
    script = job.paths.submission_file.read_text()
    assert job.job_id == "4242"
    for option in ("--partition=gpu", "--account=lab", "--gpus-per-node=1", "--cpus-per-task=4", "--mem=16GB",
                   "--time=60", "--signal=USR2@90", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {option}\n" in script
    monkeypatch.setenv("REFUSE", "sbatch: error: Batch job submission failed: Invalid partition name specified")
    with pytest.raises(ExecutorError, match=r"^submitting 7 as a slurm job failed: sbatch: error: Batch job "
                                            r"submission failed: Invalid partition name specified$"):
        list(executor.map_unordered(print, [7]))


def test_missing_submitit_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)   # import submitit -> ImportError
    with pytest.raises(ConfigError, match=r"needs the submitit package: pip install 'textsvae\[slurm\]'"):
        make_executor(2, "slurm", {"cluster": "local"})


def test_sbatch_missing_is_one_line(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ConfigError, match="no sbatch or srun on this machine; -E cluster=local runs the jobs here"):
        make_executor(2, "slurm", {"cluster": "slurm"})
