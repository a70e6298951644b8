"""Progress of long commands: a tqdm bar on a terminal, plain periodic lines in a log or under CI, nothing when
off. Lines are counted with TEXTSVAE_PROGRESS_EVERY=0 (a line at every update), never timed."""
from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from textsvae.bench import runner as B
from textsvae.bench.grid import load_benchmark
from textsvae.bench.runner import RunOutcome, run_benchmark
from textsvae.core.progress import BarProgress, LineProgress, Progress, lines_only, progress

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^epoch 3/40: (\d+)/10 batches \((\d+)%\), [\d.]+ batches/s(?:, (eta|took) \d+s)?, loss=104.2$")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def every_update(monkeypatch):
    """A line at every update, and no CI or TEXTSVAE_PROGRESS from the machine running the tests."""
    monkeypatch.setenv("TEXTSVAE_PROGRESS_EVERY", "0")
    for name in ("CI", "TEXTSVAE_PROGRESS"):
        monkeypatch.delenv(name, raising=False)


def run_loop(stream, n: int = 4, initial: int = 0) -> Progress:
    with progress(10, "epoch 3/40", initial=initial, stream=stream, unit="batches") as shown:
        for _ in range(n):
            shown.set_postfix(loss=104.2)
            shown.update()
    return shown


def test_a_log_file_gets_a_line_per_update_and_a_last_one():
    out = io.StringIO()
    run_loop(out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5                                   # 4 updates + the line at close
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [(m[1], m[2], m[3]) for m in matches] == [("1", "10", "eta"), ("2", "20", "eta"), ("3", "30", "eta"),
                                                      ("4", "40", "eta"), ("4", "40", "took")]
    assert "\r" not in out.getvalue()


def test_a_loop_shorter_than_the_period_prints_nothing(monkeypatch):
    monkeypatch.setenv("TEXTSVAE_PROGRESS_EVERY", "3600")
    out = io.StringIO()
    assert run_loop(out).n == 4
    assert out.getvalue() == ""                             # no periodic line, so no last line either


def test_without_a_stream_lines_go_to_the_log(caplog, monkeypatch):
    monkeypatch.setenv("TEXTSVAE_PROGRESS", "lines")        # even under `pytest -s` on a terminal
    with caplog.at_level(logging.INFO, logger="textsvae.core.progress"):
        with progress(3, "iw-nll K=5", unit="sentences", stream=None) as shown:
            shown.update(2)
            shown.update(1)
    assert [r.name for r in caplog.records] == ["textsvae.core.progress"] * 3
    assert caplog.records[-1].getMessage().startswith("iw-nll K=5: 3/3 sentences (100%), ")


def test_ci_gives_lines_even_on_a_terminal(monkeypatch):
    terminal = FakeTerminal()
    assert isinstance(run_loop(terminal), BarProgress)       # a terminal without CI: a bar
    assert "\r" in terminal.getvalue()
    monkeypatch.setenv("CI", "true")
    terminal = FakeTerminal()
    assert isinstance(run_loop(terminal), LineProgress)
    assert len(terminal.getvalue().splitlines()) == 5 and "\r" not in terminal.getvalue()


def test_lines_setting_and_lines_only_give_lines_on_a_terminal(monkeypatch):
    with lines_only():
        assert isinstance(run_loop(FakeTerminal()), LineProgress)
    assert isinstance(run_loop(FakeTerminal()), BarProgress)
    monkeypatch.setenv("TEXTSVAE_PROGRESS", "lines")
    assert isinstance(run_loop(FakeTerminal()), LineProgress)


def test_off_prints_nothing(monkeypatch, caplog):
    monkeypatch.setenv("TEXTSVAE_PROGRESS", "off")
    with caplog.at_level(logging.INFO, logger="textsvae.core.progress"):
        for stream in (io.StringIO(), FakeTerminal(), None):
            run_loop(stream)
            assert stream is None or stream.getvalue() == ""
    assert caplog.records == []
    monkeypatch.delenv("TEXTSVAE_PROGRESS")
    out = io.StringIO()
    with progress(10, "x", enabled=False, stream=out) as shown:   # config.train.progress = false
        shown.update(3)
    assert out.getvalue() == ""


def test_a_resumed_loop_counts_from_initial():
    out = io.StringIO()
    shown = run_loop(out, n=4, initial=6)
    assert shown.n == 10
    matches = [LINE.match(line) for line in out.getvalue().splitlines()]
    assert [(m[1], m[3]) for m in matches] == [("7", "eta"), ("8", "eta"), ("9", "eta"), ("10", None), ("10", "took")]
    assert "10/10 batches (100%)" in out.getvalue().splitlines()[-1]


def test_a_real_terminal_shows_a_tqdm_bar():
    """Under a pseudo-terminal (no CI) the display is tqdm's bar: carriage returns and `n/total`."""
    code = ("import time; from textsvae.core.progress import progress\n"
            "with progress(5, 'bar-test', unit='sentences') as p:\n"
            "    for _ in range(5):\n        time.sleep(0.05); p.update()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TEXTSVAE_PROGRESS")}
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # 24 x 100, as a terminal has
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=child, stdout=child, stderr=child, env=env,
                            cwd=REPO)
    os.close(child)
    output = b""
    while True:
        ready, _, _ = select.select([main], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(main, 4096)
        except OSError:                                      # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    assert proc.wait(timeout=30) == 0, output
    text = output.decode(errors="replace")
    assert "\r" in text and "bar-test" in text and "/5" in text
    assert "bar-test: 5/5 sentences (100%)" not in text          # no plain lines on a terminal


def test_bench_counts_finished_runs_of_the_grid_and_failures(tmp_path, monkeypatch, write_bench, caplog):
    grid = ('description = "d"\npreset = "tiny"\nseeds = [0, 1, 2]\ndecoders = ["standard"]\n'
            '[settings]\nsynthetic_train = 100\n[[methods]]\nmethod = "vae"\n')
    bench = load_benchmark("three", write_bench(tmp_path / "b", "three", grid))
    failing = bench.runs[1].run_id
    monkeypatch.setenv("TEXTSVAE_PROGRESS", "lines")
    monkeypatch.setattr(B, "execute_run", lambda task: RunOutcome(
        task.spec.run_id, "failed" if task.spec.run_id == failing else "finished", "boom"))
    with caplog.at_level(logging.INFO, logger="textsvae.core.progress"):
        report = run_benchmark(bench, tmp_path / "results", jobs=1, threads=1)
    assert len(report.failed) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "textsvae.core.progress"]
    assert len(lines) == 7                                   # a line as each of 3 runs starts and ends, a last one
    assert lines[-1].startswith("three: 3/3 runs (100%), ") and lines[-1].endswith("running=0, failed=1")
    assert lines[1].startswith("three: 1/3 runs (33%), ") and lines[1].endswith("running=0, failed=0")


