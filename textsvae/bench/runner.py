"""Running a benchmark grid: each missing run trained (or resumed), evaluated and written as rows, under its lock.

Results folder: one folder per run id holding the run (config.json, log.jsonl, last.pt, ...),
plus `bench.json` (the run's outcome) and `rows.csv` (its tidy rows; see results.py), and a `.lock`.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import apply_overrides
from ..core.io import remove_partial_writes
from ..core.progress import lines_only, progress
from .grid import Benchmark, RunSpec, run_id
from .locks import LockBusy, acquire_lock, release_lock

log = logging.getLogger(__name__)

DEFAULT_RESULTS = Path("runs") / "bench"


# -- running ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunTask:
    """What a worker gets: the spec, where results go, and how to execute it."""

    spec: RunSpec
    results_dir: str
    threads: int
    retry_failed: bool
    provenance: dict[str, Any]
    track: str | None = None     # experiment trackers for this run (None: the benchmark's own `track` setting)

    def __str__(self) -> str:
        return f"run {self.spec.run_id}"


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    kind: str            # finished | failed | busy (locked by another process) | done (already finished)
    #                      | interrupted (SIGTERM/SIGUSR1/SIGUSR2: stopped with last.pt saved, resumed next time)
    #                      | skipped (this machine cannot run its device or precision; another machine may)
    message: str = ""
    seconds: float = 0.0


def outcome_of(folder: Path) -> str:
    """A run's outcome in its results folder: 'finished' or 'failed' (bench.json's "status"), 'damaged'
    (finished, rows.csv unreadable), else 'missing' (never started, half-trained or unevaluated)."""
    from .results import read_outcome

    return read_outcome(folder).get("status", "missing")


def execute_run(task: RunTask) -> RunOutcome:
    """Train (or resume), evaluate, probe and write the run's rows; errors mark the run failed."""
    from ..kernels.device import DeviceError
    from ..training.train import Preempted
    from .results import write_failure, write_rows

    spec = task.spec
    folder = Path(task.results_dir) / spec.run_id
    folder.mkdir(parents=True, exist_ok=True)
    try:
        lock = acquire_lock(folder)
    except LockBusy as exc:
        return RunOutcome(spec.run_id, "busy", str(exc))
    start = time.perf_counter()
    try:
        remove_partial_writes(folder)  # a killed holder's half-written files; the lock is ours now
        status = outcome_of(folder)
        if status == "damaged":      # finished, but its rows.csv does not read: rebuilt, re-evaluated if need be
            if rebuild_rows(folder, spec, task.provenance):
                return RunOutcome(spec.run_id, "finished", "rows.csv rebuilt from its evaluation",
                                  time.perf_counter() - start)
            status = "missing"
        if status == "finished" or (status == "failed" and not task.retry_failed):
            return RunOutcome(spec.run_id, "done" if status == "finished" else "failed", "already " + status)
        try:
            check_machine(spec)
        except DeviceError as exc:
            return RunOutcome(spec.run_id, "skipped", str(exc))
        try:
            with lines_only():   # never a second bar: plain lines, in the worker's log (a Slurm job's log file)
                summary = _train(folder, spec, task, fresh=(status == "failed"))
                evals, eval_seconds = _evaluate(folder, spec)
        except Preempted as exc:  # not failed: the next bench resumes it from last.pt
            return RunOutcome(spec.run_id, "interrupted", str(exc), time.perf_counter() - start)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # TrainingDiverged, RunError, a bug in a method: mark and go on
            log.debug("run %s failed", spec.run_id, exc_info=True)
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            write_failure(folder, spec, message, task.provenance)
            return RunOutcome(spec.run_id, "failed", message, time.perf_counter() - start)
        write_rows(folder, spec, summary, evals, eval_seconds, task.provenance)
        _track_evaluation(folder, spec, task, evals, summary)
        return RunOutcome(spec.run_id, "finished", "", time.perf_counter() - start)
    finally:
        release_lock(lock)


def rebuild_rows(folder: Path, spec: RunSpec, provenance: dict[str, Any]) -> bool:
    """rows.csv of a finished run written again from its summary.json and each split's evaluation JSON
    (eval_seconds unknown: NaN); False when one of them is missing or the run is probed (the probe's
    metrics are kept only in rows.csv), so that the run is evaluated again."""
    import math

    from ..core.rundir import read_summary
    from ..evaluation.run_eval import eval_path
    from .results import write_rows

    summary = read_summary(folder)
    if spec.probe or not summary:
        return False
    evals = {}
    for split in spec.eval_splits:
        found = [eval_path(folder, split, k) for k in dict.fromkeys((spec.config.eval.iw_samples, 0))]
        found = [path for path in found if path.is_file()]
        if not found:
            return False
        evals[split] = json.loads(found[0].read_text())
    write_rows(folder, spec, summary, evals, math.nan, provenance)
    log.warning("%s: rows.csv was unreadable; rebuilt from %s", folder, ", ".join(f"eval_{s}" for s in evals))
    return True


