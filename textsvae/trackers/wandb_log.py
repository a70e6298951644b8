"""Weights & Biases: one W&B run per textsvae run, in the project named by `track_project`, grouped by
method and decoder. W&B's own settings apply: `WANDB_MODE=offline` writes the run under RUN_DIR/wandb
(`wandb sync` uploads it later), otherwise it needs `wandb login`. A resumed run continues the same
W&B run id; the final evaluation becomes the run's summary.
"""
from __future__ import annotations

import netrc
import os
import re
import uuid
from typing import Any
from urllib.parse import urlparse

from . import register_tracker
from .base import TrackedRun, Tracker, TrackerError

LOCAL_MODES = ("offline", "disabled", "dryrun")


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


@register_tracker("wandb", package="wandb", extra="wandb")
class WandbTracker(Tracker):
    def __init__(self, run: TrackedRun):
        import wandb

        if os.environ.get("WANDB_MODE", "online").lower() not in LOCAL_MODES and not _logged_in():
            # wandb.init would stop at a login prompt on a terminal
            raise TrackerError("W&B is not logged in: run `wandb login`, or set WANDB_MODE=offline to log to "
                               "local files")
        # W&B run ids are unique in a project forever: a fresh one for each new textsvae run
        self.id = run.state.get("id") or f"{re.sub(r'[^A-Za-z0-9_-]', '-', run.name)[:48]}-{uuid.uuid4().hex[:8]}"
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True, x_save_requirements=False,
                                  disable_git=True, save_code=False)
        self.run = wandb.init(project=run.project, name=run.name, id=self.id, group=run.group,
                              job_type=run.tags.get("method"), tags=[f"{k}:{v}" for k, v in run.tags.items()],
                              dir=str(run.run_dir), resume="allow", reinit="create_new", settings=settings)

    def state(self) -> dict[str, Any]:
        return {"id": self.id}

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        self.run.summary.update(metrics)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)
