"""The training loop's reliability: determinism, exact resume after SIGKILL and Ctrl-C, NaN stops,
atomic writes (issue 2 item 7, issue 7)."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from click.testing import CliRunner

from textsvae.cli import cli
from textsvae.core import io as tio
from textsvae.core.config import RunConfig, apply_overrides, preset_config
from textsvae.core.io import append_jsonl, atomic_write_text, read_jsonl
from textsvae.kernels import device as D
from textsvae.methods import REGISTRY
from textsvae.training import train as T
from textsvae.training.lr_rules import end_of_epoch
from textsvae.training.train import read_run_config, resume_run, train_run

TIMING = {"seconds", "tokens_per_s"}
FLAGS = ["--set", "threads=1", "--set", "progress=false"]
REPO = Path(__file__).resolve().parents[1]


def tiny(**overrides) -> RunConfig:
    base = {"data": "synthetic", "synthetic_train": 200, "epochs": 2, "threads": 1, "progress": False}
    return apply_overrides(preset_config("tiny"), {**base, **overrides})


def rows_without_timing(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run_dir / "log.jsonl")]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def assert_same_run(a: Path, b: Path) -> None:
    """Identical log rows except timing, identical final weights and best-epoch validation numbers."""
    assert rows_without_timing(a) == rows_without_timing(b)
    wa, wb = weights(a / "last.pt"), weights(b / "last.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["best_valid"] == sb["best_valid"] and sa["steps"] == sb["steps"] and sa["epochs"] == sb["epochs"]


def run_cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textsvae.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=120, **kw)


# -- determinism ----------------------------------------------------------------------------

def test_two_identical_runs_give_identical_logs(tmp_path):
    config = tiny()
    train_run(config, tmp_path / "a")
    train_run(config, tmp_path / "b")
    assert len(read_jsonl(tmp_path / "a" / "log.jsonl")) == 2
    assert_same_run(tmp_path / "a", tmp_path / "b")
    # and another seed gives another run
    train_run(replace(config, train=replace(config.train, seed=1)), tmp_path / "c")
    assert rows_without_timing(tmp_path / "a") != rows_without_timing(tmp_path / "c")


# -- SIGKILL and resume (subprocesses on a cut of real PTB) -----------------------------------

def _start(run_dir: Path, data: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "textsvae.cli", "train", "--data", str(data), "--epochs", "3",
                             "--set", "max_lines=160", *FLAGS, *extra, "-o", str(run_dir)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def test_sigkill_after_first_checkpoint_then_resume_matches(tmp_path, ptb_cut):
    """Kill -9 as soon as the first checkpoint exists; `train --resume` must end with exactly the
    numbers of the uninterrupted run. (A kill between the log row and last.pt: the test below.)"""
    run = tmp_path / "killed"
    proc = _start(run, ptb_cut)
    deadline = time.monotonic() + 90
    target = run / "last.pt"
    while not (target.exists() and target.stat().st_size > 0):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()                       # killed before the end
    assert json.loads((run / "state.json").read_text())["status"] == "running"

    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "state.json").read_text())["status"] == "finished"

    reference = tmp_path / "uninterrupted"
    train_run(read_run_config(run), reference)
    assert_same_run(run, reference)
    assert len(read_jsonl(run / "log.jsonl")) == 3


SIGINT_PLUGIN = '''
import os, signal
from textsvae.methods import register
from textsvae.methods.vae import VAE


@register("vae-ctrl-c")
class VAECtrlC(VAE):
    """The plain VAE, pressing Ctrl-C on itself after optimiser step $CTRL_C_AT_STEP (tests)."""

    def train_step(self, trainer, batch, beta):
        out = super().train_step(trainer, batch, beta)
        if trainer.state.step + 1 == int(os.environ.get("CTRL_C_AT_STEP", "0")):
            os.kill(os.getpid(), signal.SIGINT)
        return out
'''


def test_ctrl_c_mid_epoch_saves_exits_130_and_resumes_exactly(tmp_path, ptb_cut):
    """SIGINT to the CLI process after step 7 (of 5-step epochs): last.pt, state 'interrupted', exit 130;
    `train --resume` then ends with exactly the numbers of the uninterrupted run."""
    at_step = 7
    plugin = tmp_path / "ctrl_c_plugin.py"
    plugin.write_text(SIGINT_PLUGIN)
    run = tmp_path / "interrupted"
    proc = _start(run, ptb_cut, "--plugin", str(plugin), "--method", "vae-ctrl-c",
                  env={"CTRL_C_AT_STEP": str(at_step)})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err.splitlines()[-1]
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert (ckpt["state"]["step"], ckpt["state"]["epoch"], ckpt["state"]["batch_in_epoch"]) == \
        (at_step, (at_step - 1) // 5, (at_step - 1) % 5 + 1)
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "interrupted" and f"step {at_step}" in state["message"]
    assert len(read_jsonl(run / "log.jsonl")) == (at_step - 1) // 5

    resumed = run_cli("train", "--resume", str(run), "--plugin", str(plugin))
    assert resumed.returncode == 0, resumed.stderr

    config = read_run_config(run)
    reference = tmp_path / "uninterrupted"
    train_run(replace(config, train=replace(config.train, method="vae")), reference)
    assert_same_run(run, reference)


def _interrupt_at(monkeypatch, at_step: int, presses: int = 1, signum: int = signal.SIGINT) -> None:
    vae = REGISTRY["vae"]
    original = vae.train_step
    calls = {"n": 0}

    def ctrl_c(self, trainer, batch, beta):
        out = original(self, trainer, batch, beta)
        calls["n"] += 1
        if calls["n"] == at_step:
            for _ in range(presses):
                os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(vae, "train_step", ctrl_c)


@pytest.mark.parametrize("at_step", [3, 10])     # 7 steps per epoch: before any checkpoint, mid-epoch 2
def test_ctrl_c_in_process_then_resume_matches(tmp_path, monkeypatch, at_step):
    """SIGINT is caught by fit's handler: the step finishes, last.pt is saved, KeyboardInterrupt follows."""
    run, reference = tmp_path / "run", tmp_path / "reference"
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup / in the background
    _interrupt_at(monkeypatch, at_step)
    with pytest.raises(KeyboardInterrupt):
        train_run(tiny(), run)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is before   # the handler is restored
    state = torch.load(run / "last.pt", weights_only=False)["state"]
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (at_step, at_step // 7, at_step % 7)
    assert 0 < state["partial"]["sentences"] <= 32 * (at_step % 7)   # sums of the done part of the epoch
    resume_run(run)
    train_run(tiny(), reference)
    assert_same_run(run, reference)
    # each epoch's row times the whole epoch, the part before a stop included: the rows add up to the training time
    summary = json.loads((run / "summary.json").read_text())
    assert sum(row["seconds"] for row in read_jsonl(run / "log.jsonl")) == pytest.approx(summary["train_seconds"])


def test_a_second_ctrl_c_stops_at_once_and_resume_still_matches(tmp_path, monkeypatch):
    run, reference = tmp_path / "run", tmp_path / "reference"
    _interrupt_at(monkeypatch, 10, presses=2)
    with pytest.raises(KeyboardInterrupt):
        train_run(tiny(), run)
    monkeypatch.undo()
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "interrupted" and "stopped at once" in state["message"]
    assert torch.load(run / "last.pt", weights_only=False)["state"]["step"] == 7   # the end of epoch 1
    resume_run(run)
    train_run(tiny(), reference)
    assert_same_run(run, reference)


# -- pre-emption: SIGTERM, SIGUSR1, SIGUSR2 (Slurm's pre-emption and time-limit signals) -------------

def test_sigterm_saves_exits_with_the_resume_hint_and_resumes_exactly(tmp_path, ptb_cut):
    """SIGTERM to a `textsvae train` process once its first checkpoint exists: it stops after the
    current step, saves last.pt, marks state.json 'interrupted' naming the signal and exits 130 with the
    resume hint; `train --resume` then ends with exactly the numbers of the uninterrupted run."""
    run = tmp_path / "preempted"
    proc = _start(run, ptb_cut)
    deadline = time.monotonic() + 90
    while not ((run / "last.pt").exists() and (run / "last.pt").stat().st_size > 0):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "SIGTERM: stopping after this step" in err
    assert "--resume" in err.splitlines()[-1]
    state = json.loads((run / "state.json").read_text())
    step = torch.load(run / "last.pt", map_location="cpu", weights_only=False)["state"]["step"]
    assert state["status"] == "interrupted" and state["message"] == f"stopped by SIGTERM at step {step}"
    assert 5 <= step < 15 and not (run / "summary.json").exists()     # 5 steps per epoch, 3 epochs

    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "uninterrupted"
    train_run(read_run_config(run), reference)
    assert_same_run(run, reference)


@pytest.mark.parametrize("name, times", [("SIGUSR2", 1), ("SIGUSR1", 1), ("SIGTERM", 2)])
def test_preemption_signals_stop_after_the_step_and_resume_matches(tmp_path, monkeypatch, name, times):
    """SIGUSR1/SIGUSR2/SIGTERM in process: Preempted (not KeyboardInterrupt itself) after the step, with
    last.pt at that step; a repeated SIGTERM does not abort the save; every handler is restored."""
    run, reference = tmp_path / "run", tmp_path / "reference"
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2]
    before = [signal.getsignal(s) for s in signals]
    _interrupt_at(monkeypatch, 10, presses=times, signum=getattr(signal, name))
    with pytest.raises(T.Preempted, match=f"stopped by {name} at step 10"):
        train_run(tiny(), run)
    monkeypatch.undo()
    assert [signal.getsignal(s) for s in signals] == before
    state = json.loads((run / "state.json").read_text())
    assert state == {**state, "status": "interrupted", "message": f"stopped by {name} at step 10"}
    assert torch.load(run / "last.pt", weights_only=False)["state"]["step"] == 10
    resume_run(run)
    train_run(tiny(), reference)
    assert_same_run(run, reference)