def check_machine(spec: RunSpec) -> None:
    """A DeviceError where this machine cannot run the run's device or precisions (a bf16 run on a CPU
    without bf16 LSTM kernels): the run is skipped here, neither started nor failed."""
    from ..kernels.device import check_training_precisions, resolve_device

    t = spec.config.train
    check_training_precisions(resolve_device(t.device), t.precision, spec.config.eval.eval_precision)


def _execution(spec: RunSpec, task: RunTask) -> dict[str, Any]:
    """How a grid's run executes: the worker's threads, the trackers and their project."""
    track = spec.config.train.track if task.track is None else task.track
    return {"threads": task.threads, "track": track, "track_project": spec.benchmark}


def _train(folder: Path, spec: RunSpec, task: RunTask, fresh: bool) -> dict[str, Any]:
    from ..core.rundir import RunError, has_config, read_run_config, read_state, read_summary
    from ..training.train import resume_run, train_run

    execution = _execution(spec, task)
    config = apply_overrides(spec.config, execution)
    # no last.pt: killed before its first checkpoint (maybe between config.json and vocab.json), nothing to resume
    if fresh or not has_config(folder) or not (folder / "last.pt").exists():
        return train_run(config, folder, force=True)
    saved = read_run_config(folder)
    if run_id(saved) != spec.run_id:
        raise RunError(f"{folder} holds a run of another config (id {run_id(saved)})")
    summary = read_summary(folder)
    if read_state(folder).get("status") == "finished" and summary:
        return summary
    log.info("resuming %s", folder)
    return resume_run(folder, execution)


def _track_evaluation(folder: Path, spec: RunSpec, task: RunTask, evals: dict[str, dict[str, Any]],
                      summary: dict[str, Any]) -> None:
    """The final evaluations, to the run's trackers (which never fail the run)."""
    execution = _execution(spec, task)
    if execution["track"]:
        from ..trackers import log_evaluation

        log_evaluation(apply_overrides(spec.config, execution), folder, evals, int(summary.get("steps", 0)))


def _evaluate(folder: Path, spec: RunSpec) -> tuple[dict[str, dict[str, Any]], float]:
    """{split: evaluate_run metrics}, plus {'probe': ...} on test where the corpus has labels."""
    from ..data.corpus import load_corpus
    from ..evaluation.probe import PROBE_SPLITS, probe_loaded
    from ..evaluation.run_eval import evaluate_loaded, load_model

    start = time.perf_counter()
    model, method, config, vocab, device = load_model(folder)   # once for every split and the probe
    needed = tuple(dict.fromkeys(spec.eval_splits + (PROBE_SPLITS if spec.probe and not model.is_lm else ())))
    corpus = load_corpus(config.data, vocab=vocab, needed=needed, seed=config.train.seed)
    evals = {split: evaluate_loaded(model, method, config, vocab, device, folder, split, corpus=corpus,
                                    recon=spec.recon, mi_batch=spec.mi_batch)
             for split in spec.eval_splits}
    if spec.probe:
        probe = probe_loaded(model, method, config, corpus, device, seed=spec.config.eval.eval_seed)
        if probe is not None:
            evals.setdefault("test", {}).update(probe)
    return evals, time.perf_counter() - start


@dataclass
class GridTally:
    """What one `bench` invocation did with a grid's runs."""

    total: int
    already_done: int = 0
    finished: list[str] = field(default_factory=list)
    failed: list[tuple[RunSpec, str]] = field(default_factory=list)
    busy: list[tuple[RunSpec, str]] = field(default_factory=list)
    skipped: list[tuple[RunSpec, str]] = field(default_factory=list)
    seconds: float = 0.0
    jobs: int = 1


def checkout_commit() -> str:
    """The code's commit: `TEXTSVAE_GIT_COMMIT` where set (a wheel install has no checkout to ask),
    else that of the source checkout the package runs from ("-dirty" when tracked files changed), else ""."""
    import os
    import subprocess

    given = os.environ.get("TEXTSVAE_GIT_COMMIT", "").strip()
    if given:
        return given
    repo = Path(__file__).resolve().parents[2]   # <repo>/textsvae/bench/runner.py
    if not (repo / "pyproject.toml").is_file():
        return ""  # installed into site-packages: any git repo above it is not this code's
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + "-dirty" if commit and dirty else commit


