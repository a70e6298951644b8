"""Experiment trackers (issue 20): every tracker's values read back with the tracker's own reader equal
log.jsonl and monitor.jsonl; a resumed run continues the same tracker run with no step twice; a tracker
that fails warns once and leaves the training's numbers unchanged."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from textsvae.core.config import ConfigError, apply_overrides, preset_config
from textsvae.core.io import read_jsonl
from textsvae.methods import REGISTRY
from textsvae.trackers import TRACKERS, TrackerKind, flat_params, parse_track, readback
from textsvae.trackers.readback import logged_series
from textsvae.training.train import resume_run, train_run

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")

TIMING = {"seconds", "tokens_per_s"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def tiny(track: str = "", **overrides):
    base = {"data": "synthetic", "synthetic_train": 200, "epochs": 2, "threads": 1, "progress": False,
            "monitor_every": 5, "track": track, "track_project": "trackers-test"}
    return apply_overrides(preset_config("tiny"), {**base, **overrides})


def as_dict(points: dict[str, list[tuple[int, float]]]) -> dict[str, dict[int, float]]:
    """{metric: [(step, value), ...]} -> {metric: {step: value}}, refusing a step logged twice."""
    for key, pairs in points.items():
        steps = [s for s, _ in pairs]
        assert len(steps) == len(set(steps)), f"{key}: a step logged twice: {sorted(steps)}"
    return {key: dict(pairs) for key, pairs in points.items()}


def read_tensorboard(run_dir: Path):
    points, hparams = readback.read_tensorboard(run_dir)
    return as_dict(points), hparams


def read_mlflow(run_dir: Path):
    points, run, client = readback.read_mlflow(run_dir)
    return as_dict(points), run, client


def read_wandb(run_dir: Path):
    points, config, summary, runs = readback.read_wandb(run_dir)
    return as_dict(points), config, summary, runs


def assert_series_equal(got: dict[str, dict[int, float]], want: dict[str, dict[int, float]], float32=False):
    assert set(got) == set(want), set(got) ^ set(want)
    for key in want:
        assert set(got[key]) == set(want[key]), key
        for step, value in want[key].items():
            expected = float(np.float32(value)) if float32 else value
            assert got[key][step] == expected, (key, step, got[key][step], value)


# -- each tracker reads back what log.jsonl holds ---------------------------------------------------
def test_tensorboard_event_files_equal_the_logs(tmp_path):
    run = tmp_path / "run"
    train_run(tiny("tensorboard"), run)
    series, hparams = read_tensorboard(run)
    assert [p.name for p in (run / "tensorboard").iterdir()] == ["vae-standard-s0"]   # TensorBoard's run name
    want = logged_series(run)
    assert len(want["valid_kl"]) == 2 and len(want["monitor/valid_mi"]) == 2   # 2 epochs, steps 5 and 10
    assert_series_equal(series, want, float32=True)     # event files hold float32
    params = flat_params(tiny("tensorboard"))
    assert hparams["train.lr"] == params["train.lr"] and hparams["model.decoder"] == "standard"
    assert hparams["tag.method"] == "vae" and hparams["data.synthetic_train"] == 200


def test_mlflow_store_equals_the_logs(tmp_path):
    run = tmp_path / "run"
    config = tiny("mlflow")
    train_run(config, run)
    series, mlrun, client = read_mlflow(run)
    assert_series_equal(series, logged_series(run))   # float64: exact
    assert mlrun.data.params == {k: str(v) for k, v in flat_params(config).items()}
    assert mlrun.info.run_name == "run" and mlrun.info.status == "FINISHED"
    assert mlrun.data.tags["group"] == "vae/standard" and mlrun.data.tags["seed"] == "0"
    assert client.get_experiment(mlrun.info.experiment_id).name == "trackers-test"
    assert (tmp_path / "mlflow.db").is_file()          # the default store: beside the run folder


def test_wandb_offline_run_equals_the_logs(tmp_path):
    run = tmp_path / "run"
    config = tiny("wandb")
    train_run(config, run)
    series, wb_config, _, runs = read_wandb(run)
    assert_series_equal(series, logged_series(run))
    assert wb_config["train.lr"] == config.train.lr and wb_config["model.decoder"] == "standard"
    (record,) = runs
    assert (record.display_name, record.run_group, record.project) == ("run", "vae/standard", "trackers-test")


# -- resume: the same tracker run, no step twice --------------------------------------------------------
@contextmanager
def stopped_at(at_step: int):
    """Within: Ctrl-C (SIGINT to this process) after optimiser step `at_step`, which must stop the run."""
    vae = REGISTRY["vae"]
    original, calls = vae.train_step, {"n": 0}

    def step(self, trainer, batch, beta):
        out = original(self, trainer, batch, beta)
        calls["n"] += 1
        if calls["n"] == at_step:
            os.kill(os.getpid(), signal.SIGINT)
        return out
    vae.train_step = step
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        vae.train_step = original


def test_ctrl_c_then_resume_continues_each_tracker_run(tmp_path):
    run = tmp_path / "run"
    config = tiny("tensorboard,mlflow,wandb", epochs=3)
    with stopped_at(11):                           # mid-epoch 2, after the monitor row of step 10
        train_run(config, run)
    first = json.loads((run / "trackers.json").read_text())
    assert first["mlflow"]["sent"] == {"epoch": 7, "monitor": 10}
    resume_run(run)
    again = json.loads((run / "trackers.json").read_text())
    assert again["mlflow"]["state"] == first["mlflow"]["state"] and again["wandb"]["state"] == first["wandb"]["state"]
    want = logged_series(run)
    assert len(want["valid_loss"]) == 3
    assert_series_equal(read_tensorboard(run)[0], want, float32=True)
    series, mlrun, client = read_mlflow(run)
    assert_series_equal(series, want)
    assert len(client.search_runs([mlrun.info.experiment_id])) == 1 and mlrun.info.status == "FINISHED"
    series, _, _, runs = read_wandb(run)
    assert_series_equal(series, want)
    assert len(runs) == 2 and len({r.run_id for r in runs}) == 1   # two processes, one W&B run


KILL_AT_STEP_12 = """
import os, sys
from textsvae.core.config import ConfigError, apply_overrides, preset_config
from textsvae.methods import REGISTRY
from textsvae.training.train import train_run
vae, calls = REGISTRY["vae"], {"n": 0}
original = vae.train_step
def step(self, trainer, batch, beta):
    out = original(self, trainer, batch, beta)
    calls["n"] += 1
    if calls["n"] == 12:
        os._exit(137)          # a hard kill: after monitor step 10 was sent, before epoch 2's last.pt
    return out
