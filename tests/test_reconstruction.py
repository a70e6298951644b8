"""Reconstruction metrics (issue 17): corpus BLEU and token accuracy of greedy decodes of the posterior
mean, on hand cases, on tiny trained runs through `eval --recon`, and as rows of a benchmark."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import sacrebleu
import torch
from click.testing import CliRunner

from textsvae.cli import cli
from textsvae.core.config import EvalConfig, ModelConfig, apply_overrides, preset_config
from textsvae.evaluation.reconstruction import EXTRA_WORDS, reconstruct, recon_bleu, reconstruction_metrics, token_accuracy
from textsvae.evaluation.scoring import evaluate_model
from textsvae.methods import build_method
from textsvae.model.decoding import DecodeOptions, decode
from textsvae.model.models import TextVAE

REFS = ["the cat sat on the mat", "a dog ran in the park today"]
HYPS = ["the cat sat on a mat", "a dog ran in the park"]


# -- BLEU ------------------------------------------------------------------------------------------------
def test_bleu_of_identical_corpora_is_100_and_of_disjoint_ones_0():
    assert recon_bleu(REFS, REFS) == pytest.approx(100.0)
    assert recon_bleu(REFS, ["x y z w v u", "p q r s t"]) == 0.0
    assert recon_bleu(REFS, ["", ""]) == 0.0


def test_bleu_matches_sacrebleu_and_the_formula_on_a_hand_example():
    """Clipped n-gram matches over both sentences: 1-grams 11/12, 2-grams 8/10, 3-grams 6/8, 4-grams 4/6;
    hypothesis length 12 against reference length 13, so BP = exp(1 - 13/12);
    BLEU = 100 BP (11/12 * 8/10 * 6/8 * 4/6)^(1/4), the multi-bleu.perl number (no smoothing)."""
    by_hand = 100 * math.exp(1 - 13 / 12) * (11 / 12 * 8 / 10 * 6 / 8 * 4 / 6) ** 0.25
    direct = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none", lowercase=False, smooth_method="none").score
    assert recon_bleu(REFS, HYPS) == pytest.approx(direct, rel=1e-12)
    assert recon_bleu(REFS, HYPS) == pytest.approx(by_hand, rel=1e-9)


def test_bleu_keeps_case_and_the_corpus_tokens():
    """tokenize="none": "mat." is one word (not "mat" "."); lowercase off: "The" is not "the"."""
    assert recon_bleu(["the cat sat on the mat ."], ["The cat sat on the mat ."]) < 100
    assert recon_bleu(["the cat sat on the mat."], ["the cat sat on the mat ."]) < 100
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        recon_bleu(REFS, HYPS[:1])


# -- token accuracy --------------------------------------------------------------------------------------
@pytest.mark.parametrize("refs, hyps, expected", [
    ([[1, 2, 3, 4]], [[1, 2, 3, 4]], 1.0),               # exact
    ([[1, 2, 3, 4]], [[1, 2]], 2 / 4),                   # shorter: the rest is missed
    ([[1, 2, 3, 4]], [[1, 2, 3, 4, 5, 6]], 1.0),         # longer: the extra words cost nothing
    ([[1, 2, 3, 4]], [[9, 1, 2, 3]], 0.0),               # aligned from the start: a shift matches nothing
    ([[1, 2, 3, 4]], [[]], 0.0),
    ([[1, 2, 3], [4, 5]], [[1, 2], [4, 7, 6, 8]], 3 / 5),  # summed over sentences, then divided
])
def test_token_accuracy_on_hand_cases(refs, hyps, expected):
    assert token_accuracy(refs, hyps) == pytest.approx(expected)


def test_metrics_on_ids_as_words_equal_those_on_the_text():
    """Without a vocabulary BLEU reads the ids as words: a word vocabulary's text gives the same BLEU."""
    words = {1: "the", 2: "cat", 3: "sat", 4: "on", 5: "mat", 6: "a"}
    refs, hyps = [[1, 2, 3, 4, 1, 5]], [[1, 2, 3, 4, 6, 5]]
    as_ids = reconstruction_metrics(refs, hyps)
    as_text = reconstruction_metrics(refs, hyps, lambda s: " ".join(words[i] for i in s))
    assert as_ids == pytest.approx(as_text)
    assert as_text["recon_acc"] == pytest.approx(5 / 6)


# -- reconstructions -------------------------------------------------------------------------------------
def _toy(decoder: str) -> TextVAE:
    torch.manual_seed(0)
    cfg = ModelConfig(decoder=decoder, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=3, init_range=2.0,
                      emb_init_range=1.0)
    return TextVAE(30, cfg).eval()


