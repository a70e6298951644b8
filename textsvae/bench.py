"""Benchmarks as data: a TOML (or JSON) file per table, expanded into a grid of runs and executed.

A benchmark file states datasets x decoders x methods x parameters x seeds, the training
budget and the evaluation settings (`[settings]`: any RunConfig field). A run's id is a hash
of its full config (seed included), so `bench` runs only what is missing, resumes half-done
runs and can share a results folder between benchmarks and processes.

Results folder: one folder per run id holding the run (config.json, log.jsonl, last.pt, ...),
plus `bench.json` (status) and `rows.csv` (its tidy rows; see results.py), and a `.lock`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, apply_overrides, preset_config
from .io import remove_partial_writes

log = logging.getLogger(__name__)

DEFAULT_RESULTS = Path("runs") / "bench"
# execution-only fields: they change how a run is executed, not what it computes
EXECUTION_FIELDS = {"train": ("threads", "progress", "device"), "data": ("data_dir",), "eval": ("workers",)}
DEFAULT_METRICS = ("iw_nll", "kl", "mi", "au", "ppl")


class BenchmarkError(ConfigError):
    """A missing or malformed benchmark file (one line for the user)."""


@dataclass(frozen=True)
class RunSpec:
    """One cell of a benchmark grid: everything a worker needs to produce the run's rows."""

    run_id: str
    benchmark: str
    dataset: str                  # the table's dataset label
    decoder: str
    method: str
    label: str                    # the table's method label, e.g. "free-bits (target_kl=8)"
    params: dict[str, Any]        # the method parameters that the grid varies
    seed: int
    config: RunConfig
    eval_splits: tuple[str, ...] = ("test",)
    probe: bool = False


@dataclass
class Benchmark:
    name: str
    path: Path
    description: str
    runs: list[RunSpec]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    reported: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)