def test_sentencepiece_is_saved_with_the_run_and_reloaded_on_resume(tmp_path, monkeypatch):
    from textsvae.data.vocab import SentencePieceVocab

    config = tiny(tokenizer="sentencepiece", sp_vocab_size=60)
    run, reference = tmp_path / "run", tmp_path / "reference"
    _interrupt_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, run)
    monkeypatch.undo()
    model_bytes = (run / "spm.model").read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("resume must load spm.model, not train a new one")

    monkeypatch.setattr(SentencePieceVocab, "build", no_training)
    resume_run(run)
    monkeypatch.undo()
    assert (run / "spm.model").read_bytes() == model_bytes
    train_run(config, reference)
    assert (reference / "spm.model").read_bytes() == model_bytes
    assert_same_run(run, reference)


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    run = tmp_path / "run"
    train_run(tiny(epochs=1), run)
    before = rows_without_timing(run), (run / "last.pt").read_bytes()
    summary = resume_run(run)
    assert (rows_without_timing(run), (run / "last.pt").read_bytes()) == before
    assert summary["epochs"] == 1 and json.loads((run / "state.json").read_text())["status"] == "finished"


def test_resume_drops_log_rows_after_the_checkpoint_and_a_torn_line(tmp_path):
    """A kill between the log row and last.pt, or mid-write, leaves rows the checkpoint does not know."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    train_run(tiny(epochs=2), full)
    config = tiny(epochs=2, max_steps=7)        # 7 steps = 1 epoch of 200 sentences: stops after epoch 1
    train_run(config, cut)
    # continue the cut run as if it had been killed after epoch 1: same config as the full run
    atomic_write_text(cut / "config.json", json.dumps(tiny(epochs=2).to_dict()))
    ckpt = torch.load(cut / "last.pt", weights_only=False)
    ckpt["state"].update(done=False, stop_reason="")
    ckpt["config"] = tiny(epochs=2).to_dict()
    torch.save(ckpt, cut / "last.pt")
    with open(cut / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "stale": True}) + "\n" + "[1]\n" + '{"epoch": 3, "torn')
    resume_run(cut)
    assert_same_run(cut, full)


# -- NaN stops the run ---------------------------------------------------------------------------

def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """The loss is NaN from step 10 (epoch 2 of 7-step epochs); exit code 3, state.json 'failed',
    last.pt still the end of epoch 1, byte for byte."""
    vae = REGISTRY["vae"]
    original = vae.loss
    calls = {"n": 0, "last_pt": None}
    run = tmp_path / "run"

    def nan_at_step_10(self, model, batch, beta):
        out = original(self, model, batch, beta)
        calls["n"] += 1
        if calls["n"] == 10:
            calls["last_pt"] = (run / "last.pt").read_bytes()
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(vae, "loss", nan_at_step_10)
    result = CliRunner().invoke(cli, ["train", "--data", "synthetic", "--set", "synthetic_train=200",
                                      "--epochs", "3", *FLAGS, "-o", str(run)])
    assert result.exit_code == 3
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        "Error: loss became NaN or infinite at step 10 (epoch 2); the last good checkpoint is kept"]
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "failed" and "at step 10" in state["message"]
    assert (run / "last.pt").read_bytes() == calls["last_pt"]
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["state"]["step"] == 7 and ckpt["state"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert len(read_jsonl(run / "log.jsonl")) == 1 and not (run / "summary.json").exists()


def test_nan_in_the_first_step_of_a_long_epoch_is_reported_at_that_step(tmp_path, monkeypatch):
    vae = REGISTRY["vae"]
    original = vae.loss
    calls = {"n": 0}

    def nan_at_step_3(self, model, batch, beta):
        out = original(self, model, batch, beta)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = out.loss + float("inf")
        return out

    monkeypatch.setattr(vae, "loss", nan_at_step_3)
    from textsvae.training.train import TrainingDiverged
    with pytest.raises(TrainingDiverged, match=r"at step 3 \(epoch 1\)"):
        train_run(tiny(synthetic_train=2000, batch_size=16), tmp_path / "run")   # 125 steps per epoch
    assert not (tmp_path / "run" / "last.pt").exists()
    assert json.loads((tmp_path / "run" / "state.json").read_text())["status"] == "failed"


# -- atomic writes --------------------------------------------------------------------------------

def test_run_files_are_complete_readable_and_leave_no_temporaries(tmp_path):
    run = tmp_path / "run"
    train_run(tiny(epochs=1), run)
    names = sorted(p.name for p in run.iterdir())
    assert names == ["best.pt", "config.json", "last.pt", "log.jsonl", "state.json", "summary.json", "vocab.json"]
    umask = os.umask(0)
    os.umask(umask)
    for p in run.iterdir():  # mkstemp makes 0600 files; the suite's files get a normal open()'s mode
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tio.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_resume_removes_the_half_written_files_of_a_killed_process(tmp_path):
    run = tmp_path / "run"
    train_run(tiny(epochs=1), run)
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")   # SIGKILL inside atomic_torch_save
    resume_run(run)
    assert not list(run.glob(".*.tmp")) and (run / "last.pt").exists() and (run / "log.jsonl").exists()


def test_appending_after_a_torn_line_keeps_the_new_row(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"epoch": 1})
    with open(path, "a") as f:
        f.write('{"epoch": 2, "tor')           # a kill mid-write
    append_jsonl(path, {"epoch": 2})
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]


CORE_MODULES = ["core/config.py", "core/rundir.py", "model/models.py", "training/train.py", "training/checkpoint.py",
                "training/run_state.py", "training/validation.py", "data/vocab.py", "data/corpus.py",
                "data/batching.py", "data/synthetic.py", "data/fetch.py"]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_modules_write_files_only_through_textsvae_io(module):
    """Every file the core writes goes through io.atomic_* (temp file, fsync, rename) or append_jsonl."""
    import re

    source = (REPO / "textsvae" / module).read_text()
    pattern = r"\.write_text\(|\.write_bytes\(|torch\.save\(|\bopen\([^)]*['\"][wax]b?\+?['\"]|\.to_csv\(\s*[^)\s]|savefig\("
    assert not re.findall(pattern, source)


# -- the step monitor --------------------------------------------------------------------------

def test_step_monitor_logs_rows_and_leaves_training_unchanged(tmp_path):
    """monitor_every=N writes one monitor.jsonl row every N steps (Rec, KL, MI <= log(subset), AU) and, drawing
    from its own RNG, leaves the training trajectory bit-identical to a run without it."""
    import math

    train_run(tiny(), tmp_path / "plain")
    train_run(tiny(monitor_every=3, monitor_size=10), tmp_path / "watched")
    plain, watched = rows_without_timing(tmp_path / "plain"), rows_without_timing(tmp_path / "watched")
    assert [{k: v for k, v in r.items() if not k.startswith("valid_")} for r in plain] == \
           [{k: v for k, v in r.items() if not k.startswith("valid_")} for r in watched]
    wa, wb = weights(tmp_path / "plain" / "last.pt"), weights(tmp_path / "watched" / "last.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = read_jsonl(tmp_path / "watched" / "monitor.jsonl")
    steps = watched[-1]["step"]
    assert [r["step"] for r in rows] == list(range(3, steps + 1, 3))
    for r in rows:
        assert r["valid_kl"] >= 0 and r["valid_mi"] <= math.log(10) + 1e-9 and 0 <= r["valid_au"] <= 8
        assert r["valid_monitor_size"] == 10 and r["valid_rec"] > 0


@pytest.mark.parametrize("capability, precision, warned", [("AVX2", "bf16", True), ("AVX512", "bf16", False),
                                                            ("AVX2", "fp32", False)])
def test_bf16_on_a_cpu_without_avx512_is_warned_about(capability, precision, warned, monkeypatch, caplog):
    """Without AVX-512 a bf16 matmul took ~40x as long as fp32 here: a user asking for bf16 is told."""
    from textsvae.training.train import Trainer

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(D, "cpu_lstm_runs_in", lambda precision: True)  # whatever this machine's LSTM runs
    with caplog.at_level("WARNING", logger="textsvae.kernels.device"):
        Trainer(tiny(precision=precision), "/nonexistent-run")
    assert ("bf16 matmuls are emulated" in caplog.text) == warned


def test_the_lstm_probe_says_what_a_model_does_in_bf16_on_this_cpu():
    """Either way round: where the probe says no, the model's bf16 forward pass fails as it does."""
    from textsvae.core.config import ModelConfig
    from textsvae.data.batching import make_batch
    from textsvae.model.models import TextVAE

    model = TextVAE(30, ModelConfig(emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=4))
    model.set_precision("bf16")
    batch = make_batch([[5, 6, 7], [8, 9]], [0, 1])
    D.cpu_lstm_runs_in.cache_clear()
    if D.cpu_lstm_runs_in("bf16"):
        assert model.log_px_given_z(batch, torch.zeros(2, 4)).dtype == torch.float32
    else:
        with pytest.raises(RuntimeError):
            model.log_px_given_z(batch, torch.zeros(2, 4))
    assert D.cpu_lstm_runs_in("fp32")


