"""Benchmarks as data: a TOML (or JSON) file per table, expanded into a grid of runs.

A benchmark file states datasets x decoders x methods x parameters x seeds, the training
budget and the evaluation settings (`[settings]`: any RunConfig field). A run's id is a hash
of its full config (seed included) minus the execution-only fields, so `bench` runs only what
is missing, resumes half-done runs and can share a results folder between benchmarks and processes.

Benchmark files are found by name in --benchmarks-dir, $TEXTSVAE_BENCHMARKS, ./benchmarks and the
grids that ship with the package (`textsvae.grids`, the repository's benchmarks/*.toml), in that
order; a path to a .toml or .json file works too.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.config import ConfigError, RunConfig, apply_overrides, identity_fields, preset_config
from ..core.metric_registry import opt_ins_for

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
    recon: bool = False           # compute the reconstruction metrics (the benchmark's metrics name one)
    mi_batch: bool = False        # also He et al.'s per-minibatch MI, mi_minibatch (the benchmark's metrics name it)

    @property
    def description(self) -> str:
        """How the CLI names the run: "ptb skip anneal (start=0.0, epochs=10.0) seed 0"."""
        return f"{self.dataset} {self.decoder} {self.label} seed {self.seed}"


@dataclass
class Benchmark:
    name: str
    path: Path
    description: str
    runs: list[RunSpec]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    reported: tuple[str, ...] = ()
    executor: dict[str, Any] = field(default_factory=dict)   # the [executor] table: name and the engine's settings
    raw: dict[str, Any] = field(default_factory=dict)


# -- discovery ---------------------------------------------------------------------------------------
def packaged_grids() -> Path | None:
    """The folder of the benchmark files that ship with the package (the repository's benchmarks/*.toml)."""
    try:
        folder = resources.files("textsvae.grids")
    except ModuleNotFoundError:
        return None
    return Path(str(folder)) if folder.is_dir() else None


def benchmark_dirs(extra: str | Path | None = None) -> list[Path]:
    """Where benchmark files are looked up: --benchmarks-dir, $TEXTSVAE_BENCHMARKS, ./benchmarks, the package's."""
    dirs = [Path(extra)] if extra else []
    if os.environ.get("TEXTSVAE_BENCHMARKS"):
        dirs.append(Path(os.environ["TEXTSVAE_BENCHMARKS"]))
    dirs.append(Path.cwd() / "benchmarks")
    shipped = packaged_grids()
    if shipped is not None:
        dirs.append(shipped)
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
    """12 hex digits of the SHA-256 of the config (seed included), execution-only fields and fields at
    their ID_NEUTRAL_DEFAULTS value left out (so ids made before such a field existed stay valid)."""
    d = identity_fields(config.to_dict())
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
               "settings", "datasets", "methods", "executor"}


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
    metrics = raw.get("metrics", DEFAULT_METRICS)
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise BenchmarkError(f"{path.name}: metrics must be a list of metric names, got {metrics!r}")
    metrics = tuple(metrics)
    options = opt_ins_for(list(metrics))   # the evaluation options its metrics switch on (recon, mi_batch)
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
                               probe=bool(raw.get("probe", False)),
                               recon="recon" in options, mi_batch="mi_batch" in options)
                if spec.run_id not in ids:  # the same config listed twice runs once
                    ids.add(spec.run_id)
                    runs.append(spec)
    return Benchmark(name=bench_name, path=path, description=raw.get("description", ""), runs=runs,
                     metrics=metrics, reported=tuple(raw.get("reported", [])),
                     executor=_executor_table(raw, path), raw=raw)


def _executor_table(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    table = raw.get("executor", {})
    if not isinstance(table, dict):
        raise BenchmarkError(f"{path.name}: [executor] must be a table (name = \"local\" and the engine's settings)")
    return dict(table)


def _apply(config: RunConfig, overrides: dict[str, Any], path: Path) -> RunConfig:
    try:
        return apply_overrides(config, overrides)
    except ConfigError as exc:
        raise BenchmarkError(f"{path.name}: {exc}") from None


def _config_for(base: RunConfig, decoder: str, entry: dict[str, Any], params: dict[str, Any], seed: int,
                path: Path) -> RunConfig:
    from ..methods import build_method

    config = _apply(base, {**entry.get("settings", {}), "decoder": decoder, "method": entry["method"],
                           "seed": seed}, path)
    try:
        built = build_method(entry["method"], params)  # full parameters, defaults included: a stable hash
    except ConfigError as exc:
        raise BenchmarkError(f"{path.name}: {exc}") from None
    return _apply(config, {"method_params": built.param_values()}, path)  # 'part.key' for a+b