@pytest.mark.parametrize("decoder", ["standard", "skip"])
def test_reconstructions_keep_the_input_order_and_do_not_depend_on_the_batch_size(decoder):
    """Row n is greedy(mu_n) at max_len = longest input + 10, whatever the batch it is decoded in."""
    model = _toy(decoder)
    g = torch.Generator().manual_seed(3)
    ids = [torch.randint(4, 30, (n,), generator=g).tolist() for n in (5, 2, 7, 3, 3, 6, 1)]
    mu = torch.randn(len(ids), 3, generator=g)
    alone = [decode(model, mu[i:i + 1], DecodeOptions(max_len=7 + EXTRA_WORDS))[0] for i in range(len(ids))]
    for batch_size in (1, 3, 64):
        assert reconstruct(model, mu, ids, batch_size) == alone


def test_evaluate_model_adds_recon_only_when_asked():
    model, method = _toy("standard"), build_method("vae")
    ids = [[4, 5, 6], [7, 8], [9, 10, 11, 12]]
    cfg = EvalConfig(iw_samples=2)
    plain = evaluate_model(model, method, ids, cfg, torch.device("cpu"))
    assert "recon_bleu" not in plain and "recon_acc" not in plain
    got = evaluate_model(model, method, ids, cfg, torch.device("cpu"), recon=True)
    assert 0 <= got["recon_bleu"] <= 100 and 0 <= got["recon_acc"] <= 1
    assert {k: v for k, v in got.items() if not k.startswith("recon_") and k != "seconds"} == \
        {k: v for k, v in plain.items() if k != "seconds"}


# -- tiny trained runs -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Preset tiny on 400 synthetic sentences, 2 epochs, one thread: a standard, a skip and an LM run."""
    from textsvae.training.train import train_run

    root = tmp_path_factory.mktemp("recon")
    out = {}
    for decoder in ("standard", "skip", "lm"):
        config = apply_overrides(preset_config("tiny"), {
            "data": "synthetic", "synthetic_train": 400, "epochs": 2, "threads": 1, "progress": False,
            "device": "cpu", "decoder": decoder, "monitor_size": 20})
        train_run(config, root / decoder)
        out[decoder] = root / decoder
    return out


def _eval(run: Path, *extra: str) -> dict:
    result = CliRunner().invoke(cli, ["eval", str(run), "-k", "2", "--threads", "1", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("decoder", ["standard", "skip"])
def test_eval_recon_gives_bleu_and_accuracy_in_range(runs, decoder):
    got = _eval(runs[decoder], "--recon")
    assert 0 <= got["recon_bleu"] <= 100 and 0 < got["recon_acc"] <= 1, got
    print(f"{decoder}: recon_bleu {got['recon_bleu']:.2f} recon_acc {got['recon_acc']:.3f}")
    assert "recon_bleu" not in _eval(runs[decoder])
    text = CliRunner().invoke(cli, ["eval", str(runs[decoder]), "-k", "2", "--recon"])
    assert text.exit_code == 0, text.output
    assert f"recon_bleu {got['recon_bleu']:.2f}  recon_acc {got['recon_acc']:.3f}" in text.output


def test_eval_recon_of_an_lm_run_is_none(runs):
    got = _eval(runs["lm"], "--recon")
    assert "recon_bleu" in got and got["recon_bleu"] is None and got["recon_acc"] is None
    text = CliRunner().invoke(cli, ["eval", str(runs["lm"]), "-k", "2", "--recon"])
    assert "recon_bleu -  recon_acc -" in text.output


# -- benchmarks ------------------------------------------------------------------------------------------
BENCH = """
description = "recon rows"
preset = "tiny"
seeds = [0]
decoders = ["standard"]
metrics = ["iw_nll", "kl", "recon_bleu", "recon_acc"]
[settings]
synthetic_train = 100
epochs = 1
max_steps = 2
iw_samples = 2
monitor_size = 10
[[methods]]
method = "vae"
"""


def test_a_benchmark_listing_recon_metrics_writes_their_rows(tmp_path, write_bench):
    from textsvae.bench.grid import load_benchmark
    from textsvae.bench.results import load_results
    from textsvae.bench.runner import run_benchmark
    from textsvae.reporting.tables import build_table, render

    bdir = write_bench(tmp_path / "b", "recon", BENCH)
    write_bench(bdir, "plain", BENCH.replace(', "recon_bleu", "recon_acc"', ""))
    assert not any(r.recon for r in load_benchmark("plain", bdir).runs)
    b = load_benchmark("recon", bdir)
    assert len(b.runs) == 1 and b.runs[0].recon
    report = run_benchmark(b, tmp_path / "results", jobs=1, threads=1)
    assert report.finished == [b.runs[0].run_id] and not report.failed
    df = load_results(tmp_path / "results")
    rows = df[(df.split == "test") & df.metric.isin(["recon_bleu", "recon_acc"])]
    assert sorted(rows.metric) == ["recon_acc", "recon_bleu"]
    assert (rows.n_sentences == 10).all()   # the test split of 100 synthetic sentences: a tenth
    values = dict(zip(rows.metric, rows.value))
    assert 0 <= values["recon_bleu"] <= 100 and 0 <= values["recon_acc"] <= 1
    table = render(build_table(df, b.runs, b.metrics), "md")
    assert "recon. BLEU" in table and "recon. acc." in table
