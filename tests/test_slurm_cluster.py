"""The Slurm engine against a real single-node Slurm (munged, slurmctld, slurmd started for the session;
tests/slurm_cluster.py): a grid's rows equal the local engine's; a requeued job resumes and the driver
waits for it; a cancelled job, and one stopped by its time limit, resume on the next bench; two drivers on
one results folder train each run once; SIGUSR2 outside training does not end a job; no sacct warnings,
and a failing squeue is said once.

Each run's rows are compared with those of the same run trained uninterrupted by the local engine, and
the steps each job trained (tests/slurm_driver.py logs them) show that a run resumed rather than restarted."""
from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit")
import cloudpickle  # noqa: E402  (submitit's dependency)

import slurm_cluster  # noqa: E402
from slurm_cluster import SEARCH_PATH, SlurmCluster, skip_reason  # noqa: E402
from slurm_driver import slowed_execute_run, trained_steps  # noqa: E402
from textsvae.bench import runner as B  # noqa: E402
from textsvae.bench.executors import make_executor  # noqa: E402
from textsvae.bench.executors import slurm as S  # noqa: E402
from textsvae.bench.grid import load_benchmark  # noqa: E402
from textsvae.bench.results import load_results  # noqa: E402
from textsvae.bench.runner import run_benchmark  # noqa: E402

# jobs unpickle this module's functions: send them by value (tests/ is not importable there)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TESTS = Path(__file__).resolve().parent
KEY = ["run_id", "split", "metric"]
# tiny real runs: 100 synthetic sentences (4 steps an epoch), K = 2
GRID = """
description = "tiny runs on a real Slurm"
preset = "tiny"
seeds = [0, 1]
decoders = ["standard"]
eval_splits = ["test"]
metrics = ["iw_nll", "kl", "mi", "au", "ppl"]
[settings]
synthetic_train = 100
epochs = 3
max_steps = 12
iw_samples = 2
monitor_size = 10
[[methods]]
method = "vae"
"""
ONE = GRID.replace("seeds = [0, 1]", "seeds = [0]")
STEPS = 12