def cpu_model() -> str:
    """The CPU's name ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8480+"): the first "model name" of
    /proc/cpuinfo on Linux, else platform.processor(); "" where neither says. Float results can differ
    between CPUs (their kernels round differently), so a row says which one made it."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor().strip()


def provenance() -> dict[str, Any]:
    """What a number depends on besides its config: code version, machine, date."""
    import platform

    from ..core.version import __version__

    from .executors import available_cores

    model = cpu_model()
    machine = f"{platform.machine()} {available_cores()} cores" + (f", {model}" if model else "")
    try:
        import torch

        if torch.cuda.is_available():
            machine += f", {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - provenance must never fail a benchmark
        pass
    return {"git_commit": checkout_commit(), "version": __version__, "machine": machine}


def run_benchmark(bench: Benchmark, results_dir: str | Path = DEFAULT_RESULTS, jobs: str | int | None = "auto",
                  retry_failed: bool = False, executor: str = "local", threads: int | None = None,
                  settings: dict[str, Any] | None = None, track: str | None = None) -> GridTally:
    """Run the benchmark's missing runs (resuming half-done ones), `jobs` at a time.

    threads: torch threads per run (default cores // jobs).
    track: experiment trackers, e.g. "tensorboard,mlflow" (None: the benchmark's `track` setting).
    """
    from .executors import make_executor, parse_jobs, threads_per_job

    import torch

    parse_jobs(jobs, 1, gpu=False)  # a bad --jobs fails before anything else
    if track is not None:
        from ..trackers import parse_track

        parse_track(track)  # so does an unknown tracker or a missing extra
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tally = GridTally(total=len(bench.runs))
    todo = []
    for spec in bench.runs:
        status = outcome_of(results_dir / spec.run_id)
        if status == "finished":
            tally.already_done += 1
        elif status == "failed" and not retry_failed:
            tally.failed.append((spec, "failed before (use --retry-failed to run it again)"))
        else:
            todo.append(spec)
    if not todo:
        make_executor(1, executor, settings)  # bad executor settings are refused even with nothing left to run
        tally.seconds = time.perf_counter() - start
        return tally
    n_jobs = parse_jobs(jobs, len(todo), gpu=torch.cuda.is_available())
    tally.jobs = n_jobs
    threads = threads or threads_per_job(n_jobs)
    info = provenance()
    log.info("%s: %d of %d runs to do (%d already done), %d job(s) x %d thread(s), results in %s",
             bench.name, len(todo), tally.total, tally.already_done, n_jobs, threads, results_dir)
    tasks = [RunTask(spec, str(results_dir), threads, retry_failed, info, track) for spec in todo]
    by_id = {s.run_id: s for s in todo}
    pool = make_executor(n_jobs, executor, settings)
    done, started = 0, 0
    with progress(tally.total, bench.name, initial=tally.total - len(todo), unit="runs") as shown:
        def on_start(task: RunTask) -> None:
            nonlocal started
            started += 1
            log.info("  %-7s %s", "resume" if (results_dir / task.spec.run_id / "last.pt").exists() else "start",
                     _describe(task.spec))
            shown.set_postfix(running=started - done, failed=len(tally.failed))
            shown.update(0)

        pool.on_start(on_start)
        for outcome in pool.map_unordered(execute_run, tasks):
            done += 1
            spec = by_id[outcome.run_id]
            if outcome.kind == "finished":
                tally.finished.append(outcome.run_id)
            elif outcome.kind == "done":
                tally.already_done += 1
            elif outcome.kind in ("busy", "interrupted"):   # not finished: the next bench runs it
                tally.busy.append((spec, outcome.message))
            elif outcome.kind == "skipped":   # not for this machine: a bench on another one runs it
                tally.skipped.append((spec, outcome.message))
            else:
                tally.failed.append((spec, outcome.message))
            log.info("[%d/%d] %-8s %s%s (%.0fs elapsed)", done, len(todo), outcome.kind, _describe(spec),
                     f": {outcome.message}" if outcome.kind == "failed" else "", time.perf_counter() - start)
            shown.set_postfix(running=started - done, failed=len(tally.failed))
            shown.update(1)
            if outcome.kind == "interrupted" and pool.in_process:
                # SIGTERM/SIGUSR1/SIGUSR2 reached this process (a scheduler stopping the job): stop the grid
                log.warning("%s: %d run(s) not started; `textsvae bench %s` resumes the grid", outcome.message,
                            len(todo) - done, bench.name)
                break
    tally.seconds = time.perf_counter() - start
    from ..core.io import append_jsonl

    append_jsonl(results_dir / f"{bench.name}.bench.jsonl", {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": tally.seconds, "jobs": n_jobs,
        "threads": threads, "ran": len(todo), "finished": len(tally.finished), "failed": len(tally.failed),
        **info})
    return tally


def _describe(spec: RunSpec) -> str:
    return f"{spec.description} [{spec.run_id}]"