def test_the_lstm_probe_draws_nothing_from_the_global_generator():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    D.cpu_lstm_runs_in.cache_clear()
    D.cpu_lstm_runs_in("bf16")
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("field", ["precision", "eval_precision"])
def test_a_precision_this_cpus_lstm_cannot_run_is_one_line_before_any_work(field, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "cpu_lstm_runs_in", lambda precision: precision == "fp32")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    out = CliRunner().invoke(cli, ["train", "--set", f"{field}=bf16", "--set", "synthetic_train=200", "--epochs", "1",
                                   "--set", "threads=1", "-o", str(tmp_path / "run")])
    assert out.exit_code == 2 and out.output.strip().splitlines() == [
        f"Error: {field}=bf16 cannot run on this CPU: its LSTM kernels have no bf16 version "
        f"(ATen CPU capability AVX2); use {field}=fp32"]
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_a_run_whose_eval_precision_this_cpu_cannot_run_is_evaluated_in_fp32(tmp_path, monkeypatch, caplog):
    """A run trained where bf16 runs (a GPU, say) is still evaluated here, in fp32, and says so."""
    from textsvae.evaluation.run_eval import load_model

    run = tmp_path / "run"
    train_run(tiny(epochs=1), run)
    config = json.loads((run / "config.json").read_text())
    config["eval"]["eval_precision"] = "bf16"
    (run / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(D, "cpu_lstm_runs_in", lambda precision: precision == "fp32")
    with caplog.at_level("WARNING", logger="textsvae.evaluation.run_eval"):
        _, _, loaded, _, _ = load_model(run, "cpu")
    assert loaded.eval.eval_precision == "fp32"
    assert "eval_precision=bf16 cannot run on this CPU's LSTM kernels: evaluating in fp32" in caplog.text


# -- the LR rules against transcriptions of the peers' loops (docs/protocol.md section 6) -------------------
# Each reference returns (LR of each epoch trained, the epoch whose weights each following epoch starts
# from, the epoch of the model that is evaluated); the trainer is driven through the same losses by drive_rule.

class Driven(NamedTuple):
    lrs: list[float]       # the LR of each epoch trained
    held: list[int]        # the epoch whose weights each following epoch starts from
    best: int              # the epoch of the model that is evaluated (best.pt)
    renewed: list[bool]    # whether each following epoch trains with a new optimiser object
    trainer: T.Trainer


def drive_rule(tmp_path: Path, losses: list[float], **settings) -> Driven:
    """Feed `losses` to lr_rules.end_of_epoch as successive epochs' validation losses, the model's weights
    set to the epoch's number first (so a reload shows as an older number). Initial LR 1.0, as in the peers'
    code."""
    config = apply_overrides(tiny(), {"epochs": len(losses), "lr": 1.0, **settings})
    trainer = T.Trainer(config, tmp_path / "run")
    trainer.run_dir.mkdir()
    lrs, held, renewed = [], [], []
    for loss in losses:
        trainer.state.epoch += 1
        lrs.append(trainer.state.lr)
        optimizer = trainer.optimizer
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.fill_(trainer.state.epoch)
        end_of_epoch(trainer, loss)
        if trainer.state.done:
            break
        held.append(int(next(trainer.model.parameters()).flatten()[0]))
        renewed.append(trainer.optimizer is not optimizer)
        assert [g["lr"] for g in trainer.optimizer.param_groups] == [trainer.state.lr]   # it trains at the rule's LR
    return Driven(lrs, held, trainer.state.best_epoch, renewed, trainer)


def losses_that_fall_stall_and_rise(seed: int, n: int = 60, slope: float = 0.3) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return (100 - torch.arange(n) * slope + torch.rand(n, generator=g) * 6).tolist()


def reference_lr_rule(losses: list[float], start: int, patience: int, max_decays: int
                      ) -> tuple[list[float], list[int], int]:
    """He et al.'s and Li et al.'s VAE loop (jxhe/vae-lagging-encoder text.py, bohanli/vae-pretraining-encoder
    text_anneal_fb.py), transcribed: 0-based epochs, `not_improved` against the last non-worse loss, at a
    halving the best model reloaded and the reference set to that epoch's loss, `break` right after the
    max_decays-th halving, the best model evaluated at the end."""
    ref, not_improved, lr, decays, lrs = 1e4, 0, 1.0, 0, []
    best_loss, best_epoch, model, held = 1e4, 0, 0, []
    for epoch, loss in enumerate(losses):
        lrs.append(lr)
        model = epoch + 1
        if loss < best_loss:
            best_loss, best_epoch = loss, epoch + 1
        if loss > ref:
            not_improved += 1
            if not_improved >= patience and epoch >= start:
                ref, not_improved, lr, decays, model = loss, 0, lr * 0.5, decays + 1, best_epoch
        else:
            not_improved, ref = 0, loss
        held.append(model)
        if decays == max_decays:
            break
    return lrs, held[:len(lrs) - 1], best_epoch


@pytest.mark.parametrize("seed", range(6))
def test_lr_rule_follows_he_and_li_code(tmp_path, seed):
    """Validation losses that fall, stall and rise; the trainer's LRs, reloads and stopping epoch equal the
    reference's."""
    losses = losses_that_fall_stall_and_rise(seed)
    run = drive_rule(tmp_path, losses, decay_start_epoch=15, decay_patience=3, max_decays=5)
    expected_lrs, expected_held, expected_best = reference_lr_rule(losses, 15, 3, 5)
    assert run.lrs == expected_lrs
    assert run.held == expected_held
    assert run.best == expected_best
    assert run.renewed == [h != e for e, h in enumerate(run.held, 1)]   # a fresh optimiser at each reload
    if len(run.lrs) < 60:
        assert run.trainer.state.decays == 5 and "plateau 5" in run.trainer.state.stop_reason
    assert run.trainer.state.best_loss == min(losses[:len(run.lrs)])


def reference_lm_rule(losses: list[float], decay_epoch: int = 2, max_decay: int = 5
                      ) -> tuple[list[float], list[int], int]:
    """Li et al.'s LSTM-LM loop (bohanli/vae-pretraining-encoder, lm.py, main()), transcribed: 0-based
    epochs and no start epoch; `opt_dict["best_loss"]` is the last non-worse validation NLL; after
    `decay_epoch` worse epochs in a row the LR is halved, the best model (saved on a strictly lower NLL)
    reloaded into a new optimiser and `decay_cnt` counted; `break` once it reaches `max_decay`; the best
    model is evaluated. One line differs on purpose: after a halving lm.py sets the reference to `loss`, the
    last training minibatch's loss, and this (like textsvae) to that epoch's validation NLL."""
    opt_best, not_improved, lr, decay_cnt, best_loss = 1e4, 0, 1.0, 0, 1e4
    lrs, held, best_epoch = [], [], 0
    for epoch, nll in enumerate(losses):
        lrs.append(lr)
        model = epoch + 1
        if nll < best_loss:
            best_loss, best_epoch = nll, epoch + 1
        if nll > opt_best:
            not_improved += 1
            if not_improved >= decay_epoch:
                opt_best = nll                       # lm.py: `= loss` (a bug, not followed)
                not_improved, lr, model = 0, lr * 0.5, best_epoch
                decay_cnt += 1
        else:
            not_improved, opt_best = 0, nll
        held.append(model)
        if decay_cnt == max_decay:
            break
    return lrs, held[:len(lrs) - 1], best_epoch


@pytest.mark.parametrize("seed", range(6))
def test_li_lm_rule_is_the_plateau_rule_from_epoch_0_with_patience_2(tmp_path, seed):
    """lm.py's rule is the plateau rule with decay_start_epoch = 0 (open from epoch 1 on, like lm.py's missing
    gate), decay_patience = 2, max_decays = 5 (the new ptb-repro LM row's settings)."""
    losses = losses_that_fall_stall_and_rise(seed, slope=0.3 + 0.2 * seed)
    run = drive_rule(tmp_path, losses, lr_rule="plateau", decay_start_epoch=0, decay_patience=2, max_decays=5)
    expected_lrs, expected_held, expected_best = reference_lm_rule(losses)
    assert run.lrs == expected_lrs
    assert run.held == expected_held
    assert run.best == expected_best
    assert run.renewed == [h != e for e, h in enumerate(run.held, 1)]
    assert len(run.lrs) < 60 and "plateau 5" in run.trainer.state.stop_reason   # each sequence ends on a plateau
    assert any(lr < 1.0 for lr in run.lrs[:15])                                # halvings before epoch 15 happen


def reference_skip_vae_rule(losses: list[float], min_epochs: int = 15, lr: float = 1.0, threshold: float = 0.03
                            ) -> tuple[list[float], list[int], int]:
    """Skip-VAE's loop (yoonkim/skip-vae, train_text_skip.py, main()), transcribed: 1-based epochs, at most
    `num_epochs`; a checkpoint on a strictly lower validation number than the best so far, else, from epoch
    `min_epochs` on, the sticky `args.decay` flag set; with the flag the LR is halved in place in the same
    optimiser after every epoch and the loop breaks once it is below 0.03; nothing is reloaded; the
    checkpoint (the best model) is what `--test 1` evaluates."""
    best_val_nll, best_epoch, decay, epoch = 1e5, 0, 0, 0
    lrs, held = [], []
    while epoch < len(losses):
        epoch += 1
        lrs.append(lr)
        val_nll = losses[epoch - 1]
        if val_nll < best_val_nll:
            best_val_nll, best_epoch = val_nll, epoch
        elif epoch >= min_epochs:
            decay = 1
        if decay == 1:
            lr = lr * 0.5
            if lr < threshold:
                break
        held.append(epoch)
    return lrs, held[:len(lrs) - 1], best_epoch


@pytest.mark.parametrize("seed, epochs, start, min_lr", [
    (0, 60, 15, 0.03), (1, 60, 15, 0.03), (2, 60, 15, 0.03), (3, 60, 3, 0.2), (4, 60, 25, 0.001),
    (5, 18, 15, 0.03), (6, 60, 15, 0.03), (7, 60, 1, 0.03)])
def test_skip_vae_rule_follows_its_code(tmp_path, seed, epochs, start, min_lr):
    """Random validation losses (some falling fast, so the decay starts later); the trainer's LRs, the model
    each epoch continues from, the evaluated model and the stopping epoch equal the reference's."""
    losses = losses_that_fall_stall_and_rise(seed, n=epochs, slope=0.3 if seed % 2 else 2.0)
    run = drive_rule(tmp_path, losses, lr_rule="skip-vae", decay_start_epoch=start, min_lr=min_lr)
    expected_lrs, expected_held, expected_best = reference_skip_vae_rule(losses, start, 1.0, min_lr)
    assert run.lrs == expected_lrs
    assert run.held == expected_held
    assert run.best == expected_best
    assert run.held == list(range(1, len(run.held) + 1))                   # no reload
    assert not any(run.renewed)                                            # the same optimiser, its LR set
    if len(run.lrs) < epochs:
        assert "< min_lr" in run.trainer.state.stop_reason
    else:
        assert run.trainer.state.stop_reason == f"reached {epochs} epochs"


def test_lr_rules_are_checked_and_match_the_config_names():
    from textsvae.core.config import LR_RULES, ConfigError

    assert tuple(T.LR_RULES) == LR_RULES
    with pytest.raises(ConfigError, match=r"^lr_rule must be one of plateau, skip-vae, got 'cosine'$"):
        tiny(lr_rule="cosine")
    with pytest.raises(ConfigError, match=r"^min_lr must be finite and >= 0, got -1.0$"):
        tiny(min_lr=-1.0)


def test_skip_vae_rule_resumes_exactly_after_ctrl_c_mid_decay(tmp_path, monkeypatch):
    """A constant selection loss: epoch 2 does not improve, so the LR halves after epochs 2 and 3; Ctrl-C in
    epoch 3 (at the halved LR), resume, and the run equals the uninterrupted one, LRs included."""
    config = tiny(epochs=4, lr_rule="skip-vae", decay_start_epoch=1, min_lr=1e-4)
    run, reference = tmp_path / "run", tmp_path / "reference"
    constant = lambda self, valid: 1.0                                     # noqa: E731
    _interrupt_at(monkeypatch, 17)                                         # 7 steps per epoch: epoch 3
    monkeypatch.setattr(REGISTRY["vae"], "selection_loss", constant)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, run)
    monkeypatch.undo()
    assert torch.load(run / "last.pt", weights_only=False)["state"]["lr"] == 5e-4
    monkeypatch.setattr(REGISTRY["vae"], "selection_loss", constant)
    resume_run(run)
    train_run(config, reference)
    assert_same_run(run, reference)
    assert [r["lr"] for r in read_jsonl(run / "log.jsonl")] == [1e-3, 1e-3, 5e-4, 2.5e-4]


