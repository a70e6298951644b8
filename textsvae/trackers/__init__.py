"""Experiment trackers: the scalars of log.jsonl and monitor.jsonl, the config and the final evaluation,
sent to TensorBoard, MLflow or Weights & Biases (`train --track`, `bench --track`, or the config field
`track = "tensorboard,mlflow"`).

A tracker is one module in this folder with a `Tracker` subclass decorated by
`@register_tracker(name, package, extra)`. `RunTracking` fans out to the chosen ones. A resumed run
continues each tracker's run: trackers.json in the run folder keeps their ids and the last step each
was sent, so no step is sent twice. A tracker that fails warns once and is dropped: the training never
stops or changes because of one.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.config import ConfigError, RunConfig
from ..core.io import atomic_write_json
from ..core.registry import claim, import_modules
from .base import TrackedRun, Tracker, TrackerError

log = logging.getLogger(__name__)

STATE_FILE = "trackers.json"


@dataclass(frozen=True)
class TrackerKind:
    cls: type[Tracker]
    package: str       # the module it needs
    extra: str         # the textsvae extra that installs it


TRACKERS: dict[str, TrackerKind] = {}


def register_tracker(name: str, package: str, extra: str):
    """Class decorator: register a Tracker subclass, opened as `cls(TrackedRun)`, under `name`."""
    def wrap(cls: type[Tracker]) -> type[Tracker]:
        claim(TRACKERS, name, TrackerKind(cls, package, extra), "tracker", owner=lambda kind: kind.cls)
        return cls
    return wrap


def tracker_names() -> tuple[str, ...]:
    return tuple(sorted(TRACKERS))


def parse_track(value: str) -> tuple[str, ...]:
    """'tensorboard, mlflow' -> ('tensorboard', 'mlflow'); an unknown name or a tracker whose package is
    not installed is a one-line ConfigError naming the extra."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"unknown tracker '{name}'; valid trackers: {', '.join(tracker_names())}")
        kind = TRACKERS[name]
        if importlib.util.find_spec(kind.package) is None:
            raise ConfigError(f"tracker '{name}' needs the {kind.package} package: "
                              f"pip install 'textsvae[{kind.extra}]'")
    return names


def flat_params(config: RunConfig) -> dict[str, Any]:
    """{'train.lr': 1.0, 'train.method_params.gamma': 0.6, ...}: the whole config, one key per field."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            out[prefix] = value
    walk("", config.to_dict())
    return out


def scalars(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a log row (booleans as 0/1), without its step, keys prefixed."""
    return {prefix + key: float(value) for key, value in row.items()
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(float(value))}


def tracked_run(config: RunConfig, run_dir: Path, state: dict[str, Any]) -> TrackedRun:
    t, m = config.train, config.model
    dataset = Path(config.data.data).name or config.data.data
    tags = {"benchmark": t.track_project, "method": t.method, "decoder": m.decoder, "dataset": dataset,
            "seed": str(t.seed)}
    return TrackedRun(run_dir=run_dir, name=run_dir.resolve().name, project=t.track_project,
                      group=f"{t.method}/{m.decoder}", tags=tags, state=state)


_FAILED = object()


class RunTracking:
    """The trackers of one run, as chosen by `config.train.track` (none: every call is a no-op)."""

    def __init__(self, config: RunConfig, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.active: dict[str, Tracker] = {}
        self._write_warned = False
        names = parse_track(config.train.track)
        self.saved = self._read() if names else {}
        for name in names:
            entry = self.saved.get(name, {})
            tracker = self._call(name, TRACKERS[name].cls, tracked_run(config, self.run_dir, entry.get("state", {})))
            if tracker is _FAILED:
                continue
            self.active[name] = tracker
            self.saved[name] = {"state": tracker.state(), "sent": entry.get("sent", {})}
            if "state" not in entry:  # a new tracker run
                self._call(name, tracker.log_params, flat_params(config))
        self._write()

    def log_row(self, stream: str, row: dict[str, Any], step: int, prefix: str = "") -> None:
        """Send a row's scalars at `step` to every tracker that has not had this stream's step yet."""
        self._send(stream, step, lambda tracker: tracker.log_metrics(scalars(row, prefix), step))

    def log_final(self, split: str, metrics: dict[str, Any], step: int) -> None:
        """A final evaluation's metrics, as '<split>/<metric>'."""
        self._send(f"final/{split}", step, lambda tracker: tracker.log_final(scalars(metrics, f"{split}/"), step))

    def close(self, status: str) -> None:
        for name, tracker in list(self.active.items()):
            self._call(name, tracker.close, status)
        self.active.clear()

    # -- internals -----------------------------------------------------------------------------------
    def _send(self, stream: str, step: int, send: Callable[[Tracker], None]) -> None:
        if not self.active:
            return
        for name, tracker in list(self.active.items()):
            sent = self.saved[name]["sent"]
            if step <= sent.get(stream, -1):   # sent before this run was resumed: the same numbers
                continue
            if self._call(name, send, tracker) is not _FAILED:
                sent[stream] = step
        self._write()

    def _call(self, name: str, fn: Callable, *args: Any) -> Any:
        """fn(*args), leaving Python's and NumPy's RNGs as they were; a failure warns once and drops the tracker."""
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            return fn(*args)
        except Exception as exc:  # a tracker must never stop the training
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning("tracker %s failed (%s: %s); the run goes on without it", name, type(exc).__name__, first)
            self.active.pop(name, None)
            return _FAILED
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

    def _read(self) -> dict[str, Any]:
        try:
            saved = json.loads((self.run_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def _write(self) -> None:
        if self.saved:
            try:
                atomic_write_json(self.run_dir / STATE_FILE, self.saved)
            except OSError as exc:
                if not self._write_warned:
                    log.warning("cannot write %s (%s); a resumed run may send some steps again",
                                self.run_dir / STATE_FILE, exc)
                self._write_warned = True


def log_evaluation(config: RunConfig, run_dir: str | Path, evals: dict[str, dict[str, Any]], step: int) -> None:
    """Send a finished run's evaluations ({split: metrics}) to its trackers, continuing their runs."""
    tracking = RunTracking(config, run_dir)
    for split, metrics in evals.items():
        tracking.log_final(split, metrics, step)
    tracking.close("finished")


import_modules(__name__, __path__, skip=("base",))

__all__ = ["Tracker", "TrackedRun", "TrackerError", "TRACKERS", "register_tracker", "tracker_names", "parse_track",
           "RunTracking", "log_evaluation", "flat_params", "scalars"]
