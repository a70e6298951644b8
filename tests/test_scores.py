"""Per-sentence scores (scores_<split>_k<K>[_<precision>].parquet beside each evaluation's JSON): they
average to the JSON's numbers, follow the split's order, and two evaluations of one split align row by row."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from textsvae.core.config import apply_overrides, preset_config
from textsvae.evaluation.run_eval import evaluate_run, load_model, scores_path, split_sentences, text_hash
from textsvae.training.train import train_run

SETTINGS = {"data": "synthetic", "synthetic_train": 200, "epochs": 1, "max_steps": 2, "iw_samples": 3,
            "monitor_size": 10, "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A standard VAE and an LSTM-LM, two optimiser steps each, evaluated on test (and the VAE on valid)."""
    root = tmp_path_factory.mktemp("scores")
    out = {}
    for decoder in ("standard", "lm"):
        run = root / decoder
        train_run(apply_overrides(preset_config("tiny"), {**SETTINGS, "decoder": decoder}), run)
        evaluate_run(run, split="test")
        out[decoder] = run
    evaluate_run(out["standard"], split="valid")
    return out


def _read(run: Path, split: str, k: int | None):
    return (pd.read_parquet(scores_path(run, split, k)),
            json.loads((run / f"eval_{split}_k{k or 0}.json").read_text()))


@pytest.mark.parametrize("split", ["test", "valid"])
def test_vae_scores_average_to_the_json_and_follow_the_split(runs, split):
    """-mean(iw_ll) = iw_nll, mean(rec), mean(kl), mean(elbo) = the JSON's; row n is sentence n of the split."""
    frame, saved = _read(runs["standard"], split, 3)
    assert -frame.iw_ll.mean() == pytest.approx(saved["iw_nll"], abs=1e-9)
    assert frame.rec.mean() == pytest.approx(saved["rec"], abs=1e-9)
    assert frame.kl.mean() == pytest.approx(saved["kl"], abs=1e-9)
    assert frame.elbo.mean() == pytest.approx(saved["elbo"], abs=1e-9)
    np.testing.assert_allclose(frame.elbo, -(frame.rec + frame.kl), rtol=0, atol=1e-12)
    assert len(frame) == saved["n_sentences"] and int(frame.n_tokens.sum()) == saved["n_tokens"]
    _, _, config, vocab, _ = load_model(runs["standard"])
    sentences = split_sentences(config, vocab, split)
    assert frame.sentence.tolist() == list(range(len(sentences)))
    assert frame.n_tokens.tolist() == [len(s) + 1 for s in sentences]
    assert frame.text_hash.tolist() == [text_hash(vocab.decode(s)) for s in sentences]
    mu = np.stack(frame.mu.to_numpy())
    assert mu.shape == (len(sentences), config.model.latent_dim)
    assert (np.var(mu, axis=0, ddof=1) >= saved["au_threshold"]).sum() == saved["au"]


def test_lm_scores_are_the_exact_log_likelihood_without_elbo_or_kl(runs):
    frame, saved = _read(runs["lm"], "test", None)
    assert saved["iw_samples"] is None
    assert -frame.iw_ll.mean() == pytest.approx(saved["iw_nll"], abs=1e-9)
    assert {"elbo", "rec", "kl", "mu", "logvar"}.isdisjoint(frame.columns)
    assert (frame.iw_mc_se == 0).all()


def test_a_second_evaluation_gives_the_same_rows(runs, tmp_path):
    """The draws are keyed by eval_seed and sentence position: another batch size scores the same rows."""
    first, _ = _read(runs["standard"], "test", 3)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["standard"], copy)
    config = json.loads((copy / "config.json").read_text())
    config["eval"]["eval_batch_size"] = 3
    (copy / "config.json").write_text(json.dumps(config))
    evaluate_run(copy, split="test")
    again, _ = _read(copy, "test", 3)
    for column in ("sentence", "text_hash", "n_tokens"):
        assert again[column].tolist() == first[column].tolist()
    np.testing.assert_allclose(again.iw_ll, first.iw_ll, rtol=0, atol=1e-9)


def test_raw_sentences_write_no_scores(runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["lm"], copy)
    for p in copy.glob("scores_*"):
        p.unlink()
    evaluate_run(copy, sentences=["a b c"])
    assert not list(copy.glob("scores_*"))
