"""Generation from a trained run (issue 17): `textsvae sample | reconstruct | interpolate | encode | plot-latent`
and the matching `Run` methods, on a tiny synthetic VAE and a tiny LM trained once per module."""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner, Result

import textsvae
from textsvae.cli import DECODE_OPTIONS, cli
from textsvae.core.config import apply_overrides, preset_config
from textsvae.inference.generate import count_unknown, interpolation_z, posterior_z, prior_z
from textsvae.model.decoding import DecodeOptions
from textsvae.training.train import train_run

SHORT = ["--max-len", "12"]          # every decoding here stops after 12 words: fast and enough to compare
PNG = b"\x89PNG\r\n\x1a\n"


def _train(root: Path, decoder: str) -> Path:
    config = apply_overrides(preset_config("tiny"), {"data": "synthetic", "synthetic_train": 400, "epochs": 2,
                                                     "decoder": decoder, "threads": 1, "progress": False,
                                                     "device": "cpu"})
    train_run(config, root / decoder)
    return root / decoder


@pytest.fixture(scope="module")
def vae(tmp_path_factory) -> Path:
    """Preset tiny, standard decoder, 2 epochs on 400 synthetic sentences (labelled by topic)."""
    return _train(tmp_path_factory.mktemp("generate"), "standard")


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("generate_lm"), "lm")


@pytest.fixture(scope="module")
def run(vae):
    return textsvae.load_run(vae, "cpu")


@pytest.fixture(scope="module")
def test_lines(run) -> list[str]:
    return run.latents(split="test").text.tolist()


def invoke(*args) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.stdout


# -- the options ---------------------------------------------------------------------------------------
def test_cli_decode_defaults_are_decode_options_defaults():
    """The click options carry DecodeOptions' field names and defaults (the CLI cannot import torch to read them)."""
    names = {}
    for option in DECODE_OPTIONS:
        @option
        def f(**kwargs):
            pass
        param = f.__click_params__[0]
        names[param.name] = param.default
    assert names == {f.name: f.default for f in fields(DecodeOptions)}


# -- sample ----------------------------------------------------------------------------------------------
def test_sample_prints_n_lines_and_json_lines(vae, run):
    lines = run.sample(3, max_len=12)
    assert ok("sample", vae, "-n", 3, *SHORT).splitlines() == lines         # one code path
    rows = [json.loads(line) for line in ok("sample", vae, "-n", 3, "--json", *SHORT).splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["text"] for r in rows] == lines
    assert all(len(r["text"].split()) <= 12 for r in rows)


def test_sample_is_reproducible_under_seed_and_differs_with_another(vae):
    args = ["sample", vae, "-n", 4, "--decode", "sample", *SHORT]
    first = ok(*args, "--seed", 3)
    assert ok(*args, "--seed", 3) == first
    assert ok(*args, "--seed", 4) != first


