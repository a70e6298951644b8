"""TensorBoard: event files in RUN_DIR/tensorboard (`tensorboard --logdir RESULTS` shows a grid's runs).

The config goes in as hyperparameters (the HParams tab compares runs) and as a text summary; scalars
are float32 in event files. A resumed run writes a new event file beside the old ones.
"""
from __future__ import annotations

import json
from typing import Any

from . import register_tracker
from .base import TrackedRun, Tracker

FOLDER = "tensorboard"
# the HParams tab's metric columns: the final evaluation's headline numbers and the validation loss
HPARAM_METRICS = ("test/iw_nll", "test/ppl", "test/kl", "test/mi", "test/au", "valid_loss")


@register_tracker("tensorboard", package="tensorboard", extra="tensorboard")
class TensorBoardTracker(Tracker):
    def __init__(self, run: TrackedRun):
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.writer = SummaryWriter(log_dir=str(run.run_dir / FOLDER), flush_secs=30)

    def state(self) -> dict[str, Any]:
        return {"log_dir": FOLDER}

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
