"""A grid's state read from its results folder alone (`textsvae bench NAME --status`), wherever its runs execute.

finished / failed (bench.json); running (a lock whose holder is alive: this host's live pid, or another
host's fresh heartbeat); stale (a lock nobody keeps: the next bench takes it over); started (a run
folder with epochs logged but no lock: the next bench resumes it); missing (never started).
"""
from __future__ import annotations

import csv
import math
import socket
from dataclasses import dataclass
from pathlib import Path

from ..core.config import TrainConfig
from ..core.io import read_jsonl
from ..core.metric_registry import fixed
from ..core.rundir import has_config, read_state, read_summary
from .grid import Benchmark, RunSpec
from .locks import pid_alive, read_lock, stale_after
from .results import outside_grid_note, read_outcome

ORDER = ("finished", "running", "failed", "started", "stale", "missing")


@dataclass(frozen=True)
class RunState:
    spec: RunSpec
    state: str                 # one of ORDER
    detail: str = ""


def run_state(spec: RunSpec, folder: Path) -> RunState:
    status = read_outcome(folder)
    if status.get("status") == "finished":
        return RunState(spec, "finished", finished_summary(folder))
    if status.get("status") == "failed":
        return RunState(spec, "failed", status.get("error", ""))
    if status.get("status") == "damaged":
        return RunState(spec, "started", "finished, but its rows.csv is unreadable: `bench` rebuilds it")
    log_rows = read_jsonl(folder / "log.jsonl") if (folder / "log.jsonl").exists() else []
    epochs = len(log_rows)
    budget = spec.config.train.epochs
    of = f"of {budget}" if epochs <= budget else f"({budget} per phase)"     # pretrain-fb's second run goes on
    progress = f"epoch {epochs} {of}{training_summary(spec, log_rows)}"
    held = read_lock(folder / ".lock")
    if held is not None:
        info, age = held
        here = info.get("host") == socket.gethostname()
        alive = pid_alive(info["pid"]) if here and isinstance(info.get("pid"), int) else age <= stale_after()
        job = f", job {info['job']}" if info.get("job") else ""
        who = f"pid {info.get('pid')} on {info.get('host')}{job}, heartbeat {age:.0f} s ago"
        return RunState(spec, "running" if alive else "stale", f"{progress}; {who}")
    if epochs or has_config(folder):
        state = read_state(folder)
        note = f" ({state['status']}: {state['message']})" if state.get("message") else ""
        return RunState(spec, "started", progress + note)
    return RunState(spec, "missing")


def finished_summary(folder: Path) -> str:
    """'62 epochs (stopped at validation plateau 5 (max_decays=5)); train 9.1 h, eval 58 min' from the run's
    summary.json and rows.csv; what either lacks is left out."""
    summary = read_summary(folder)
    try:
        with open(folder / "rows.csv", newline="") as f:
            first = next(csv.DictReader(f), {})
    except OSError:
        first = {}
    parts = []
    if isinstance(summary.get("epochs"), int):
        reason = f" ({summary['stop_reason']})" if summary.get("stop_reason") else ""
        parts.append(f"{summary['epochs']} epochs{reason}")
    times = [f"{name} {duration(float(first[key]))}" for name, key in (("train", "train_seconds"),
                                                                       ("eval", "eval_seconds")) if first.get(key)]
    return "; ".join(parts + ([", ".join(times)] if times else []))