vae.train_step = step
config = apply_overrides(preset_config("tiny"), {"data": "synthetic", "synthetic_train": 200, "epochs": 2,
    "threads": 1, "progress": False, "monitor_every": 5, "track": "tensorboard,mlflow", "track_project": "t"})
train_run(config, sys.argv[1])
"""


def test_a_kill_after_a_step_was_sent_does_not_send_it_twice(tmp_path):
    """Killed after monitor step 10 reached the trackers but before the checkpoint of step 14: the resume
    redoes steps 8-14 from epoch 1's last.pt with the same numbers, and the trackers get step 10 once."""
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", KILL_AT_STEP_12, str(run)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 137, done.stderr[-2000:]
    assert [r["step"] for r in read_jsonl(run / "monitor.jsonl")] == [5, 10]
    resume_run(run)
    assert [r["step"] for r in read_jsonl(run / "monitor.jsonl")] == [5, 10]   # redone, truncated, rewritten
    want = logged_series(run)
    assert_series_equal(read_tensorboard(run)[0], want, float32=True)
    assert_series_equal(read_mlflow(run)[0], want)


def test_tracking_can_be_added_when_resuming(tmp_path):
    """`track` is an execution field: a resume may switch a tracker on; the run id and checkpoints still fit."""
    run = tmp_path / "run"
    with stopped_at(9):
        train_run(tiny(""), run)
    resume_run(run, {"track": "tensorboard"})
    assert json.loads((run / "config.json").read_text())["train"]["track"] == "tensorboard"
    series = read_tensorboard(run)[0]
    assert sorted(series["valid_loss"]) == [14] and sorted(series["monitor/valid_kl"]) == [10]  # after step 9 only


# -- a failing tracker ----------------------------------------------------------------------------------
def rows_without_timing(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run_dir / "log.jsonl")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_trackers_that_cannot_start_warn_once_and_change_nothing(tmp_path, monkeypatch, caplog):
    """MLflow with its server down and W&B online without a login: one warning each; the numbers of a
    run without trackers."""
    reference = tmp_path / "reference"
    train_run(tiny(""), reference)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))       # no ~/.netrc: not logged in
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="textsvae.trackers"):
        train_run(tiny("mlflow,wandb,tensorboard"), run)
    warnings = [r.getMessage() for r in caplog.records if r.name == "textsvae.trackers"]
    assert len(warnings) == 2, warnings
    assert any("tracker mlflow failed" in w and "not reachable" in w for w in warnings)
    assert any("tracker wandb failed" in w and "WANDB_MODE=offline" in w for w in warnings)
    assert rows_without_timing(run) == rows_without_timing(reference)
    assert_series_equal(read_tensorboard(run)[0], logged_series(run), float32=True)   # the others go on


