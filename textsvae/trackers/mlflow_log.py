"""MLflow: one MLflow run per textsvae run, in the experiment named by `track_project` (a grid's benchmark).

The store is $MLFLOW_TRACKING_URI, else the SQLite file mlflow.db beside the run folder (a grid's
results folder: `mlflow ui --backend-store-uri sqlite:///RESULTS/mlflow.db`). A resumed run logs to
the same MLflow run in the store it started in.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import register_tracker
from .base import TrackedRun, Tracker, TrackerError

STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
BATCH = 100   # MLflow's limit on params per log_batch call (metrics: 1000)


def default_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir.resolve().parent / 'mlflow.db')}"


@contextmanager
def _store_lock(uri: str):
    """Serialise the first use of a local SQLite store: parallel workers would race to create its tables."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_server(uri: str) -> None:
    """Fail at once when an HTTP tracking server is down (MLflow itself retries for minutes)."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except OSError as exc:
            raise TrackerError(f"MLflow server {uri} is not reachable ({exc})") from None


@register_tracker("mlflow", package="mlflow", extra="mlflow")
class MlflowTracker(Tracker):
    def __init__(self, run: TrackedRun):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")   # a server that dies mid-run: no long stall
        logging.getLogger("mlflow").setLevel(logging.WARNING)          # not its table-creation notices
        from mlflow.tracking import MlflowClient

        self.uri = run.state.get("tracking_uri") or default_uri(run.run_dir)
        _check_server(self.uri)
        with _store_lock(self.uri):
            self.client = MlflowClient(tracking_uri=self.uri)
            self.run_id = run.state.get("run_id") or self._create_run(run)
        if run.state.get("run_id"):
            self.client.update_run(self.run_id, status="RUNNING")

    def _create_run(self, run: TrackedRun) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(run.project)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(run.project)
            except MlflowException:  # made meanwhile by a process with another lock (another store path)
                experiment_id = self.client.get_experiment_by_name(run.project).experiment_id
        else:
            experiment_id = experiment.experiment_id
        tags = {**run.tags, "group": run.group, "textsvae.run_dir": str(run.run_dir.resolve())}
        return self.client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id

    def state(self) -> dict[str, Any]:
        return {"tracking_uri": self.uri, "run_id": self.run_id}

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FINISHED"))