@pytest.fixture(scope="session")
def slurm_session(tmp_path_factory):
    """A running single-node cluster; SLURM_CONF points at it for this process and its children."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    try:
        with pytest.MonkeyPatch.context() as m:
            for key, value in {"SLURM_CONF": str(cluster.conf), "PATH": SEARCH_PATH, "OMP_NUM_THREADS": "1",
                               "MKL_NUM_THREADS": "1"}.items():
                m.setenv(key, value)
            yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_session):
    """The session's cluster; every job a test leaves on it (a failed test's) is cancelled at its end."""
    yield slurm_session
    slurm_session.cancel_all()


@pytest.fixture
def drivers(slurm):
    """drivers(cmd, out): a bench driver in the background, stdout and stderr to out.out and out.err;
    any still running at the test's end is killed."""
    procs = []

    def start(cmd: list[str], out: Path) -> subprocess.Popen:
        # SIGINT as at a terminal, even when the tests themselves run in the background (where a shell
        # starts them, and so these children, with SIGINT ignored)
        proc = subprocess.Popen(cmd, stdout=open(out.with_suffix(".out"), "w"),
                                stderr=open(out.with_suffix(".err"), "w"),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """GRID through the local engine in this process, uninterrupted: (benchmarks folder, its rows)."""
    root = tmp_path_factory.mktemp("reference")
    (root / "b").mkdir()
    (root / "b" / "grid.toml").write_text(GRID)
    (root / "b" / "one.toml").write_text(ONE)
    report = run_benchmark(load_benchmark("grid", root / "b"), root / "results", jobs=1, threads=1)
    assert len(report.finished) == 2
    return root / "b", rows(root / "results")


def rows(results: Path):
    """The tidy rows as (run_id, split, metric, value), sorted; no key twice."""
    df = load_results(results)
    assert not df.duplicated(KEY).any()
    return df.sort_values(KEY)[KEY + ["value"]].reset_index(drop=True)


def of_runs(df, runs):
    return df[df.run_id.isin(runs)].reset_index(drop=True)


def bench_cmd(name: str, bdir: Path, results: Path, logs: Path, *extra: str, slowed: tuple | None = None) -> list[str]:
    """`textsvae bench NAME --executor slurm ...`; slowed=(step_log, seconds) runs it through slurm_driver."""
    head = [sys.executable, "-m", "textsvae.cli"] if slowed is None else \
        [sys.executable, str(TESTS / "slurm_driver.py"), str(slowed[0]), str(slowed[1])]
    return head + ["bench", name, "--benchmarks-dir", str(bdir), "--results", str(results), "--threads", "1",
                   "--executor", "slurm", "-E", "cluster=slurm", "-E", "partition=debug", "-E", "cpus=1",
                   "-E", f"folder={logs}", *extra]


def finish(proc: subprocess.Popen, out: Path, timeout: float = 180) -> tuple[int, str]:
    """(exit status, stderr) of a driver started by drivers()."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"bench did not end in {timeout:.0f} s: {out.with_suffix('.err').read_text()[-2000:]}")
    return code, out.with_suffix(".err").read_text()


def wait_for(ready, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (value := ready()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def training(step_log: Path, steps: int = 3):
    """Wait until some job has trained `steps` steps."""
    wait_for(lambda: step_log.exists() and len(step_log.read_text().splitlines()) >= steps, "training to start")


def job_of(slurm: SlurmCluster, run: str) -> str:
    """The id of the Slurm job that runs `run` (submitit names it textsvae-run-<id>)."""
    return wait_for(lambda: slurm.run("squeue", "-h", "-o", "%i", f"--name=textsvae-run-{run}").strip(),
                    f"the job of {run}")


def job_state(slurm: SlurmCluster, job: str) -> str:
    return slurm.run("squeue", "-h", "--states=all", "-o", "%T", f"--jobs={job}").strip()


def resume_here(monkeypatch, bdir: Path, results: Path, step_log: Path, name: str = "one"):
    """The next bench, here: the local engine in this process, its steps logged to step_log."""
    monkeypatch.setattr(B, "execute_run", functools.partial(slowed_execute_run, execute_run=B.execute_run,
                                                            step_log=str(step_log), seconds=0))
    return run_benchmark(load_benchmark(name, bdir), results, jobs=1, threads=1)


def assert_trained_once(step_log: Path, runs, attempts: int | None = None):
    """Every run trained steps 0..STEPS-1 once each, over `attempts` job processes if given."""
    steps = trained_steps(step_log)
    for run in runs:
        assert sorted(s for s, _ in steps[run]) == list(range(STEPS)), f"{run} trained {steps[run]}"
        if attempts is not None:
            assert len({pid for _, pid in steps[run]}) == attempts


def test_without_the_binaries_the_cluster_tests_skip_naming_the_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(slurm_cluster, "SEARCH_PATH", str(tmp_path))       # nothing to find there
    assert skip_reason() == ("Slurm binaries not found (munged, slurmctld, slurmd, sbatch, srun, squeue, scontrol, "
                             "scancel, sinfo): apt-get install slurmctld slurmd slurm-client munge (.ci/run does)")


def test_a_grid_on_slurm_gives_the_local_engines_rows(slurm, drivers, tmp_path, reference):
    """Two runs as two real jobs (2 at a time): exit 0, the local engine's rows to the bit, each job
    COMPLETED in Slurm, and no sacct warning (accounting is off here)."""
    bdir, expected = reference
    proc = drivers(bench_cmd("grid", bdir, tmp_path / "results", tmp_path / "logs", "--jobs", "2"), tmp_path / "bench")
    code, err = finish(proc, tmp_path / "bench")
    assert code == 0, err
    assert "sacct" not in err and "Bypassing" not in err and "Traceback" not in err
    assert rows(tmp_path / "results").equals(expected)
    jobs = sorted(p.name.split("_")[0] for p in (tmp_path / "logs").glob("*_0_log.out"))
    assert len(jobs) == 2 and all(job_state(slurm, job) == "COMPLETED" for job in jobs)


def requeue_mid_training(slurm, drivers, bdir, results, step_log, tmp_path):
    """A driver of the one-run grid whose job `scontrol requeue` stops mid-training: (driver, run id, job id),
    once the job waits in the queue again."""
    run = load_benchmark("one", bdir).runs[0].run_id
    proc = drivers(bench_cmd("one", bdir, results, tmp_path / "logs", slowed=(step_log, 0.3)), tmp_path / "bench")
    training(step_log)
    job = job_of(slurm, run)
    slurm.run("scontrol", "requeue", job)
    wait_for(lambda: job_state(slurm, job) == "PENDING", "the job to wait in the queue again")
    return proc, run, job


def test_a_requeued_job_resumes_and_the_driver_waits_for_it(slurm, drivers, tmp_path, reference):
    """`scontrol requeue` of a job mid-training: the run stops on SIGTERM with last.pt saved, the driver
    says the job was requeued once and waits, Slurm runs the job again (released at once rather than
    after its two-minute hold) and it resumes: bench exits 0, the run's rows equal an uninterrupted run's,
    and its 12 steps were trained once each, over the two attempts. The stopped attempt's result file
    (the run interrupted) is dropped while the job waits."""
    bdir, expected = reference
    results, step_log = tmp_path / "results", tmp_path / "steps.log"
    proc, run, job = requeue_mid_training(slurm, drivers, bdir, results, step_log, tmp_path)
    log, result = tmp_path / "logs" / f"{job}_0_log.out", tmp_path / "logs" / f"{job}_0_result.pkl"
    wait_for(lambda: "Job completed successfully" in log.read_text() and not result.exists(),
             "the driver to drop the stopped attempt's result")
    state = json.loads((results / run / "state.json").read_text())
    assert state["status"] == "interrupted" and (results / run / "last.pt").exists()
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    code, err = finish(proc, tmp_path / "bench")
    assert code == 0, err
    said = f"slurm job {job} running run {run} was requeued by Slurm (restart 1): waiting for it to run again"
    assert err.count(said) == 1
    assert "not finished" not in err and "Traceback" not in err
    assert rows(results).equals(of_runs(expected, [run]))
    assert_trained_once(step_log, [run], attempts=2)


def test_ctrl_c_while_a_requeued_job_waits_cancels_it(slurm, drivers, tmp_path, reference):
    """Ctrl-C of the driver while its requeued job waits in the queue: bench exits 130 with its one line,
    and the job is cancelled rather than left to run unsupervised; the run keeps its last.pt."""
    bdir, _ = reference
    results, step_log = tmp_path / "results", tmp_path / "steps.log"
    proc, run, job = requeue_mid_training(slurm, drivers, bdir, results, step_log, tmp_path)
    slurm.run("scontrol", "hold", job)        # it waits until the Ctrl-C, however slowly a busy machine polls
    wait_for(lambda: "was requeued by Slurm" in (tmp_path / "bench.err").read_text(), "the driver's line")
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc, tmp_path / "bench")
    assert code == 130 and "Traceback" not in err
    assert f"cancelling slurm job(s) {job}" in err and "interrupted; finished runs are kept" in err
    assert job_state(slurm, job) == "CANCELLED" and (results / run / "last.pt").exists()


def test_a_cancelled_job_is_one_line_and_the_next_bench_finishes_it(slurm, drivers, tmp_path, monkeypatch, reference):
    """`scancel` mid-training: bench exits 1 with one line for the run (stopped by SIGTERM, last.pt saved)
    and the line to run it again; the next bench resumes it to an uninterrupted run's rows."""
    bdir, expected = reference
    results, step_log = tmp_path / "results", tmp_path / "steps.log"
    run = load_benchmark("one", bdir).runs[0].run_id
    proc = drivers(bench_cmd("one", bdir, results, tmp_path / "logs", slowed=(step_log, 0.3)), tmp_path / "bench")
    training(step_log)
    slurm.run("scancel", job_of(slurm, run))
    code, err = finish(proc, tmp_path / "bench")
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if run in line and not line.startswith(("  ", "["))]
    assert len(lines) == 1 and lines[0].startswith(f"busy: {run} ") and "stopped by SIGTERM at step " in lines[0]
    assert "1 run(s) not finished: held by another process or interrupted; run `textsvae bench one` again" in err
    assert resume_here(monkeypatch, bdir, results, step_log).finished == [run]
    assert rows(results).equals(of_runs(expected, [run]))
    assert_trained_once(step_log, [run], attempts=2)


