"""TensorBoard: event files in RUN_DIR/tensorboard/METHOD-DECODER-sSEED, so that `tensorboard --logdir
RESULTS` lists a grid's runs as `RUN_ID/tensorboard/bn-vae-skip-s0` (filter them by method or decoder).

The config goes in as hyperparameters (the HParams tab compares runs) and as a text summary; scalars
are float32 in event files. A resumed run writes a new event file beside the old ones.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..core.metric_registry import headline_metric_names
from . import register_tracker
from .base import TrackedRun, Tracker

FOLDER = "tensorboard"
# the HParams tab's metric columns: the final evaluation's headline numbers and the validation loss
HPARAM_METRICS = tuple(f"test/{name}" for name in headline_metric_names()) + ("valid_loss",)


@register_tracker("tensorboard", package="tensorboard", extra="tensorboard")
class TensorBoardTracker(Tracker):
    def __init__(self, run: TrackedRun):
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        label = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{run.group.replace('/', '-')}-s{run.tags.get('seed', 0)}")
        self.log_dir = run.state.get("log_dir") or f"{FOLDER}/{label}"
        self.writer = SummaryWriter(log_dir=str(run.run_dir / self.log_dir), flush_secs=30)

    def state(self) -> dict[str, Any]:
        return {"log_dir": self.log_dir}   # relative to the run folder

    def log_params(self, params: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        values = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in params.items()}
        values.update({f"tag.{k}": v for k, v in self.run.tags.items()})
        for summary in hparams(values, {name: 0.0 for name in HPARAM_METRICS}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", "\n".join(f"    {k} = {v}" for k, v in sorted(params.items())))
        self.writer.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()