# -- discovery ---------------------------------------------------------------------------------------
def benchmark_dirs(extra: str | Path | None = None) -> list[Path]:
    """Where benchmark files are looked up: --benchmarks-dir, $TEXTSVAE_BENCHMARKS, ./benchmarks, the repo's."""
    dirs = [Path(extra)] if extra else []
    if os.environ.get("TEXTSVAE_BENCHMARKS"):
        dirs.append(Path(os.environ["TEXTSVAE_BENCHMARKS"]))
    dirs += [Path.cwd() / "benchmarks", Path(__file__).resolve().parents[1] / "benchmarks"]
    seen, out = set(), []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def list_benchmarks(extra: str | Path | None = None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in benchmark_dirs(extra):
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.suffix in (".toml", ".json") and p.stem not in found:
                    found[p.stem] = p
    return found


def find_benchmark(name: str, extra: str | Path | None = None) -> Path:
    """A benchmark by name, or a path to a .toml/.json file."""
    if name.endswith((".toml", ".json")):
        if not Path(name).is_file():
            raise BenchmarkError(f"benchmark file not found: {name}")
        return Path(name)
    found = list_benchmarks(extra)
    if name not in found:
        valid = ", ".join(found) or "(none found)"
        raise BenchmarkError(f"unknown benchmark '{name}'; valid benchmarks: {valid}")
    return found[name]


def _read_file(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text(encoding="utf-8"))
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise BenchmarkError(f"cannot read benchmark {path}: {str(exc).splitlines()[0]}") from None


# -- the grid ----------------------------------------------------------------------------------------
def run_id(config: RunConfig) -> str:
    """12 hex digits of the SHA-256 of the config (seed included), execution-only fields left out."""
    d = config.to_dict()
    for section, names in EXECUTION_FIELDS.items():
        for name in names:
            d[section].pop(name, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _grid(params: dict[str, Any]) -> list[dict[str, Any]]:
    """{a: [1, 2], b: 3} -> [{a: 1, b: 3}, {a: 2, b: 3}]."""
    keys = list(params)
    values = [v if isinstance(v, list) else [v] for v in params.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def _label(method: str, params: dict[str, Any], label: str | None) -> str:
    if label:
        return label
    if not params:
        return method
    return f"{method} ({', '.join(f'{k}={v}' for k, v in params.items())})"


_KNOWN_KEYS = {"description", "preset", "seeds", "decoders", "eval_splits", "probe", "metrics", "reported",
               "settings", "datasets", "methods"}


def load_benchmark(name: str, extra: str | Path | None = None) -> Benchmark:
    """Read a benchmark file and expand its grid into RunSpecs (checking every config now)."""
    path = find_benchmark(name, extra)
    raw = _read_file(path)
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise BenchmarkError(f"{path.name}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(_KNOWN_KEYS)}")
    bench_name = path.stem
    seeds = raw.get("seeds", [0])
    datasets = raw.get("datasets") or [{"name": "synthetic", "data": "synthetic"}]
    methods = raw.get("methods") or [{"method": "vae"}]
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise BenchmarkError(f"{path.name}: seeds must be a list of integers")
    runs: list[RunSpec] = []
    ids: set[str] = set()
    for ds in datasets:
        ds = dict(ds)
        ds_name = ds.pop("name", None) or ds.get("data", "synthetic")
        preset = ds.pop("preset", raw.get("preset", "tiny"))
        base = _apply(preset_config(preset), {**raw.get("settings", {}), **ds}, path)
        for m in methods:
            m = dict(m)
            if "method" not in m:
                raise BenchmarkError(f"{path.name}: every [[methods]] entry needs a 'method'")
            decoders = m.get("decoders", raw.get("decoders", ["standard"]))
            m_seeds = m.get("seeds", seeds)
            for params, decoder, seed in itertools.product(_grid(m.get("params", {})), decoders, m_seeds):
                config = _config_for(base, decoder, m, params, seed, path)
                spec = RunSpec(run_id=run_id(config), benchmark=bench_name, dataset=ds_name, decoder=decoder,
                               method=m["method"], label=_label(m["method"], params, m.get("label")),
                               params=params, seed=seed, config=config,
                               eval_splits=tuple(raw.get("eval_splits", ["test"])),
                               probe=bool(raw.get("probe", False)))
                if spec.run_id not in ids:  # the same config listed twice runs once
                    ids.add(spec.run_id)
                    runs.append(spec)
    return Benchmark(name=bench_name, path=path, description=raw.get("description", ""), runs=runs,
                     metrics=tuple(raw.get("metrics", DEFAULT_METRICS)), reported=tuple(raw.get("reported", [])),
                     raw=raw)


def _apply(config: RunConfig, overrides: dict[str, Any], path: Path) -> RunConfig:
    try:
        return apply_overrides(config, overrides)
    except ConfigError as exc:
        raise BenchmarkError(f"{path.name}: {exc}") from None


def _config_for(base: RunConfig, decoder: str, entry: dict[str, Any], params: dict[str, Any], seed: int,
                path: Path) -> RunConfig:
    from .methods import build_method

    config = _apply(base, {**entry.get("settings", {}), "decoder": decoder, "method": entry["method"],
                           "seed": seed}, path)
    try:
        built = build_method(entry["method"], params)  # full parameters, defaults included: a stable hash
    except ConfigError as exc:
        raise BenchmarkError(f"{path.name}: {exc}") from None
    return _apply(config, {"method_params": built.param_values()}, path)  # 'part.key' for a+b


# -- running ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunTask:
    """What a worker gets: the spec, where results go, and how to execute it."""

    spec: RunSpec
    results_dir: str
    threads: int
    retry_failed: bool
    provenance: dict[str, Any]


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str          # finished | failed | busy (locked by another process) | done (already finished)
    message: str = ""
    seconds: float = 0.0


class LockBusy(RuntimeError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


STALE_EMPTY_LOCK_S = 30.0  # an empty lock this old (made by an older version whose holder died before writing it)


def _remove_stale_lock(path: Path, seen: bytes) -> bool:
    """Remove path if it still holds exactly `seen` (the dead holder's lock), by renaming it aside first.

    Unlinking by name could remove a live lock that another process made after `seen` was read; a
    rename moves one file atomically, and a lock that turns out not to be `seen` is put back.
    """
    aside = path.with_name(f".lock.stale.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # someone else removed it: try to create ours
    if aside.read_bytes() == seen:
        aside.unlink(missing_ok=True)
        return True
    try:  # a live lock: restore it (unless yet another process has locked meanwhile)
        os.link(aside, path)
    except OSError as exc:
        log.warning("could not restore the lock %s (%s)", path, exc)
    aside.unlink(missing_ok=True)
    return False


def _create_lock(path: Path, content: str) -> None:
    """Make path with its content in one step: written under another name, then hard-linked, which fails
    with FileExistsError if path exists. A process killed meanwhile leaves no empty lock behind (one
    made by O_CREAT before its write would hold the run until STALE_EMPTY_LOCK_S had passed)."""
    draft = path.with_name(f".lock.new.{os.getpid()}")
    draft.write_text(content)
    try:
        os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)


def acquire_lock(folder: Path) -> Path:
    """Create folder/.lock atomically with its holder; a lock left by a dead process on this host is taken over."""
    path = folder / ".lock"
    host = socket.gethostname()
    holder = json.dumps({"pid": os.getpid(), "host": host, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    for _ in range(3):
        try:
            _create_lock(path, holder)
        except FileExistsError:
            try:
                seen = path.read_bytes()
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile
            try:
                info = json.loads(seen or b"{}")
            except ValueError:
                info = {}
            info = info if isinstance(info, dict) else {}
            dead = info.get("host") == host and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"])
            if dead or (not seen and age > STALE_EMPTY_LOCK_S):
                log.warning("removing a stale lock of dead process %s: %s", info.get("pid", "?"), path)
                if _remove_stale_lock(path, seen):
                    continue
            raise LockBusy(f"run {folder.name} is held by process {info.get('pid')} on {info.get('host')} "
                           f"(delete {path} if that process is gone)") from None
        return path
    raise LockBusy(f"could not lock {path}")


def run_status(folder: Path) -> str:
    """'finished' or 'failed' (bench.json), else 'missing' (never started, half-trained or unevaluated)."""
    from .results import read_status

    return read_status(folder).get("status", "missing")


def execute_run(task: RunTask) -> RunOutcome:
    """Train (or resume), evaluate, probe and write the run's rows; errors mark the run failed."""
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
        status = run_status(folder)
        if status == "finished" or (status == "failed" and not task.retry_failed):
            return RunOutcome(spec.run_id, "done" if status == "finished" else "failed", "already " + status)
        try:
            summary = _train(folder, spec, task.threads, fresh=(status == "failed"))
            evals, eval_seconds = _evaluate(folder, spec)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # TrainingDiverged, RunError, a bug in a method: mark and go on
            log.debug("run %s failed", spec.run_id, exc_info=True)
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            write_failure(folder, spec, message, task.provenance)
            return RunOutcome(spec.run_id, "failed", message, time.perf_counter() - start)
        write_rows(folder, spec, summary, evals, eval_seconds, task.provenance)
        return RunOutcome(spec.run_id, "finished", "", time.perf_counter() - start)
    finally:
        lock.unlink(missing_ok=True)


def _train(folder: Path, spec: RunSpec, threads: int, fresh: bool) -> dict[str, Any]:
    from .train import RunError, read_run_config, resume_run, train_run

    config = apply_overrides(spec.config, {"threads": threads, "progress": False})
    # no last.pt: killed before its first checkpoint (maybe between config.json and vocab.json), nothing to resume
    if fresh or not (folder / "config.json").exists() or not (folder / "last.pt").exists():
        return train_run(config, folder, force=True)
    saved = read_run_config(folder)
    if run_id(saved) != spec.run_id:
        raise RunError(f"{folder} holds a run of another config (id {run_id(saved)})")
    state = json.loads((folder / "state.json").read_text()) if (folder / "state.json").exists() else {}
    if state.get("status") == "finished" and (folder / "summary.json").exists():
        return json.loads((folder / "summary.json").read_text())
    log.info("resuming %s", folder)
    return resume_run(folder)


def _evaluate(folder: Path, spec: RunSpec) -> tuple[dict[str, dict[str, Any]], float]:
    """{split: evaluate_run metrics}, plus {'probe': ...} on test where the corpus has labels."""
    from .evaluation import evaluate_run
    from .probe import probe_run

    start = time.perf_counter()
    evals = {split: evaluate_run(folder, split=split) for split in spec.eval_splits}
    if spec.probe:
        probe = probe_run(folder, seed=spec.config.eval.eval_seed)
        if probe is not None:
            evals.setdefault("test", {}).update(probe)
    return evals, time.perf_counter() - start


@dataclass
class BenchReport:
    total: int
    already_done: int = 0
    finished: list[str] = field(default_factory=list)
    failed: list[tuple[RunSpec, str]] = field(default_factory=list)
    busy: list[tuple[RunSpec, str]] = field(default_factory=list)
    seconds: float = 0.0
    jobs: int = 1


def provenance() -> dict[str, Any]:
    """What a number depends on besides its config: code version, machine, date."""
    import platform
    import subprocess

    from . import __version__

    repo = Path(__file__).resolve().parents[1]
    commit = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and dirty:
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    from .executor import available_cores

    machine = f"{platform.machine()} {available_cores()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            machine += f", {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - provenance must never fail a benchmark
        pass
    return {"git_commit": commit, "version": __version__, "machine": machine}


def run_benchmark(bench: Benchmark, results_dir: str | Path = DEFAULT_RESULTS, jobs: str | int | None = "auto",
                  retry_failed: bool = False, engine: str = "local", threads: int | None = None) -> BenchReport:
    """Run the benchmark's missing runs (resuming half-done ones), `jobs` at a time.

    threads: torch threads per run (default cores // jobs).
    """
    from .executor import make_executor, parse_jobs, threads_per_job

    import torch

    parse_jobs(jobs, 1, gpu=False)  # a bad --jobs fails before anything else
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = BenchReport(total=len(bench.runs))
    todo = []
    for spec in bench.runs:
        status = run_status(results_dir / spec.run_id)
        if status == "finished":
            report.already_done += 1
        elif status == "failed" and not retry_failed:
            report.failed.append((spec, "failed before (use --retry-failed to run it again)"))
        else:
            todo.append(spec)
    if not todo:
        report.seconds = time.perf_counter() - start
        return report
    n_jobs = parse_jobs(jobs, len(todo), gpu=torch.cuda.is_available())
    report.jobs = n_jobs
    threads = threads or threads_per_job(n_jobs)
    info = provenance()
    log.info("%s: %d of %d runs to do (%d already done), %d job(s) x %d thread(s), results in %s",
             bench.name, len(todo), report.total, report.already_done, n_jobs, threads, results_dir)
    tasks = [RunTask(spec, str(results_dir), threads, retry_failed, info) for spec in todo]
    by_id = {s.run_id: s for s in todo}
    executor = make_executor(n_jobs, engine)
    executor.on_start(lambda task: log.info("  %-7s %s", "resume" if (results_dir / task.spec.run_id / "last.pt")
                                            .exists() else "start", _describe(task.spec)))
    done = 0
    for outcome in executor.map_unordered(execute_run, tasks):
        done += 1
        spec = by_id[outcome.run_id]
        if outcome.status == "finished":
            report.finished.append(outcome.run_id)
        elif outcome.status == "done":
            report.already_done += 1
        elif outcome.status == "busy":
            report.busy.append((spec, outcome.message))
        else:
            report.failed.append((spec, outcome.message))
        log.info("[%d/%d] %-8s %s%s (%.0fs elapsed)", done, len(todo), outcome.status, _describe(spec),
                 f": {outcome.message}" if outcome.status == "failed" else "", time.perf_counter() - start)
    report.seconds = time.perf_counter() - start
    from .io import append_jsonl

    append_jsonl(results_dir / f"{bench.name}.bench.jsonl", {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": report.seconds, "jobs": n_jobs,
        "threads": threads, "ran": len(todo), "finished": len(report.finished), "failed": len(report.failed),
        **info})
    return report


def _describe(spec: RunSpec) -> str:
    return f"{spec.dataset} {spec.decoder} {spec.label} seed {spec.seed} [{spec.run_id}]"
