"""The tracker interface: what one experiment tracker (TensorBoard, MLflow, W&B) is given and must do."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TrackerError(RuntimeError):
    """A tracker that cannot log (not logged in, a store it cannot reach): one line for the user."""


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker needs to open (or continue) its run for one textsvae run."""

    run_dir: Path
    name: str                      # the run's name in the tracker: its folder's name (a grid's run id)
    project: str                   # experiment / project: the benchmark's name under `bench`
    group: str                     # "method/decoder": a grid's seeds share it
    tags: dict[str, str]           # benchmark, method, decoder, dataset, seed
    state: dict[str, Any] = field(default_factory=dict)   # what `Tracker.state()` returned last time; {} if new


class Tracker(ABC):
    """One tracker's run. Metric names are log.jsonl's keys ("valid_kl"), "monitor/valid_kl" for
    monitor.jsonl's rows and "test/iw_nll" for a final evaluation; `step` is the optimiser step."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-able facts that let a later process continue this tracker run (its id, its store)."""

    @abstractmethod
    def log_params(self, params: dict[str, Any]) -> None:
        """The run's whole config, flattened to "section.field" keys; called once, when the run is new."""

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Scalars at one training step."""

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        """The final evaluation's metrics (W&B keeps them as the run's summary)."""
        self.log_metrics(metrics, step)

    @abstractmethod
    def close(self, status: str) -> None:
        """Flush and end this process's part of the run; status is 'finished', 'interrupted' or 'failed'."""