def test_train_under_ci_prints_periodic_lines(tmp_path):
    """`textsvae train` under CI: a plain line per batch (EVERY=0), the epoch's last at 100%."""
    env = {**os.environ, "CI": "true", "TEXTSVAE_PROGRESS_EVERY": "0", "OMP_NUM_THREADS": "1"}
    env.pop("TEXTSVAE_PROGRESS", None)
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "textsvae.cli", "train", "--data", "synthetic", "--epochs", "1",
                             "--set", "synthetic_train=200", "--set", "threads=1", "-o", str(run)],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    steps = json.loads((run / "summary.json").read_text())["steps"]
    lines = [line for line in result.stderr.splitlines() if line.startswith("epoch 1/1: ")]
    assert len(lines) == steps + 1 and steps > 1
    assert lines[0].startswith(f"epoch 1/1: 1/{steps} batches (")
    assert re.match(rf"epoch 1/1: {steps}/{steps} batches \(100%\), .* batches/s, took \d+s, loss=[\d.]+, "
                    rf"kl=[\d.]+, beta=[\d.]+$", lines[-1]), lines[-1]
    assert "\r" not in result.stderr


def test_a_step_that_raises_still_closes_the_epochs_progress(tmp_path, monkeypatch, caplog):
    """A failing step ends the display with its last line (on a terminal: the bar is closed, not left open)."""
    from textsvae.core.config import apply_overrides, preset_config
    from textsvae.methods import REGISTRY
    from textsvae.training.train import train_run

    vae, calls = REGISTRY["vae"], {"n": 0}
    original = vae.train_step

    def step(self, trainer, batch, beta):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return original(self, trainer, batch, beta)
    monkeypatch.setattr(vae, "train_step", step)
    config = apply_overrides(preset_config("tiny"), {"data": "synthetic", "synthetic_train": 200, "epochs": 1,
                                                     "threads": 1, "progress": True})
    with caplog.at_level(logging.INFO, logger="textsvae.core.progress"), pytest.raises(RuntimeError, match="boom"):
        train_run(config, tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if r.name == "textsvae.core.progress"]
    assert lines[0].startswith("epoch 1/1: 1/7 batches") and lines[-1].startswith("epoch 1/1: 2/7 batches")
    assert ", took " in lines[-1]
