"""`textsvae eval` scores best.pt, the epoch of lowest validation loss (docs/protocol.md section 6), not last.pt.

A run whose last epoch is clearly worse than its best: 64 synthetic sentences, Adam at lr 0.03, 4 epochs
(measured: validation loss 54.7, 51.5, 53.4, 56.2, so best.pt holds epoch 2 and last.pt epoch 4). The
oracle loads each checkpoint file with torch.load, rebuilds the model by hand and scores it with
`evaluate_model`; eval's printed numbers must be best.pt's, and differ from last.pt's.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from textsvae.cli import cli
from textsvae.core.config import RunConfig
from textsvae.core.io import read_jsonl
from textsvae.data.corpus import load_corpus
from textsvae.data.vocab import load_vocab
from textsvae.evaluation.scoring import evaluate_model
from textsvae.methods import build_method
from textsvae.model.models import TextVAE

METRICS = ("iw_nll", "rec", "kl", "elbo", "mi", "agg_kl", "au", "ppl")


def scored(run: Path, checkpoint: str) -> dict:
    config = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    vocab = load_vocab(run)
    weights = torch.load(run / checkpoint, map_location="cpu", weights_only=False)["model"]
    model = TextVAE(len(vocab), config.model)
    model.load_state_dict(weights)
    model.eval()
    method = build_method(config.train.method, config.train.method_params)
    test = load_corpus(config.data, vocab=vocab, needed=("test",)).splits["test"]
    return evaluate_model(model, method, test, config.eval, torch.device("cpu"))


def test_eval_scores_the_best_checkpoint_not_the_last(tmp_path):
    run = tmp_path / "run"
    trained = CliRunner().invoke(cli, ["train", "--data", "synthetic", "--preset", "tiny", "--epochs", "4",
                                       "--set", "synthetic_train=64", "--set", "lr=0.03", "--set", "iw_samples=4",
                                       "--set", "mi_samples=4", "--set", "progress=false", "--threads", "1",
                                       "-o", str(run)])
    assert trained.exit_code == 0, trained.output
    losses = [row["valid_loss"] for row in read_jsonl(run / "log.jsonl")]
    best_epoch = json.loads((run / "summary.json").read_text())["best_epoch"]
    assert best_epoch == 1 + losses.index(min(losses)) < len(losses) == 4    # the last epoch is not the best
    assert losses[-1] > min(losses) + 1.0
    assert torch.load(run / "best.pt", map_location="cpu", weights_only=False)["epoch"] == best_epoch

    done = CliRunner().invoke(cli, ["eval", str(run), "--split", "test", "--json"])
    assert done.exit_code == 0, done.output
    got = json.loads(done.output)
    best, last = scored(run, "best.pt"), scored(run, "last.pt")
    for key in METRICS:
        assert got[key] == pytest.approx(best[key], rel=1e-9, abs=1e-9), key
    assert abs(best["iw_nll"] - last["iw_nll"]) > 0.5                       # the two checkpoints tell apart