def test_prior_draws_follow_the_seed():
    """prior_z(n, D, seed) is randn(n, D) from a generator seeded with seed."""
    cpu = torch.device("cpu")
    assert torch.equal(prior_z(5, 8, 0, cpu), torch.randn(5, 8, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(prior_z(5, 8, 0, cpu), prior_z(5, 8, 1, cpu))


def test_an_lm_samples_without_z(lm):
    lines = ok("sample", lm, "-n", 3, "--decode", "sample", *SHORT).splitlines()
    assert lines == textsvae.load_run(lm, "cpu").sample(3, strategy="sample", max_len=12)
    assert len(set(lines)) == 3                                            # one independent draw per row
    assert ok("sample", lm, "-n", 3, "--decode", "sample", "--seed", 1, *SHORT).splitlines() != lines


# -- reconstruct -----------------------------------------------------------------------------------------
def test_reconstruct_gives_samples_per_input(vae, run, test_lines):
    a, b = test_lines[:2]
    text = ok("reconstruct", vae, a, b, "--z", "sample", "--samples", 3, *SHORT).splitlines()
    assert [line[:2] for line in text] == ["> "] + ["= "] * 3 + ["> "] + ["= "] * 3
    assert text[0] == f"> {a}" and text[4] == f"> {b}"
    rows = [json.loads(line) for line in ok("reconstruct", vae, a, b, "--z", "sample", "--json", *SHORT).splitlines()]
    assert [r["input"] for r in rows] == [a, b]
    assert [len(r["reconstructions"]) for r in rows] == [3, 3]           # --z sample: 3 by default
    assert rows[0]["reconstructions"] == run.reconstruct([a, b], z="sample", samples=3, max_len=12)[0]
    mean = [json.loads(line) for line in ok("reconstruct", vae, a, "--json", *SHORT).splitlines()]
    assert mean[0]["reconstructions"] == run.reconstruct([a], max_len=12)[0]   # the mean, greedily: one sentence
    assert len(mean[0]["reconstructions"]) == 1


def test_reconstruct_reads_a_file_or_a_split(vae, tmp_path, test_lines):
    path = tmp_path / "in.txt"
    path.write_text(f"3\t{test_lines[0]}\n\n{test_lines[1]}\n")
    rows = [json.loads(line) for line in ok("reconstruct", vae, "--file", path, "--json", *SHORT).splitlines()]
    assert [r["input"] for r in rows] == test_lines[:2]                 # label split off, blank line skipped
    split = ok("reconstruct", vae, "--split", "test", "-n", 4, *SHORT).splitlines()
    assert [line for line in split if line.startswith("> ")] == [f"> {t}" for t in test_lines[:4]]


def test_posterior_draws_keep_each_sentence_together():
    """Mode mean repeats mu exactly; mode sample gives mu + sigma * eps, reproducible under the seed."""
    mu, logvar = torch.randn(3, 4), torch.full((3, 4), -20.0)            # sigma = e^-10: draws sit on mu
    assert torch.equal(posterior_z(mu, logvar, "mean", 2, 0), mu.repeat_interleave(2, 0))
    drawn = posterior_z(mu, logvar, "sample", 2, 0)
    torch.testing.assert_close(drawn, mu.repeat_interleave(2, 0), atol=1e-3, rtol=0)
    assert torch.equal(drawn, posterior_z(mu, logvar, "sample", 2, 0))
    eps = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0))    # (N, S, D)
    wide = posterior_z(mu, torch.full((3, 4), math.log(4.0)), "sample", 2, 0)   # sigma = 2
    torch.testing.assert_close(wide, (mu.unsqueeze(1) + 2 * eps).reshape(6, 4))
    assert not torch.equal(wide, posterior_z(mu, torch.full((3, 4), math.log(4.0)), "sample", 2, 1))


def test_unknown_words_are_counted_in_one_warning(vae, run, caplog):
    caplog.set_level(logging.WARNING, logger="textsvae")
    known = run.vocab.tokens[10]
    ok("reconstruct", vae, f"{known} zzqx <unk> qqzx", f"xxzq {known}", *SHORT)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["3 words outside the vocabulary were read as <unk>"]   # a written <unk> is not counted
    assert count_unknown(run.vocab, [f"{known} zzqx"]) == 1 and count_unknown(run.vocab, [known]) == 0


