"""Read a run's values back from each tracker's own store, for checking them against log.jsonl:
TensorBoard's event-file reader, MLflow's client, and the transaction log of a W&B offline run.

Each reader returns {metric: [(step, value), ...]} in the order the store holds them, so a step sent
twice shows as two points.
"""
from __future__ import annotations

import glob
import json
import struct
from pathlib import Path
from typing import Any

from ..core.io import read_jsonl
from . import scalars

Points = dict[str, list[tuple[int, float]]]


def logged_series(run_dir: Path) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} as the trackers should hold them, from log.jsonl and monitor.jsonl."""
    out: dict[str, dict[int, float]] = {}
    for name, prefix in (("log.jsonl", ""), ("monitor.jsonl", "monitor/")):
        for row in read_jsonl(Path(run_dir) / name):
            for key, value in scalars(row, prefix).items():
                out.setdefault(key, {})[row["step"]] = value
    return out


def read_tensorboard(run_dir: Path) -> tuple[Points, dict[str, Any]]:
    """The scalars (float32, as event files store them) and the hyperparameters of the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    log_dir = json.loads((Path(run_dir) / "trackers.json").read_text())["tensorboard"]["state"]["log_dir"]
    events = EventAccumulator(str(Path(run_dir) / log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    points = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    data = plugin_data_pb2.HParamsPluginData()
    data.ParseFromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = {k: v.string_value or v.number_value or v.bool_value for k, v in data.session_start_info.hparams.items()}
    return points, hparams


def read_mlflow(run_dir: Path):
    """(points, the MLflow Run, the client) of the MLflow run named in RUN_DIR/trackers.json."""
    from mlflow.tracking import MlflowClient

    state = json.loads((Path(run_dir) / "trackers.json").read_text())["mlflow"]["state"]
    client = MlflowClient(state["tracking_uri"])
    run = client.get_run(state["run_id"])
    points = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
              for key in run.data.metrics}
    return points, run, client


def wandb_records(path: Path):
    """The protobuf records of a W&B transaction log (.wandb): LevelDB's log format (32 KiB blocks,
    7-byte chunk headers: crc32, length, type) after W&B's 7-byte file header."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending = Path(path).read_bytes(), 7, b""
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:                      # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):                # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk)
            pending = b""
            yield record
        elif kind in (2, 3):              # FIRST, MIDDLE
            pending += chunk


def read_wandb(run_dir: Path):
    """(points, config, summary, run records) of every offline W&B run under RUN_DIR/wandb (a resumed
    run adds a folder with the same run id)."""
    points: Points = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    runs = []
    for path in sorted(glob.glob(str(Path(run_dir) / "wandb" / "offline-run-*" / "run-*.wandb"))):
        for record in wandb_records(Path(path)):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                step = record.history.step.num
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if not key.startswith("_"):
                        points.setdefault(key, []).append((step, json.loads(item.value_json)))
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "summary":
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
            elif kind == "run":
                runs.append(record.run)
    return points, config, summary, runs