def duration(seconds: float) -> str:
    """'42 s', '1.5 min', '58 min' or '9.1 h': two significant figures at least."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 10 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def training_summary(spec: RunSpec, log_rows: list[dict]) -> str:
    """' (valid loss 103.77, best 103.50 at epoch 24; kl 0.02, mi 0.00, au 0; lr 0.5: 1 of 5 halvings,
    2 of 5 worse epochs; 8 min per epoch)' from the per-epoch log; '' when it holds no validation loss yet."""
    scored = [r for r in log_rows if isinstance(r.get("valid_loss"), (int, float))]
    if not scored:
        return ""
    last, best = scored[-1], min(scored, key=lambda r: r["valid_loss"])
    parts = [f"valid loss {last['valid_loss']:.2f}, best {best['valid_loss']:.2f} at epoch {best.get('epoch', '?')}"]
    if spec.decoder != "lm":                                                      # an LM has no z
        latent = [f"{k} {fixed(last['valid_' + k], 0 if k == 'au' else 2)}" for k in ("kl", "mi", "au")
                  if isinstance(last.get("valid_" + k), (int, float))]
        parts += [", ".join(latent)] if latent else []
    train = spec.config.train
    if isinstance(last.get("lr"), (int, float)) and last["lr"] > 0:
        halvings = round(math.log2(train.lr / last["lr"]))
        if train.lr_rule == "skip-vae":          # halves every epoch once decaying, until below min_lr
            parts.append(f"lr {last['lr']:g}: {halvings} halvings, "
                         + ("halving every epoch" if halvings else "not decaying yet") + f", stops below {train.min_lr:g}")
        else:
            parts.append(f"lr {last['lr']:g}: {halvings} of {train.max_decays} halvings, "
                         f"{worse_epochs(scored, train)} of {train.decay_patience} worse epochs")
    seconds = sorted(r["seconds"] for r in log_rows[-5:] if isinstance(r.get("seconds"), (int, float)))
    if seconds:                  # the median of the last five: an epoch cut by a resume counts less
        parts.append(f"{duration(seconds[len(seconds) // 2])} per epoch")
    return f" ({'; '.join(parts)})"


def worse_epochs(rows: list[dict], train: "TrainConfig") -> int:
    """Worse epochs in a row now, replaying the trainer's LR rule over the log: an epoch is worse when its
    selection loss (reconstruction in pretrain-fb's autoencoder phase) exceeds the last non-worse one's;
    a halving (the next epoch's LR lower) or a new phase (higher) starts the count again."""
    reference, worse, phase_start = math.inf, 0, 0
    for i, row in enumerate(rows):
        loss = row.get("valid_rec") if row.get("method_pretraining") else row["valid_loss"]
        reference, worse = (loss, 0) if loss <= reference else (reference, worse + 1)
        following = rows[i + 1].get("lr") if i + 1 < len(rows) else None
        if isinstance(following, (int, float)) and following < row["lr"]:
            reference, worse = loss, 0
        elif isinstance(following, (int, float)) and following > row["lr"]:
            reference, worse, phase_start = math.inf, 0, row.get("epoch", i + 1)
    if worse >= train.decay_patience and rows[-1].get("epoch", len(rows)) - phase_start > train.decay_start_epoch:
        return 0                                 # the trainer has just halved the LR (or stopped) and starts again
    return worse


def grid_states(bench: Benchmark, results_dir: Path) -> list[RunState]:
    return [run_state(spec, Path(results_dir) / spec.run_id) for spec in bench.runs]


def status_text(bench: Benchmark, results_dir: Path) -> str:
    """A summary line, then one line per run: finished ones with their epochs, why they stopped and their time,
    failed ones with their error and folder, the others with their progress."""
    states = grid_states(bench, results_dir)
    counts = {s: sum(r.state == s for r in states) for s in ORDER}
    left = counts["started"] + counts["stale"] + counts["missing"]
    lines = [f"{bench.name}: {counts['finished']} finished, {counts['running']} running, {counts['failed']} failed, "
             f"{left} left ({counts['started']} started, {counts['stale']} stale, {counts['missing']} not started) "
             f"of {len(states)} in {results_dir}"]
    for r in sorted(states, key=lambda r: ORDER.index(r.state)):
        s = r.spec
        where = f"  [{Path(results_dir) / s.run_id}]" if r.state == "failed" else ""
        lines.append(f"{r.state:8s} {s.run_id} {s.description}"
                     f"{': ' + r.detail if r.detail else ''}{where}")
    note = outside_grid_note(Path(results_dir), bench.name, {r.spec.run_id for r in states})
    return "\n".join(lines + ([note] if note else []))