def test_the_unknown_word_warning_is_one_stderr_line_of_the_command(vae):
    """The real command, not CliRunner: the warning reaches stderr through the CLI's logging set-up."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "textsvae.cli", "reconstruct", str(vae), "zzqx qqzx",
                             "--device", "cpu", *SHORT], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["2 words outside the vocabulary were read as <unk>"]
    text = result.stdout.splitlines()
    assert len(text) == 2 and text[0] == "> zzqx qqzx" and text[1].startswith("= ")


# -- interpolate -----------------------------------------------------------------------------------------
def test_interpolation_z_has_the_endpoints_exactly():
    z_a, z_b = torch.randn(8), torch.randn(8)
    z = interpolation_z(z_a, z_b, [0.0, 0.25, 1.0])
    assert torch.equal(z[0], z_a) and torch.equal(z[-1], z_b)
    torch.testing.assert_close(z[1], 0.75 * z_a + 0.25 * z_b)


def test_interpolation_endpoints_are_the_mean_reconstructions(vae, run, test_lines, monkeypatch):
    """t = 0 decodes exactly z = mu_A (what `reconstruct` decodes for A), t = 1 exactly mu_B; so the sentences agree."""
    import textsvae.inference.generate as generate

    a, b = test_lines[0], test_lines[7]
    seen = []
    real = generate.decode
    monkeypatch.setattr(generate, "decode", lambda model, z, *rest, **kw: seen.append(z) or real(model, z, *rest, **kw))
    rows = run.interpolate(a, b, steps=5, max_len=12)
    recon = run.reconstruct([a, b], max_len=12)
    assert torch.equal(seen[0][0], seen[1][0]) and torch.equal(seen[0][-1], seen[1][1])
    assert [t for t, _ in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert (rows[0][1], rows[-1][1]) == (recon[0][0], recon[1][0])
    monkeypatch.undo()
    lines = ok("interpolate", vae, a, b, "--steps", 5, *SHORT).splitlines()
    assert lines == [f"{t:.3f}  {text}" for t, text in rows]
    parsed = [json.loads(line) for line in ok("interpolate", vae, a, b, "--steps", 3, "--json", *SHORT).splitlines()]
    assert [p["t"] for p in parsed] == [0.0, 0.5, 1.0]


def test_interpolation_between_prior_draws_needs_no_sentences(vae, run):
    lines = ok("interpolate", vae, "--prior", "--steps", 4, "--seed", 2, *SHORT).splitlines()
    assert len(lines) == 4 and lines[0].startswith("0.000  ") and lines[-1].startswith("1.000  ")
    assert [text for _, text in run.interpolate(prior=True, steps=4, seed=2, max_len=12)] == \
        [line.split("  ", 1)[1] for line in lines]


# -- encode and plot-latent --------------------------------------------------------------------------------
def test_encode_writes_parquet_rows_equal_to_run_encode(vae, run, tmp_path):
    out = tmp_path / "sub" / "latents.parquet"
    assert ok("encode", vae, "--split", "test", "-o", out).strip() == f"wrote {out} (40 rows)"
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["text", "label", "mu", "logvar"]
    assert len(frame) == 40 and frame.label.notna().all()                 # the synthetic corpus has topic labels
    mu, logvar = run.encode(frame.text.tolist())
    assert torch.equal(torch.tensor(frame.mu.map(list).tolist(), dtype=torch.float32), mu)
    assert torch.equal(torch.tensor(frame.logvar.map(list).tolist(), dtype=torch.float32), logvar)
    assert [p.name for p in out.parent.iterdir()] == ["latents.parquet"]  # written atomically: no temp left


def test_encode_a_file_keeps_its_labels(vae, tmp_path, test_lines):
    path = tmp_path / "in.txt"
    path.write_text(f"x\t{test_lines[0]}\n{test_lines[1]}\n")
    ok("encode", vae, "--file", path, "-o", tmp_path / "l.parquet")
    frame = pd.read_parquet(tmp_path / "l.parquet")
    assert frame.text.tolist() == test_lines[:2]
    assert frame.label[0] == "x" and pd.isna(frame.label[1])               # a null in the file
    assert textsvae.load_run(vae).latents(sentences=test_lines[:1]).label.tolist() == [None]


def test_plot_latent_writes_a_png(vae, tmp_path):
    out = tmp_path / "latent.png"
    assert ok("plot-latent", vae, "--split", "test", "-o", out).strip() == f"wrote {out}"
    assert out.read_bytes()[:8] == PNG


# -- bad input ---------------------------------------------------------------------------------------------
BAD = [
    ("not a run", ["sample", "{tmp}"], "{tmp} holds no run (no config.json)"),
    ("no such folder", ["sample", "{tmp}/nope"], "run folder not found: {tmp}/nope"),
    ("-n 0", ["sample", "{vae}", "-n", "0"], "n must be >= 1, got 0"),
    ("split -n 0", ["reconstruct", "{vae}", "--split", "test", "-n", "0"], "n must be >= 1, got 0"),
    ("--steps 1", ["interpolate", "{vae}", "a", "b", "--steps", "1"], "steps must be >= 2, got 1"),
    ("--beam-size 0", ["sample", "{vae}", "--decode", "beam", "--beam-size", "0"], "beam size must be >= 1, got 0"),
    ("--temperature 0", ["sample", "{vae}", "--decode", "sample", "--temperature", "0"], "temperature must be > 0"),
    ("--temperature -1", ["sample", "{vae}", "--temperature", "-1"], "temperature must be > 0"),
    ("--top-p 0", ["sample", "{vae}", "--top-p", "0"], "top-p must be in (0, 1], got 0.0"),
    ("--top-p 1.5", ["reconstruct", "{vae}", "x", "--top-p", "1.5"], "top-p must be in (0, 1], got 1.5"),
    ("--max-len 0", ["sample", "{vae}", "--max-len", "0"], "max-len must be >= 1, got 0"),
    ("unknown --decode", ["sample", "{vae}", "--decode", "top"], "decode must be one of greedy, beam, sample"),
    ("empty sentence", ["reconstruct", "{vae}", "  "], "sentence 1 is empty"),
    ("empty interpolation end", ["interpolate", "{vae}", "zzqx", ""], "sentence 2 is empty"),
    ("--z sample --decode beam", ["reconstruct", "{vae}", "zzqx", "--z", "sample", "--decode", "beam"],
     "--z sample takes --decode greedy or sample"),
    ("--samples 0", ["reconstruct", "{vae}", "zzqx", "--samples", "0"], "samples must be >= 1, got 0"),
    ("repeats of the greedy mean", ["reconstruct", "{vae}", "zzqx", "--samples", "3"],
     "3 samples of z = mean need --decode sample"),
    ("reconstruct without sentences", ["reconstruct", "{vae}"], "give sentences, --file F or --split SPLIT"),
    ("reconstruct with two sources", ["reconstruct", "{vae}", "a", "--split", "test"],
     "give one of sentences, --file or --split, not sentences and --split"),
    ("interpolate one sentence", ["interpolate", "{vae}", "a"], "interpolate needs two sentences A and B (or --prior)"),
    ("--prior with sentences", ["interpolate", "{vae}", "a", "b", "--prior"],
     "--prior interpolates between two prior draws; give no sentences"),
    ("encode --split and --file", ["encode", "{vae}", "--split", "test", "--file", "{tmp}/x", "-o", "{tmp}/o"],
     "give --split or --file, not both"),
    ("lm reconstruct", ["reconstruct", "{lm}", "a b"], "an LSTM language model has no encoder: reconstruct"),
    ("lm reconstruct --split", ["reconstruct", "{lm}", "--split", "test"],
     "an LSTM language model has no encoder: reconstruct"),
    ("lm interpolate", ["interpolate", "{lm}", "a", "b"], "an LSTM language model has no encoder: interpolate"),
    ("lm interpolate --prior", ["interpolate", "{lm}", "--prior"], "an LSTM language model has no encoder"),
    ("lm encode", ["encode", "{lm}", "-o", "{tmp}/o.parquet"], "an LSTM language model has no encoder: encode"),
    ("lm plot-latent", ["plot-latent", "{lm}", "-o", "{tmp}/o.png"],
     "an LSTM language model has no encoder: plot-latent"),
    ("missing --file", ["reconstruct", "{vae}", "--file", "{tmp}/none.txt"], "file not found: {tmp}/none.txt"),
    ("encode missing --file", ["encode", "{vae}", "--file", "{tmp}/none.txt", "-o", "{tmp}/o.parquet"],
     "file not found: {tmp}/none.txt"),
    ("blank --file", ["reconstruct", "{vae}", "--file", "{tmp}/blank.txt"], "{tmp}/blank.txt has no non-blank lines"),
]


@pytest.mark.parametrize("args, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_is_one_line_and_non_zero(args, message, vae, lm, tmp_path, caplog):
    (tmp_path / "blank.txt").write_text("\n  \n")
    fill = {"tmp": tmp_path, "vae": vae, "lm": lm}
    result = invoke(*[a.format(**fill) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"Error: {message.format(**fill)}"), result.stderr
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]   # no warning line before the error
