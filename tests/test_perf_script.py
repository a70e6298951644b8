"""benchmarks/perf/perf.py (issue 6): its cases' rows, their table, and one-line errors for bad options.

Everything runs perf.py's main() in this process: a case on the tiny corpus through `--case` (how
perf.py runs each case in its own child), and the bad options, which stop it before any child starts.
perf.py imports its sibling timing.py, so the fixture puts benchmarks/perf/ on sys.path while it loads
perf.py, as running it as a script does.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from textsvae.evaluation.scoring import evaluate_model

PERF = Path(__file__).resolve().parents[1] / "benchmarks" / "perf" / "perf.py"
FAST = ["--preset", "tiny", "--threads", "1", "--precisions", "fp32", "--warmup", "1", "--k", "5",
        "--probe-seconds", "0.05", "--slice-probe-seconds", "0.01", "--probe-sizes", "64"]


@pytest.fixture(scope="module")
def perf():
    spec = importlib.util.spec_from_file_location("perf", PERF)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(PERF.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(PERF.parent))
        sys.modules.pop("timing", None)    # perf.py holds what it imported; the name stays free for others
    return module


def run_case(perf, monkeypatch, capsys, corpus: Path, case: str, *extra: str) -> dict:
    monkeypatch.setattr(sys, "argv", ["perf.py", *FAST, "--data", str(corpus), "--case", case,
                                      "--decoder", "standard", "--precision", "fp32", *extra])
    try:
        perf.main()
    finally:
        torch.set_num_threads(1)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ROW ")]
    assert len(rows) == 1
    return json.loads(rows[0][4:])


def test_training_case_counts_flops_per_token_and_runs_past_one_epoch(perf, tiny_corpus, monkeypatch, capsys):
    """The tiny corpus has 2 batches per epoch at the preset's batch size: 1 + 4 steps need 3 epochs."""
    row = run_case(perf, monkeypatch, capsys, tiny_corpus, "train", "--steps", "4", "--slices", "2")
    assert row["steps"] == 4 and row["device"] == "cpu" and row["case"] == "train"
    macs = row["macs_per_token"]
    e, h, v = 32, 32, macs["output"] // 32                          # tiny: emb 32, LSTMs 32, z 8
    assert macs["encoder"] == 4 * h * (e + h) and macs["decoder"] == 4 * h * (e + 8 + h)
    assert row["gflops"] == pytest.approx(6 * sum(macs.values()) * row["tokens_per_s"] / 1e9)
    assert row["tokens_per_s"] > 0 and v > 10
    assert len(row["probe_gflops"]) == 2 and min(row["probe_gflops"]) > 0 and row["probe_gflops_during"] > 0
    assert row["peak_rss_mb"] > 0 and "peak_gpu_mb" not in row


def test_iwnll_case_in_slices_equals_one_evaluation_of_the_same_sentences(perf, tiny_corpus, monkeypatch, capsys):
    row = run_case(perf, monkeypatch, capsys, tiny_corpus, "iwnll", "--eval-sentences", "6", "--slices", "3")
    assert row["sentences"] == 6 and row["k"] == 5 and row["workers"] == 1
    trainer, cfg = perf._trainer(argparse.Namespace(preset="tiny", data=str(tiny_corpus), threads=1, device="cpu"),
                                 "standard", "fp32")                # the case's own model, untrained
    trainer.model.eval()
    whole = evaluate_model(trainer.model, trainer.method, trainer.corpus.splits["test"][:6], cfg.eval,
                           trainer.device, iw_samples=5)
    assert row["iw_nll"] == pytest.approx(whole["iw_nll"], rel=1e-12)


def test_table_names_the_gpu_its_memory_and_bf16_against_the_bf16_probe(perf, capsys):
    train = {"case": "train", "decoder": "skip", "tokens_per_s": 1e5, "gflops": 2000.0, "steps": 10,
             "probe_gflops": [4000.0, 5000.0], "probe_gflops_during": 4500.0, "peak_rss_mb": 900.0,
             "peak_gpu_mb": 1234.0, "epoch_seconds_est": 9.0, "valid_loss_after_steps": 100.0}
    rows = [{"case": "matmul", "threads": 2, "gpu": "Some GPU",
             "matmul": [{"dtype": "float32", "gflops": 5000.0}, {"dtype": "bfloat16", "gflops": 20000.0}]},
            {**train, "precision": "fp32"},
            {**train, "precision": "bf16", "tokens_per_s": 3e5, "gflops": 6000.0, "valid_loss_after_steps": 100.2}]
    perf.print_table(rows)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "matmul probe (Some GPU, fp32 without TF32): fp32 5000.0 GFLOP/s, bf16 20000.0 GFLOP/s"
    fp32, bf16 = out[3], out[4]
    assert "| 40% of 5000 | 44% of 4500 | 1234 GPU |" in fp32 and "bf16 matmul" not in fp32
    assert "x3.00 of fp32" in bf16 and "(+0.20% vs fp32); 30% of the bf16 matmul |" in bf16


def perf_error(perf, monkeypatch, capsys, *args: str) -> str:
    """perf.py's exit code must be 2; returns the last line it printed on stderr."""
    monkeypatch.setattr(sys, "argv", ["perf.py", *args])
    with pytest.raises(SystemExit) as exit_:
        perf.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "--device must be cpu or cuda[:N], got 'tpu'"),
    (["--device", "meta"], "--device must be cpu or cuda[:N], got 'meta'"),
    (["--device", "cuda", "--cases", "train,pack"], "the cases iwpack and pack run CPU processes side by side; "
                                                    "leave them out with --device cuda"),
    (["--probe-sizes", "0"], "--probe-sizes must be >= 1"),
    (["--cases", "train,nope"], "unknown case(s) nope"),
])
def test_bad_options_give_one_line_and_exit_2(args, message, perf, monkeypatch, capsys):
    assert message in perf_error(perf, monkeypatch, capsys, *args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(perf, monkeypatch, capsys):
    assert perf_error(perf, monkeypatch, capsys, "--device", "cuda", "--cases", "train") == \
        "perf.py: error: device 'cuda' requested but CUDA is not available"


def test_time_profile_ceiling_adds_up_its_kernels(tiny_corpus, monkeypatch, capsys):
    """`time_profile.py ceiling`: the ceiling row is the sum of the kernel rows, and each row's share of the
    step is its time over the step's (across epochs: the tiny corpus has 2 batches per epoch)."""
    path = PERF.parent / "time_profile.py"
    spec = importlib.util.spec_from_file_location("time_profile", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(PERF.parent))
    try:
        spec.loader.exec_module(module)
        monkeypatch.setattr(sys, "argv", ["time_profile.py", "ceiling", "--preset", "tiny", "--data", str(tiny_corpus),
                                          "--decoder", "skip", "--threads", "1", "--steps", "5"])
        module.main()
    finally:
        sys.path.remove(str(PERF.parent))
        sys.modules.pop("timing", None)
        torch.set_num_threads(1)
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[1].replace(".", "").isdigit():
            rows[cells[0]] = (float(cells[1]), float(cells[2]), float(cells[3].rstrip("%")))
    assert set(rows) == {"step", "output layer", "LSTMs", "kernels (the ceiling)"}
    assert rows["kernels (the ceiling)"][0] == pytest.approx(rows["output layer"][0] + rows["LSTMs"][0], abs=0.11)
    assert rows["step"][2] == 100
    share = rows["kernels (the ceiling)"][0] / rows["step"][0] * 100
    assert rows["kernels (the ceiling)"][2] == pytest.approx(share, abs=1.5)
