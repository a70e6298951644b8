"""The results store: tidy long rows, one file per run, merged on read (tables.py makes the paper tables).

A row is one run x split x metric: run id, benchmark, dataset, decoder, method, parameters,
seed, split, metric, value, and what the value depends on (IW samples, MI set size, AU
threshold, epochs and steps trained, seconds, tokens/s, device, machine, git commit, version,
date). Each run folder holds its `rows.csv` (written atomically) and `bench.json` (its outcome).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..core.config import ConfigError
from ..core.io import atomic_write_json, atomic_write_text
from ..core.metric_registry import METRICS

if TYPE_CHECKING:
    from .grid import RunSpec

COLUMNS = ["run_id", "benchmark", "dataset", "decoder", "method", "label", "params", "seed", "split", "metric",
           "value", "status", "iw_samples", "mi_n", "mi_samples", "au_threshold", "n_sentences", "epochs", "steps",
           "train_seconds", "eval_seconds", "wall_seconds", "tokens_per_s", "device", "machine", "git_commit",
           "version", "date", "error"]


class ResultsError(ConfigError):
    """A missing or empty results folder (one line for the user)."""


# -- writing ----------------------------------------------------------------------------------------
def read_outcome(folder: Path) -> dict[str, Any]:
    """The run's outcome as bench recorded it (bench.json: "status" finished or failed, run id, benchmark)
    where rows.csv exists too, else {}; a finished run whose rows.csv does not read as rows is 'damaged'
    (bench rebuilds its rows)."""
    path = Path(folder) / "bench.json"
    if not path.is_file() or not (Path(folder) / "rows.csv").is_file():
        return {}
    try:
        outcome = json.loads(path.read_text())
    except ValueError:
        return {}
    if outcome.get("status") == "finished" and unreadable_rows(Path(folder) / "rows.csv"):
        return {**outcome, "status": "damaged"}
    return outcome


def read_rows(path: Path) -> pd.DataFrame:
    """One run's rows.csv; ResultsError (one line) when it does not read as rows."""
    problem = unreadable_rows(path)
    if problem:
        raise ResultsError(f"{path} is unreadable ({problem}); `textsvae bench` rebuilds it from the run's "
                           f"evaluation")
    return pd.read_csv(path, dtype={"run_id": str, "params": str, "error": str})


def unreadable_rows(path: Path) -> str:
    """Why rows.csv at path is not a table of rows ('' when it is): unparsable, no rows, or a column missing."""
    try:
        frame = pd.read_csv(path, dtype={"run_id": str, "params": str, "error": str})
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    missing = [c for c in ("run_id", "status", "metric", "value") if c not in frame.columns]
    if missing:
        return f"no column {', '.join(missing)}"
    if frame.empty:
        return "no rows"
    return ""


def runs_outside_grid(results_dir: Path, benchmark: str, run_ids: set[str]) -> list[str]:
    """Run folders under results_dir that bench.json files under `benchmark` but whose ids this grid does not
    make: runs of another version of the benchmark file or of textsvae (a run id hashes the whole config)."""
    return sorted(folder.parent.name for folder in Path(results_dir).glob("*/bench.json")
                  if folder.parent.name not in run_ids and read_outcome(folder.parent).get("benchmark") == benchmark)


def outside_grid_note(results_dir: Path, benchmark: str, run_ids: set[str]) -> str:
    """One line saying how many such runs there are and that tables leave them out; '' when none."""
    others = runs_outside_grid(results_dir, benchmark, run_ids)
    if not others:
        return ""
    return (f"note: {len(others)} run folder(s) of '{benchmark}' in {results_dir} are not in this grid (another "
            f"version of textsvae or of the benchmark file made them, so their run ids differ) and are left out, "
            f"e.g. {others[0]}; `textsvae results --results {results_dir}` shows every run")


def _base(spec: "RunSpec", provenance: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": spec.run_id, "benchmark": spec.benchmark, "dataset": spec.dataset, "decoder": spec.decoder,
            "method": spec.method, "label": spec.label, "params": json.dumps(spec.params, sort_keys=True),
            "seed": spec.seed, "date": time.strftime("%Y-%m-%dT%H:%M:%S"), **provenance}


def _write(folder: Path, rows: list[dict[str, Any]], status: dict[str, Any]) -> None:
    frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
    atomic_write_text(folder / "rows.csv", frame.to_csv(index=False))
    atomic_write_json(folder / "bench.json", status)  # written last: its presence means rows.csv is complete


def write_rows(folder: Path, spec: "RunSpec", summary: dict[str, Any], evals: dict[str, dict[str, Any]],
               eval_seconds: float, provenance: dict[str, Any]) -> None:
    """One row per split x metric of a finished run."""
    base = _base(spec, provenance)
    train_seconds = float(summary.get("train_seconds", 0.0))
    common = {"status": "finished", "epochs": summary.get("epochs"), "steps": summary.get("steps"),
              "train_seconds": train_seconds, "eval_seconds": eval_seconds,
              "wall_seconds": train_seconds + eval_seconds,
              "tokens_per_s": (summary.get("last") or {}).get("tokens_per_s"), "device": summary.get("device")}
    rows = []
    for split, result in evals.items():
        for name, value in result.items():
            if name not in METRICS or value is None:   # settings, diagnostics, an LM's z-metrics
                continue
            depends = {key: result.get(key) for key in METRICS[name].depends_on}
            rows.append({**base, **common, **depends, "split": split, "metric": name, "value": float(value)})
    _write(folder, rows, {"status": "finished", "run_id": spec.run_id, "benchmark": spec.benchmark})


def write_failure(folder: Path, spec: "RunSpec", message: str, provenance: dict[str, Any]) -> None:
    """A failed run is one row with status 'failed' and its error message."""
    row = {**_base(spec, provenance), "status": "failed", "split": "", "metric": "failed", "value": math.nan,
           "error": message}
    _write(folder, [row], {"status": "failed", "run_id": spec.run_id, "benchmark": spec.benchmark,
                           "error": message})


# -- reading ----------------------------------------------------------------------------------------
def load_results(results_dir: str | Path) -> pd.DataFrame:
    """All rows under results_dir (one rows.csv per run folder) as one DataFrame."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsError(f"results folder not found: {results_dir} (run `textsvae bench NAME` first)")
    frames = [read_rows(path) for path in sorted(results_dir.glob("*/rows.csv"))]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True).reindex(columns=COLUMNS)


def summary_text(df: pd.DataFrame, split: str = "test") -> str:
    """Runs per benchmark and status, and the mean of the main metrics per dataset x decoder x method."""
    if df.empty:
        return "no results yet"
    runs = df.drop_duplicates("run_id")
    lines = []
    for (bench, status), n in runs.groupby(["benchmark", "status"]).size().items():
        lines.append(f"{bench}: {n} run(s) {status}")
    main = df[(df.status == "finished") & (df.split == split) & df.metric.isin(["iw_nll", "kl", "mi", "au", "ppl"])]
    if not main.empty:
        pivot = main.pivot_table(index=["dataset", "decoder", "label"], columns="metric", values="value",
                                 aggfunc="mean")
        pivot.insert(0, "n", main.groupby(["dataset", "decoder", "label"]).run_id.nunique())
        lines += ["", f"means over seeds ({split} split):", pivot.round(2).to_string()]
    failed = runs[runs.status == "failed"]
    for _, r in failed.iterrows():
        lines.append(f"failed: {r.run_id} {r.dataset} {r.decoder} {r.label} seed {r.seed}: {r.error}")
    return "\n".join(lines)