def test_status_describes_a_skip_vae_run_by_its_own_rule(tmp_path, write_bench):
    """bench --status: a skip-vae run halves every epoch once decaying, so it shows halvings and min_lr,
    not the plateau rule's "k of max_decays halvings, j of patience worse epochs"."""
    from textsvae.bench.grid import load_benchmark
    from textsvae.bench.status import training_summary

    text = 'description = "s"\npreset = "tiny"\nseeds = [0]\ndecoders = ["standard"]\n[settings]\n' \
           'lr = 1.0\noptimizer = "sgd"\nlr_rule = "skip-vae"\n[[methods]]\nmethod = "vae"\n'
    spec = load_benchmark("s", write_bench(tmp_path / "b", "s", text)).runs[0]
    rows = [{"epoch": e, "valid_loss": 10.0 - e / 10, "lr": lr} for e, lr in enumerate([1.0, 1.0, 0.5, 0.25], 1)]
    assert "lr 0.25: 2 halvings, halving every epoch, stops below 0.03" in training_summary(spec, rows)
    assert "lr 1: 0 halvings, not decaying yet" in training_summary(spec, rows[:2])
    plateau = load_benchmark("p", write_bench(tmp_path / "c", "p", text.replace('lr_rule = "skip-vae"\n', ""))).runs[0]
    assert "2 of 5 halvings" in training_summary(plateau, rows)