def test_an_mlflow_server_that_dies_mid_run_warns_once_and_changes_nothing(tmp_path, monkeypatch, caplog):
    """A real `mlflow server`, stopped after the first epoch: one warning, the training's numbers equal a
    run without trackers, and the server's store kept what it received before it died."""
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_for(uri + "/health", server)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        vae = REGISTRY["vae"]
        original, calls = vae.train_step, {"n": 0}

        def step(self, trainer, batch, beta):
            calls["n"] += 1
            if calls["n"] == 8:          # epoch 1 was logged: stop the server
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            return original(self, trainer, batch, beta)
        monkeypatch.setattr(vae, "train_step", step)
        run = tmp_path / "run"
        with caplog.at_level(logging.WARNING, logger="textsvae.trackers"):
            train_run(tiny("mlflow", monitor_every=0), run)
        monkeypatch.setattr(vae, "train_step", original)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    warnings = [r.getMessage() for r in caplog.records if r.name == "textsvae.trackers"]
    assert len(warnings) == 1 and "tracker mlflow failed" in warnings[0], warnings
    reference = tmp_path / "reference"
    train_run(tiny("", monitor_every=0), reference)
    assert rows_without_timing(run) == rows_without_timing(reference)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'server.db'}")
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]["state"]["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "valid_loss")] == [7]   # epoch 1, then the server died


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow server exited"
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer {url}")


# -- choosing trackers ------------------------------------------------------------------------------------
def test_parse_track_names_the_unknown_tracker_and_the_missing_extra(monkeypatch):
    assert parse_track(" TensorBoard, mlflow,tensorboard ") == ("tensorboard", "mlflow")
    assert parse_track("") == ()
    with pytest.raises(ConfigError, match="unknown tracker 'comet'; valid trackers: mlflow, tensorboard, wandb"):
        parse_track("comet")
    monkeypatch.setitem(TRACKERS, "neptune", TrackerKind(TRACKERS["mlflow"].cls, "no_such_package_xyz", "neptune"))
    with pytest.raises(ConfigError, match=r"needs the no_such_package_xyz package: pip install 'textsvae\[neptune\]'"):
        parse_track("neptune")


def test_cli_rejects_an_unknown_tracker_in_one_line(tmp_path):
    for args in (["train", "--track", "comet", "-o", str(tmp_path / "r")], ["bench", "quick", "--track", "comet",
                                                                            "--results", str(tmp_path / "b")]):
        done = subprocess.run([sys.executable, "-m", "textsvae.cli", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == ["Error: unknown tracker 'comet'; valid trackers: mlflow, "
                                                    "tensorboard, wandb"]
    assert not (tmp_path / "r").exists() and not list((tmp_path / "b").glob("*/config.json"))


def test_force_overwrite_removes_the_old_event_files(tmp_path):
    run = tmp_path / "run"
    train_run(tiny("tensorboard"), run)
    train_run(tiny("tensorboard", lr=0.002), run, force=True)    # the same event folder name
    assert_series_equal(read_tensorboard(run)[0], logged_series(run), float32=True)


# -- bench: grid runs named by run id, grouped, with the final evaluation ---------------------------------
GRID = """
description = "trackers test grid"
preset = "tiny"
decoders = ["standard", "skip"]
[settings]
synthetic_train = 200
epochs = 2
iw_samples = 5
mi_samples = 4
[[datasets]]
name = "synthetic"
data = "synthetic"
[[methods]]
method = "vae"
"""

def test_bench_sends_each_run_and_its_final_evaluation(tmp_path, write_bench):
    from textsvae.bench.grid import load_benchmark
    from textsvae.bench.results import load_results
    from textsvae.bench.runner import run_benchmark

    spec = load_benchmark("trk", write_bench(tmp_path / "benchmarks", "trk", GRID))
    results = tmp_path / "results"
    report = run_benchmark(spec, results, jobs=1, threads=1, track="mlflow,wandb")
    assert len(report.finished) == 2
    rows = load_results(results)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trk")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {s.run_id for s in spec.runs}
    for run_spec in spec.runs:
        mlrun = runs[run_spec.run_id]
        assert mlrun.data.tags["group"] == f"vae/{run_spec.decoder}" and mlrun.data.tags["benchmark"] == "trk"
        mine = rows[(rows.run_id == run_spec.run_id) & (rows.split == "test")]
        for metric in ("iw_nll", "kl", "mi", "au"):
            value = mine[mine.metric == metric].value.item()
            assert mlrun.data.metrics[f"test/{metric}"] == pytest.approx(value, rel=1e-12, abs=1e-12), metric
        _, _, summary, wb_runs = read_wandb(results / run_spec.run_id)
        assert {r.project for r in wb_runs} == {"trk"} and {r.run_group for r in wb_runs} == {f"vae/{run_spec.decoder}"}
        assert summary["test/iw_nll"] == pytest.approx(mine[mine.metric == "iw_nll"].value.item(), rel=1e-12)


def test_eval_of_a_tracked_run_sends_its_metrics_to_the_same_tracker_run(tmp_path):
    from click.testing import CliRunner

    from textsvae.cli import cli

    run = tmp_path / "run"
    train_run(tiny("mlflow"), run)
    done = CliRunner().invoke(cli, ["eval", str(run), "-k", "5", "--json"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    metrics = json.loads(done.output)
    _, mlrun, client = read_mlflow(run)
    assert mlrun.data.metrics["test/iw_nll"] == metrics["iw_nll"] and mlrun.data.metrics["test/mi"] == metrics["mi"]
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "test/iw_nll")] == [14]   # the last step
    assert len(client.search_runs([mlrun.info.experiment_id])) == 1
