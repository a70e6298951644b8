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

import pytest
import torch
from click.testing import CliRunner

from textsvae import device as D
from textsvae import io as tio
from textsvae import train as T
from textsvae.cli import cli
from textsvae.config import RunConfig, apply_overrides, preset_config
from textsvae.io import append_jsonl, atomic_write_text, read_jsonl
from textsvae.methods import REGISTRY
from textsvae.train import read_run_config, resume_run, train_run

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
    from textsvae.train import TrainingDiverged
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


CORE_MODULES = ["config.py", "io.py", "models.py", "train.py", "validation.py", "data/vocab.py",
                "data/corpus.py", "data/batching.py", "data/synthetic.py", "data/fetch.py"]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_modules_write_files_only_through_textsvae_io(module):
    """Every file the core writes goes through io.atomic_* (temp file, fsync, rename) or append_jsonl."""
    import re

    if module == "io.py":
        return
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
    from textsvae.train import Trainer

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(D, "cpu_lstm_runs_in", lambda precision: True)  # whatever this machine's LSTM runs
    with caplog.at_level("WARNING", logger="textsvae.device"):
        Trainer(tiny(precision=precision), "/nonexistent-run")
    assert ("bf16 matmuls are emulated" in caplog.text) == warned


def test_the_lstm_probe_says_what_a_model_does_in_bf16_on_this_cpu():
    """Either way round: where the probe says no, the model's bf16 forward pass fails as it does."""
    from textsvae.config import ModelConfig
    from textsvae.data.batching import make_batch
    from textsvae.models import TextVAE

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
    from textsvae.run_eval import load_model

    run = tmp_path / "run"
    train_run(tiny(epochs=1), run)
    config = json.loads((run / "config.json").read_text())
    config["eval"]["eval_precision"] = "bf16"
    (run / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(D, "cpu_lstm_runs_in", lambda precision: precision == "fp32")
    with caplog.at_level("WARNING", logger="textsvae.run_eval"):
        _, _, loaded, _, _ = load_model(run, "cpu")
    assert loaded.eval.eval_precision == "fp32"
    assert "eval_precision=bf16 cannot run on this CPU's LSTM kernels: evaluating in fp32" in caplog.text


# -- the LR rule of He et al.'s and Li et al.'s code --------------------------------------------------
def reference_lr_rule(losses: list[float], start: int, patience: int, max_decays: int) -> tuple[list[float], int]:
    """Their loop, transcribed: 0-based epochs, `not_improved` against the last non-worse loss,
    `break` right after the max_decays-th halving. Returns (LR of each epoch trained, epochs trained)."""
    ref, not_improved, lr, decays, lrs = 1e4, 0, 1.0, 0, []
    for epoch, loss in enumerate(losses):
        lrs.append(lr)
        if loss > ref:
            not_improved += 1
            if not_improved >= patience and epoch >= start:
                ref, not_improved, lr, decays = loss, 0, lr * 0.5, decays + 1
        else:
            not_improved, ref = 0, loss
        if decays == max_decays:
            break
    return lrs, len(lrs)


@pytest.mark.parametrize("seed", range(6))
def test_lr_rule_follows_he_and_li_code(tmp_path, seed):
    """Validation losses that fall, stall and rise; the trainer's LR and stopping epoch equal the reference's."""
    g = torch.Generator().manual_seed(seed)
    losses = (100 - torch.arange(60) * 0.3 + torch.rand(60, generator=g) * 6).tolist()
    config = apply_overrides(tiny(), {"epochs": 60, "decay_start_epoch": 15, "decay_patience": 3,
                                      "max_decays": 5})
    trainer = T.Trainer(config, tmp_path / "run")
    trainer.run_dir.mkdir()
    lrs = []
    for loss in losses:
        trainer.state.epoch += 1
        lrs.append(trainer.state.lr / config.train.lr)
        trainer._after_validation(loss)
        if trainer.state.done:
            break
    expected_lrs, expected_epochs = reference_lr_rule(losses, 15, 3, 5)
    assert lrs == expected_lrs and trainer.state.epoch == expected_epochs
    if expected_epochs < 60:
        assert trainer.state.decays == 5 and "plateau 5" in trainer.state.stop_reason
    assert trainer.state.best_loss == min(losses[:expected_epochs])
