"""Evaluation of models and runs: invariances, the CLI, the Python API, and agreement with an
independent re-computation from `encode` and `log_px_given_z` on a model trained on a cut of PTB."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from textsvae.cli import cli
from textsvae.core.config import ConfigError, EvalConfig, ModelConfig, apply_overrides, preset_config
from textsvae.core.decoders import latent_decoder_names
from textsvae.data.batching import make_batch
from textsvae.evaluation import scoring
from textsvae.evaluation.scoring import evaluate_model, samples_per_chunk, score_sentences
from textsvae.methods import build_method
from textsvae.model.models import TextVAE

PTB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"
_SCORE_SHARD = scoring._score_shard


def _toy(decoder: str = "standard", vocab: int = 40, seed: int = 0) -> TextVAE:
    """A random model with a wide init, so posterior means differ between sentences (AU, MI > 0)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(decoder=decoder, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=3, init_range=2.0,
                      emb_init_range=1.0)
    return TextVAE(vocab, cfg).eval()


def _sentences(n: int = 13, vocab: int = 40, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


SCALARS = ("rec", "kl", "elbo", "iw_nll", "iw_nll_se", "ppl", "ppl_bound", "mi", "agg_kl")


def _assert_same(a: dict, b: dict, rtol: float = 1e-5) -> None:
    for key in SCALARS:
        if a[key] is None:
            assert b[key] is None
        else:
            assert b[key] == pytest.approx(a[key], rel=rtol, abs=1e-6), key
    assert a["au"] == b["au"]
    assert (a["n_sentences"], a["n_tokens"]) == (b["n_sentences"], b["n_tokens"])


# -- invariances ----------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder", latent_decoder_names())
def test_metrics_do_not_depend_on_batch_size_chunking_or_repetition(decoder):
    """Every draw is keyed by (eval_seed, sentence position), so the eval batch size, the memory budget
    (samples per chunk) and a second call leave every metric unchanged (up to float rounding)."""
    model, method, sents = _toy(decoder), build_method("vae"), _sentences()
    cfg = EvalConfig(iw_samples=20, eval_batch_size=64)
    ref = evaluate_model(model, method, sents, cfg, torch.device("cpu"))
    assert ref["au"] > 0 and ref["mi"] > 0.01
    _assert_same(ref, evaluate_model(model, method, sents, cfg, torch.device("cpu")), rtol=0)
    for other in (replace(cfg, eval_batch_size=1), replace(cfg, eval_batch_size=5)):
        _assert_same(ref, evaluate_model(model, method, sents, other, torch.device("cpu")))


def test_padding_does_not_change_per_sentence_scores():
    """Extra padding after </s> is masked out: the same per-sentence IW-NLL, Rec and q."""
    model, method, sents = _toy(), build_method("vae"), _sentences()
    cfg = EvalConfig(iw_samples=10)
    plain = score_sentences(model, method, sents, cfg, torch.device("cpu"))
    padded = score_sentences(model, method, sents, cfg, torch.device("cpu"), pad_to=30)
    for a, b in ((plain.iw_nll, padded.iw_nll), (plain.rec, padded.rec), (plain.mu, padded.mu)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _shard_with_pid(shard):
    """scoring._score_shard, tagging its scores with the process that computed them."""
    scores = _SCORE_SHARD(shard)
    scores.pid = os.getpid()
    return scores


@pytest.mark.parametrize("decoder", ["skip", "lm"])
def test_scoring_in_worker_processes_gives_every_sentence_its_own_scores(decoder, monkeypatch):
    """eval.workers = 3 scores round-robin shards in 3 forked processes; each sentence keeps its own
    draws, so every per-sentence result equals the one-process result."""
    model, method, sents = _toy(decoder), build_method("vae"), _sentences()
    cfg = EvalConfig(iw_samples=20, eval_batch_size=4)
    one = score_sentences(model, method, sents, cfg, torch.device("cpu"))
    pids, merge = [], scoring._merge_scores
    monkeypatch.setattr(scoring, "_score_shard", _shard_with_pid)
    # the workers merge their own batches too: only the parent's merge of the shards sees tagged parts
    monkeypatch.setattr(scoring, "_merge_scores", lambda parts, shards, n: pids.extend(
        p.pid for p in parts if hasattr(p, "pid")) or merge(parts, shards, n))
    three = score_sentences(model, method, sents, replace(cfg, workers=3), torch.device("cpu"))
    assert len(set(pids)) == 3 and os.getpid() not in pids
    for name in ("n_tokens", "iw_nll", "iw_mc_se", "rec", "mu", "logvar"):
        a, b = getattr(one, name), getattr(three, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_memory_budget_sets_the_samples_per_chunk():
    """S = floor(budget / (targets * V * 4 bytes)), clipped to [1, K]; a large vocabulary with a 1 MB budget
    decodes 500 samples in chunks, with the same numbers as one chunk."""
    assert samples_per_chunk(100, 1000, 1, 500) == 2**20 // (100 * 1000 * 4)
    assert samples_per_chunk(10**6, 10**4, 1, 500) == 1
    assert samples_per_chunk(1, 10, 512, 500) == 500
    vocab = 6000
    model, method, sents = _toy(vocab=vocab), build_method("vae"), _sentences(5, vocab)
    small = EvalConfig(iw_samples=30, mem_budget_mb=1)
    assert samples_per_chunk(sum(len(s) + 1 for s in sents), vocab, 1, 30) < 30
    a = evaluate_model(model, method, sents, small, torch.device("cpu"))
    b = evaluate_model(model, method, sents, replace(small, mem_budget_mb=512), torch.device("cpu"))
    _assert_same(a, b)


def test_lm_nll_is_exact_and_has_no_latent_metrics():
    """For an LM, log p(x) = sum_t log p(x_t | x_<t) exactly: iw_nll = -mean log p(x), ELBO = log p(x)."""
    model, sents = _toy("lm"), _sentences()
    out = evaluate_model(model, build_method("vae"), sents, EvalConfig(), torch.device("cpu"))
    with torch.no_grad():
        exact = -model.log_px_given_z(make_batch(sents, list(range(len(sents)))), None).double()
    assert out["iw_nll"] == pytest.approx(float(exact.mean()), rel=1e-6)
    assert out["elbo"] == pytest.approx(-out["iw_nll"])
    assert out["ppl"] == pytest.approx(math.exp(float(exact.sum()) / sum(len(s) + 1 for s in sents)))
    assert all(out[k] is None for k in ("rec", "kl", "mi", "au", "agg_kl", "au_variances"))


def test_bad_input_is_refused():
    model, method = _toy(), build_method("vae")
    with pytest.raises(ConfigError, match="iw_samples must be >= 1"):
        evaluate_model(model, method, _sentences(), EvalConfig(), torch.device("cpu"), iw_samples=0)
    with pytest.raises(ConfigError, match="no sentences"):
        evaluate_model(model, method, [], EvalConfig(), torch.device("cpu"))


# -- a model trained on a cut of PTB -----------------------------------------------------------------
@pytest.fixture(scope="module")
def ptb_run(tmp_path_factory) -> Path:
    """Preset tiny, 3 epochs on the first 400/100/100 lines of PTB (a few seconds on one thread)."""
    if not PTB.is_dir():
        pytest.skip("../shared/data/ptb is not present")
    from textsvae.training.train import train_run

    root = tmp_path_factory.mktemp("ptb_eval")
    cut = root / "ptb_cut"
    cut.mkdir()
    for split, n in (("train", 400), ("valid", 100), ("test", 100)):
        lines = (PTB / f"{split}.txt").read_text().splitlines()[:n]
        (cut / f"{split}.txt").write_text("\n".join(lines) + "\n")
    config = apply_overrides(preset_config("tiny"), {"data": str(cut), "progress": False, "device": "cpu",
                                                     "monitor_size": 60})
    train_run(config, root / "run")
    return root / "run"


def _test_lines(run_dir: Path) -> list[str]:
    cut = Path(json.loads((run_dir / "config.json").read_text())["data"]["data"])
    return [line for line in (cut / "test.txt").read_text().splitlines() if line.strip()]


def test_eval_json_agrees_with_an_independent_recomputation(ptb_run):
    """From `encode` and `log_px_given_z` alone, with other random numbers:
    KL = mean_n sum_d 0.5 (mu^2 + sigma^2 - log sigma^2 - 1) and AU = #{d: Var_n(mu_nd) >= 0.01} agree exactly;
    MI = mean_n [log q(z_n|x_n) - log (1/N) sum_m q(z_n|x_m)] and
    IW-NLL = mean_n [log K - logsumexp_k (log p(x_n|z_k) + log p(z_k) - log q(z_k|x_n))]
    agree within 5 Monte-Carlo standard errors of the difference; PPL = exp(N * IW-NLL / sum_n (len_n + 1))."""
    import textsvae

    result = CliRunner().invoke(cli, ["eval", str(ptb_run), "--split", "test", "-k", "20", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got == json.loads((ptb_run / "eval_test_k20.json").read_text())
    lines = _test_lines(ptb_run)
    run = textsvae.load_run(ptb_run)
    mu, logvar = (t.double() for t in run.encode(lines))
    n, d = mu.shape
    assert (got["n_sentences"], got["n_tokens"]) == (n, sum(len(s.split()) + 1 for s in lines))

    kl = 0.5 * (mu ** 2 + logvar.exp() - logvar - 1)
    assert got["kl"] == pytest.approx(float(kl.sum(1).mean()), rel=1e-12)
    variances = mu.var(0, unbiased=True)
    assert got["au"] == int((variances >= 0.01).sum())
    torch.testing.assert_close(torch.tensor(got["au_variances"], dtype=torch.float64), variances)

    g = torch.Generator().manual_seed(2024)
    z = mu + (0.5 * logvar).exp() * torch.randn(n, d, generator=g)
    log_q_all = torch.distributions.Normal(mu.unsqueeze(0), (0.5 * logvar).exp().unsqueeze(0)) \
        .log_prob(z.unsqueeze(1)).sum(-1)                                             # (n, m)
    mi_terms = log_q_all.diagonal() - (torch.logsumexp(log_q_all, 1) - math.log(n))
    mi_se = float(mi_terms.std() / math.sqrt(n))
    assert abs(got["mi"] - float(mi_terms.mean())) < 5 * math.sqrt(2) * mi_se + 1e-3

    k = 20
    zk = mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * torch.randn(n, k, d, generator=g)
    log_px = run.log_px_given_z(lines, zk.float()).double()                           # (n, k)
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(zk).sum(-1)
    log_q = torch.distributions.Normal(mu.unsqueeze(1), (0.5 * logvar).exp().unsqueeze(1)).log_prob(zk).sum(-1)
    log_w = log_px + log_prior - log_q
    nll = math.log(k) - torch.logsumexp(log_w, 1)
    w = (log_w - log_w.max(1, keepdim=True).values).exp()
    mc_se = float((w.std(1) / (math.sqrt(k) * w.mean(1))).pow(2).sum().sqrt() / n)
    assert abs(got["iw_nll"] - float(nll.mean())) < 5 * math.sqrt(2) * mc_se + 1e-4
    assert abs(got["rec"] - float(-log_px.mean())) < 5 * float(log_px.mean(1).std() / math.sqrt(n))
    assert got["ppl"] == pytest.approx(math.exp(got["iw_nll"] * n / got["n_tokens"]))
    assert got["elbo"] == pytest.approx(-(got["rec"] + got["kl"]))
    assert got["iw_nll"] <= got["rec"] + got["kl"] + 5 * mc_se
    assert got["iw_samples"] == 20 and got["mi_n"] == n and got["split"] == "test"


def test_api_matches_the_cli_and_keeps_sentence_order(ptb_run):
    """`load_run(...).evaluate` gives the numbers of `eval --json`; encode / log_px_given_z follow the input
    order; log p(x|z) sums log-probabilities of the n words and </s>."""
    import textsvae

    run = textsvae.load_run(ptb_run)
    assert not run.model.training
    api = run.evaluate(split="test", iw_samples=10, save=False)
    cli_out = json.loads(CliRunner().invoke(cli, ["eval", str(ptb_run), "-k", "10", "--json"]).output)
    assert {k: v for k, v in api.items() if k != "seconds"} == {k: v for k, v in cli_out.items() if k != "seconds"}
    for key in ("rec", "kl", "elbo", "iw_nll", "ppl", "mi", "au", "iw_samples", "eval_seed", "au_threshold", "mi_n"):
        assert key in api
    lines = _test_lines(ptb_run)[:6]
    mu, logvar = run.encode(lines)
    mu_r, _ = run.encode(lines[::-1])
    torch.testing.assert_close(mu_r, mu.flip(0))
    lp = run.log_px_given_z(lines, mu)
    assert lp.shape == (6,)
    ids = run.tokenize(lines[:1])
    with torch.no_grad():
        logits = run.model.logits_for(make_batch(ids, [0]), mu[:1])[0]               # (T, V)
    targets = ids[0] + [2]
    by_hand = torch.log_softmax(logits, -1)[torch.arange(len(targets)), targets].sum()
    assert float(lp[0]) == pytest.approx(float(by_hand), rel=1e-5)
    sub = run.evaluate(sentences=lines, iw_samples=5)
    assert sub["n_sentences"] == 6 and sub["split"] == "sentences"
    assert not (ptb_run / "eval_sentences_k5.json").exists()


def test_validation_mi_and_au_use_the_same_functions(ptb_run):
    """Per-epoch validation's MI and AU on the first `monitor_size` valid sentences equal evaluation's on
    that subset with one sample per sentence (same q, same generator seed eval_seed + 1, split order)."""
    from dataclasses import replace

    from textsvae.evaluation.run_eval import load_model, split_sentences
    from textsvae.training.validation import validation_metrics

    model, method, config, vocab, dev = load_model(ptb_run, "cpu")
    valid = split_sentences(config, vocab, "valid")
    monitor = config.train.monitor_size
    val = validation_metrics(model, method, valid, config, dev)
    ev = evaluate_model(model, method, valid[:monitor], replace(config.eval, mi_samples=1), dev, iw_samples=1)
    assert val["au"] == ev["au"] and val["monitor_size"] == ev["mi_n"] == monitor
    assert val["mi"] == pytest.approx(ev["mi"], abs=1e-6)


def test_eval_cli_reports_mi_with_its_se_and_he_et_al_minibatch_mi(ptb_run):
    """`eval --mi-batch 32`: MI over the split with a Monte-Carlo SE, and He et al.'s per-minibatch MI over
    their one-length batches, which cannot exceed those batches' ceiling sum_b |b|/N log |b|."""
    from textsvae.evaluation.run_eval import load_model, split_sentences
    from textsvae.kernels.metrics import length_batches

    result = CliRunner().invoke(cli, ["eval", str(ptb_run), "--split", "test", "-k", "2", "--mi-batch", "32",
                                      "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    _, _, config, vocab, _ = load_model(ptb_run, "cpu")
    lengths = [len(s) for s in split_sentences(config, vocab, "test")]
    batches = length_batches(lengths, 32)
    ceiling = sum(len(b) * math.log(len(b)) for b in batches) / len(lengths)
    assert out["mi_samples"] == 64 and 0 < out["mi_se"] < 0.05
    assert out["mi_minibatch"] <= ceiling + 1e-9 < math.log(len(lengths))
    assert len(batches) > len(lengths) / 32                       # more batches than runs of 32 in file order


def test_eval_precision_override_is_saved_beside_the_runs_own_evaluation(ptb_run):
    """--precision bf16 on an fp32 run: the same model in bf16 autocast, in its own file, close to fp32;
    a CPU without bf16 LSTM kernels refuses it in one line."""
    from textsvae.kernels.device import cpu_lstm_runs_in

    runner = CliRunner()
    own = json.loads(runner.invoke(cli, ["eval", str(ptb_run), "-k", "5", "--precision", "fp32", "--json"]).output)
    assert own["eval_precision"] == "fp32" and (ptb_run / "eval_test_k5.json").is_file()   # the run's own precision
    result = runner.invoke(cli, ["eval", str(ptb_run), "-k", "5", "--precision", "bf16", "--json"])
    if not cpu_lstm_runs_in("bf16"):
        assert result.exit_code == 2 and "precision=bf16 cannot run on this CPU" in result.output
        assert len(result.output.strip().splitlines()) == 1
        return
    bf16 = json.loads(result.output)
    assert bf16["eval_precision"] == "bf16"
    assert json.loads((ptb_run / "eval_test_k5_bf16.json").read_text())["iw_nll"] == bf16["iw_nll"]
    assert json.loads((ptb_run / "eval_test_k5.json").read_text())["iw_nll"] == own["iw_nll"]   # left alone
    assert bf16["iw_nll"] != own["iw_nll"] and abs(bf16["iw_nll"] - own["iw_nll"]) < 0.05   # nats of ~146


def test_cli_errors_are_one_line(ptb_run, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli, ["eval", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "run folder not found" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    bad_k = runner.invoke(cli, ["eval", str(ptb_run), "-k", "0"])
    assert bad_k.exit_code == 2 and "iw_samples must be >= 1" in bad_k.output
    bad_split = runner.invoke(cli, ["eval", str(ptb_run), "--split", "train"])
    assert bad_split.exit_code == 2 and "Traceback" not in bad_split.output


def test_import_textsvae_stays_light():
    """`import textsvae` does not import torch; `textsvae.load_run` resolves lazily."""
    code = "import sys, textsvae; assert 'torch' not in sys.modules; assert callable(textsvae.load_run)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("decoder", ["skip", "lm"])
def test_scoring_no_sentences_is_a_config_error(decoder):
    with pytest.raises(ConfigError, match="no sentences to evaluate"):
        score_sentences(_toy(decoder), build_method("vae"), [], EvalConfig(iw_samples=5), torch.device("cpu"))