def test_a_job_stopped_by_its_time_limit_resumes_on_the_next_bench(slurm, drivers, tmp_path, monkeypatch, reference):
    """A job with timeout_min=5 whose limit Slurm enforces mid-training (its end time brought forward to
    now, so the test does not wait five minutes): Slurm's SIGUSR2 and SIGTERM stop the run with last.pt,
    the job ends in state TIMEOUT, bench exits 1; the next bench resumes it to an uninterrupted run's rows."""
    bdir, expected = reference
    results, step_log = tmp_path / "results", tmp_path / "steps.log"
    run = load_benchmark("one", bdir).runs[0].run_id
    proc = drivers(bench_cmd("one", bdir, results, tmp_path / "logs", "-E", "timeout_min=5", slowed=(step_log, 4)),
                   tmp_path / "bench")
    training(step_log, steps=1)
    job = job_of(slurm, run)
    assert "#SBATCH --time=5\n" in (tmp_path / "logs" / f"{job}_submission.sh").read_text()
    slurm.run("scontrol", "update", f"JobId={job}", "EndTime=now")
    code, err = finish(proc, tmp_path / "bench")
    assert code == 1 and "Traceback" not in err
    assert f"busy: {run} " in err and "; last.pt is saved and resumes it" in err
    assert job_state(slurm, job) == "TIMEOUT"
    assert resume_here(monkeypatch, bdir, results, step_log).finished == [run]
    assert rows(results).equals(of_runs(expected, [run]))
    assert_trained_once(step_log, [run], attempts=2)


