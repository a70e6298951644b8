"""A grid's state read from its results folder alone (`textsvae bench NAME --status`), wherever its runs execute.

finished / failed (bench.json); running (a lock whose holder is alive: this host's live pid, or another
host's fresh heartbeat); stale (a lock nobody keeps: the next bench takes it over); started (a run
folder with epochs logged but no lock: the next bench resumes it); missing (never started).
"""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from .grid import Benchmark, RunSpec
from .io import read_jsonl
from .locks import pid_alive, read_lock, stale_after
from .results import read_status

ORDER = ("finished", "running", "failed", "started", "stale", "missing")


@dataclass(frozen=True)
class RunState:
    spec: RunSpec
    state: str                 # one of ORDER
    detail: str = ""


def run_state(spec: RunSpec, folder: Path) -> RunState:
    status = read_status(folder)
    if status.get("status") in ("finished", "failed"):
        return RunState(spec, status["status"], status.get("error", ""))
    epochs = len(read_jsonl(folder / "log.jsonl")) if (folder / "log.jsonl").exists() else 0
    progress = f"epoch {epochs} of {spec.config.train.epochs}"
    held = read_lock(folder / ".lock")
    if held is not None:
        info, age = held
        here = info.get("host") == socket.gethostname()
        alive = pid_alive(info["pid"]) if here and isinstance(info.get("pid"), int) else age <= stale_after()
        job = f", job {info['job']}" if info.get("job") else ""
        who = f"pid {info.get('pid')} on {info.get('host')}{job}, heartbeat {age:.0f} s ago"
        return RunState(spec, "running" if alive else "stale", f"{progress}; {who}")
    if epochs or (folder / "config.json").exists():
        state = {}
        try:
            state = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError):
            pass
        note = f" ({state['status']}: {state['message']})" if state.get("message") else ""
        return RunState(spec, "started", progress + note)
    return RunState(spec, "missing")


def grid_states(bench: Benchmark, results_dir: Path) -> list[RunState]:
    return [run_state(spec, Path(results_dir) / spec.run_id) for spec in bench.runs]


def status_text(bench: Benchmark, results_dir: Path) -> str:
    """A summary line, then one line per run that is not finished (failed runs with their error and folder)."""
    states = grid_states(bench, results_dir)
    counts = {s: sum(r.state == s for r in states) for s in ORDER}
    left = counts["started"] + counts["stale"] + counts["missing"]
    lines = [f"{bench.name}: {counts['finished']} finished, {counts['running']} running, {counts['failed']} failed, "
             f"{left} left ({counts['started']} started, {counts['stale']} stale, {counts['missing']} not started) "
             f"of {len(states)} in {results_dir}"]
    for r in sorted(states, key=lambda r: ORDER.index(r.state)):
        if r.state == "finished":
            continue
        s = r.spec
        where = f"  [{Path(results_dir) / s.run_id}]" if r.state == "failed" else ""
        lines.append(f"{r.state:8s} {s.run_id} {s.dataset} {s.decoder} {s.label} seed {s.seed}"
                     f"{': ' + r.detail if r.detail else ''}{where}")
    return "\n".join(lines)