def test_two_drivers_on_one_results_folder_train_each_run_once(slurm, drivers, tmp_path, monkeypatch, reference):
    """Two bench drivers on one results folder, one job at a time each, the second started once the first's
    job trains the first run (so a loaded machine cannot let one driver finish before the other starts):
    the second finds that run's lock held; every step of every run is trained once, and a third bench
    (the local engine, here) has nothing to do. The rows equal the local engine's."""
    bdir, expected = reference
    results, step_log = tmp_path / "results", tmp_path / "steps.log"

    def driver(i: int) -> subprocess.Popen:   # 1 s a step: a run lasts 12 s, longer than a driver takes to start
        return drivers(bench_cmd("grid", bdir, results, tmp_path / f"logs{i}", "--jobs", "1", slowed=(step_log, 1.0)),
                       tmp_path / f"bench{i}")

    first = driver(0)
    wait_for(lambda: step_log.exists() and step_log.read_text().strip(), "the first driver's job to train")
    procs = [first, driver(1)]
    errs = [finish(proc, tmp_path / f"bench{i}")[1] for i, proc in enumerate(procs)]
    assert_trained_once(step_log, list(expected.run_id.unique()), attempts=1)
    assert "is held by process" in "".join(errs)        # the two drivers did meet on a run
    third = resume_here(monkeypatch, bdir, results, step_log, "grid")
    assert third.already_done == 2 and not third.finished and not third.busy
    assert rows(results).equals(expected)


def wait_for_go(folder: str) -> str:
    """In a job: say it started, then wait (up to a minute) for the file `go` and return its text."""
    import time
    from pathlib import Path

    (Path(folder) / "started").write_text("")
    deadline = time.monotonic() + 60
    while not (Path(folder) / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return (Path(folder) / "go").read_text()


def test_sigusr2_outside_training_is_logged_and_the_job_goes_on(slurm, tmp_path):
    """Slurm's time-limit warning reaching a job outside training (here while its function waits; in a
    run, while it evaluates): the job logs it and returns its result. submitit's handler would raise
    there, near the time limit, and the run would be marked failed."""
    work = tmp_path / "work"
    work.mkdir()
    executor = make_executor(1, "slurm", {"cluster": "slurm", "partition": "debug", "timeout_min": 5,
                                          "folder": str(tmp_path / "logs")})

    def signal_it(task):
        def act():
            wait_for(lambda: (work / "started").exists(), "the job to start")
            job = next((tmp_path / "logs").glob("*_submitted.pkl")).name.split("_")[0]
            slurm.run("scancel", "--signal=USR2", job)
            wait_for(lambda: "outside training" in (tmp_path / "logs" / f"{job}_0_log.err").read_text(), "the log line")
            (work / "go").write_text("went on")
        threading.Thread(target=act, daemon=True).start()

    executor.on_start(signal_it)
    assert list(executor.map_unordered(wait_for_go, [str(work)])) == ["went on"]


def square(x: int) -> int:
    return x * x


def test_squeue_failing_is_said_once_and_the_result_file_still_ends_the_job(slurm, tmp_path, monkeypatch, caplog):
    """Once its job is submitted, the driver's squeue talks to a controller that is not there (a real
    squeue, a slurm.conf with a dead port): one warning for all its failing polls, and the job's result
    file ends it; once squeue answers again, the driver says so."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))      # what this test's end restores
    dead = tmp_path / "dead.conf"
    dead.write_text(slurm.conf.read_text().replace("SlurmctldPort=", "SlurmctldPort=1\n#") + "MessageTimeout=1\n")
    executor = make_executor(1, "slurm", {"cluster": "slurm", "partition": "debug", "folder": str(tmp_path / "logs")})
    executor.on_start(lambda task: os.environ.__setitem__("SLURM_CONF", str(dead)))
    monkeypatch.setattr(S, "QUEUE_POLL_S", 0.0)
    with caplog.at_level(logging.WARNING, logger=S.__name__):
        assert list(executor.map_unordered(square, [7])) == [49]
    failed = [r.getMessage() for r in caplog.records if "squeue failed" in r.getMessage()]
    assert len(failed) == 1 and "Unable to contact slurm controller" in failed[0]
    os.environ["SLURM_CONF"] = str(slurm.conf)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=S.__name__):
        executor._queue.refresh(["1"], force=True)
    assert [r.getMessage() for r in caplog.records] == ["squeue answers again"]
