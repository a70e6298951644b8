"""Bad input to the CLI gives a one-line error and a non-zero exit code, never a traceback (issue 7).

One table: each case builds its inputs under a temporary folder, runs `textsvae ...` through
click's CliRunner and checks the exit code and the message. `usage` cases are click's own
argument errors (Usage/Try lines, then one `Error:` line); every other case prints exactly one line.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from click.testing import CliRunner

from textsvae.cli import cli
from textsvae.core.config import apply_overrides, preset_config
from textsvae.training.train import train_run

FLAGS = ["--set", "threads=1", "--set", "progress=false"]
TINY = ["--set", "synthetic_train=200", "--epochs", "1", *FLAGS]


@dataclass
class Case:
    id: str
    args: list[str]                     # {tmp}, {run} (a finished tiny run), {corpus} (a good corpus) filled in
    message: str                        # the one Error line starts with "Error: " + this (after filling in)
    code: int = 2
    setup: Callable[[Path], None] | None = None
    usage: bool = False                 # click's own usage error (three lines before the Error line)
    contains: bool = False              # message is a part of the line rather than its start
    check: Callable[[Path], None] | None = field(default=None, repr=False)


# -- set-up helpers -------------------------------------------------------------------------------

def corpus(tmp: Path, train: bytes = b"a b c\nb c d\n", valid: bytes | None = b"a b\n",
           test: bytes = b"c d\n", name: str = "c") -> Path:
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    for split, data in (("train", train), ("valid", valid), ("test", test)):
        if data is not None:
            (folder / f"{split}.txt").write_bytes(data)
    return folder


def edit_json(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def swap_two_words(vocab: dict) -> None:
    t = vocab["tokens"]
    t[4], t[5] = t[5], t[4]


def set_latent_dim(config: dict) -> None:
    config["model"]["latent_dim"] = 4


def set_lr(config: dict) -> None:
    config["train"]["lr"] = 0.5


def truncate_last(tmp: Path) -> None:
    p = tmp / "run" / "last.pt"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


SNAPSHOTS: dict[Path, dict] = {}


def remember(tmp: Path) -> None:
    SNAPSHOTS[tmp] = snapshot(tmp / "run")


def unchanged(tmp: Path) -> None:
    assert snapshot(tmp / "run") == SNAPSHOTS.pop(tmp)


BAD_PLUGIN = "raise RuntimeError('boom')\n"

CASES = [
    # -- methods, presets, settings ---------------------------------------------------------------
    Case("unknown method", ["train", "--method", "nope", *TINY], "unknown method 'nope'; valid methods: "),
    Case("unknown method parameter", ["train", "-p", "nope=1", *TINY],
         "unknown parameter 'nope' for method 'vae'; valid parameters: (none)"),
    Case("-p without =", ["train", "-p", "nope", *TINY], "-p expects key=value, got 'nope'"),
    Case("unknown preset", ["train", "--preset", "huge", *TINY], "unknown preset 'huge'; valid presets: tiny, ptb, yahoo"),
    Case("unknown --set field", ["train", "--set", "nope=1", *TINY], "unknown setting 'nope'; valid settings: "),
    Case("unknown --set section", ["train", "--set", "model.lr=1", *TINY], "unknown setting 'model.lr'; valid settings: "),
    Case("--set without =", ["train", "--set", "lr", *TINY], "--set expects key=value, got 'lr'"),
    Case("--set bad type", ["train", "--set", "lr=fast", *TINY], "bad value 'fast' for lr: expected float"),
    Case("--set bad bool", ["train", *TINY, "--set", "progress=maybe"], "bad value 'maybe' for progress: expected bool"),
    Case("--set method_params not a dict", ["train", "--set", "method_params=[1]", *TINY],
         "bad value '[1]' for method_params: expected dict"),
    Case("negative epochs", ["train", *TINY, "--epochs", "-1"], "epochs must be >= 1, got -1"),
    Case("zero epochs", ["train", *TINY, "--epochs", "0"], "epochs must be >= 1, got 0"),
    Case("dropout = 1", ["train", "--set", "dropout_in=1", *TINY], "dropout_in must be in [0, 1), got 1.0"),
    Case("negative dropout", ["train", "--set", "dropout_out=-0.1", *TINY], "dropout_out must be in [0, 1), got -0.1"),
    Case("NaN dropout", ["train", "--set", "dropout_out=nan", *TINY], "dropout_out must be in [0, 1), got nan"),
    Case("lr = 0", ["train", "--set", "lr=0", *TINY], "lr must be finite and > 0, got 0.0"),
    Case("lr = inf", ["train", "--set", "lr=inf", *TINY], "lr must be finite and > 0, got inf"),
    Case("batch_size = 0", ["train", "--set", "batch_size=0", *TINY], "batch_size must be >= 1, got 0"),
    Case("negative seed", ["train", "--seed", "-1", *TINY], "seed must be in [0, 2**32), got -1"),
    Case("huge seed", ["train", "--seed", str(2**70), *TINY], f"seed must be in [0, 2**32), got {2**70}"),
    Case("threads = 0", ["train", *TINY, "--set", "threads=0"], "threads must be >= 1, got 0"),
    Case("fp16 training", ["train", "--set", "precision=fp16", *TINY],
         "precision must be one of fp32, bf16 (fp16 training would need loss scaling), got 'fp16'"),
    Case("unknown eval precision", ["train", "--set", "eval_precision=fp8", *TINY],
         "eval_precision must be one of fp32, bf16, fp16, got 'fp8'"),
    Case("eval workers = 0", ["train", *TINY, "--set", "workers=0"], "workers must be >= 1, got 0"),
    Case("eval --workers 0", ["eval", "{tmp}/run", "--workers", "0"], "workers must be >= 1, got 0"),
    Case("eval plugin file missing", ["eval", "{tmp}/run", "--plugin", "{tmp}/none.py"],
         "plugin file not found: {tmp}/none.py"),
    Case("max_len = 0", ["train", "--set", "max_len=0", *TINY], "max_len must be >= 1, got 0"),
    Case("unknown tokenizer", ["train", "--set", "tokenizer=bpe", *TINY],
         "tokenizer must be 'word' or 'sentencepiece', got 'bpe'"),
    Case("unknown device", ["train", "--device", "tpu", *TINY],
         "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or another torch device, got 'tpu'"),
    Case("CUDA device without CUDA", ["train", "--device", "cuda", *TINY],
         "device 'cuda' requested but CUDA is not available"),
    Case("bad --decoder choice", ["train", "--decoder", "gru", *TINY], "Invalid value for '--decoder'",
         usage=True, contains=True),
    Case("non-integer --epochs", ["train", "--epochs", "x"], "Invalid value for '--epochs'", usage=True, contains=True),
    Case("unknown option", ["train", "--nope"], "No such option", usage=True, contains=True),
    Case("unknown command", ["trian"], "No such command 'trian'", usage=True, contains=True),
    Case("config: unknown preset", ["config", "--preset", "huge"], "unknown preset 'huge'; valid presets: tiny, ptb, yahoo"),
    Case("plugin file missing", ["train", "--plugin", "{tmp}/none.py", *TINY], "plugin file not found: {tmp}/none.py"),
    Case("plugin raises on import", ["train", "--plugin", "{tmp}/bad_plugin.py", *TINY],
         "plugin {tmp}/bad_plugin.py failed to import: RuntimeError: boom",
         setup=lambda t: (t / "bad_plugin.py").write_text(BAD_PLUGIN)),
    # -- corpora ------------------------------------------------------------------------------------
    Case("corpus folder missing", ["train", "--data", "{tmp}/nope", *FLAGS], "corpus folder not found: {tmp}/nope"),
    Case("--data is a file", ["train", "--data", "{tmp}/c/train.txt", *FLAGS],
         "--data must be a folder of train/valid/test files, got a file: {tmp}/c/train.txt", setup=corpus),
    Case("named corpus not installed", ["train", "--data", "ptb", "--data-dir", "{tmp}", *FLAGS],
         "corpus 'ptb' is not installed in {tmp}; run `textsvae data fetch ptb` (add `--from DIR`"),
    Case("missing split", ["train", "--data", "{tmp}/c", *FLAGS],
         "corpus {tmp}/c has no 'valid' split (looked for valid/val/validation/dev.txt and NAME.valid.txt)",
         setup=lambda t: corpus(t, valid=None)),
    Case("empty corpus file", ["train", "--data", "{tmp}/c", *FLAGS], "corpus file is empty: {tmp}/c/test.txt",
         setup=lambda t: corpus(t, test=b"")),
    Case("only blank lines", ["train", "--data", "{tmp}/c", *FLAGS],
         "the 'train' split of {tmp}/c has no non-blank lines", setup=lambda t: corpus(t, train=b"\n \n\t\n")),
    Case("undecodable bytes", ["train", "--data", "{tmp}/c", *FLAGS],
         "corpus file {tmp}/c/valid.txt is not valid UTF-8 (line 2, byte 3 of the line: b'\\xff\\xfeok')",
         setup=lambda t: corpus(t, valid=b"a b\nab\xff\xfeok\n")),
    Case("every line over max_len, drop", ["train", "--data", "{tmp}/c", "--set", "max_len=1",
                                           "--set", "long_lines=drop", *FLAGS],
         "every line of the 'train' split is longer than max_len=1 and long_lines=drop", setup=corpus),
    # -- run folders ------------------------------------------------------------------------------
    Case("output folder holds a run", ["train", *TINY, "-o", "{tmp}/run"],
         "{tmp}/run already holds a run; use --resume to continue it or --force to overwrite it",
         setup=remember, check=unchanged),
    Case("output folder under a file", ["train", *TINY, "-o", "{tmp}/c/train.txt/run"],
         "Not a directory: {tmp}/c/train.txt/run", code=1, setup=corpus),
    Case("output folder is a file", ["train", *TINY, "-o", "{tmp}/c/train.txt"],
         "Invalid value for '-o' / '--out': Directory '{tmp}/c/train.txt' is a file.", usage=True, setup=corpus),
    Case("--resume with other options", ["train", "--resume", "{tmp}/run", "--epochs", "3"],
         "--resume continues a run with its saved config; drop --epochs"),
    Case("--resume of a folder without a run", ["train", "--resume", "{tmp}/empty"],
         "{tmp}/empty holds no run (no config.json)", setup=lambda t: (t / "empty").mkdir()),
    Case("--resume: truncated checkpoint", ["train", "--resume", "{tmp}/run"],
         "checkpoint {tmp}/run/last.pt is corrupt or truncated", contains=False, setup=truncate_last),
    Case("--resume: garbage checkpoint", ["train", "--resume", "{tmp}/run"],
         "checkpoint {tmp}/run/last.pt is corrupt or truncated",
         setup=lambda t: (t / "run" / "last.pt").write_bytes(b"not a checkpoint")),
    Case("--resume: empty checkpoint", ["train", "--resume", "{tmp}/run"],
         "checkpoint {tmp}/run/last.pt is corrupt or truncated",
         setup=lambda t: (t / "run" / "last.pt").write_bytes(b"")),
    Case("--resume: best.pt as last.pt", ["train", "--resume", "{tmp}/run"],
         "checkpoint {tmp}/run/last.pt is not a full training checkpoint",
         setup=lambda t: shutil.copy(t / "run" / "best.pt", t / "run" / "last.pt")),
    Case("--resume: another vocabulary, same size", ["train", "--resume", "{tmp}/run"],
         "checkpoint {tmp}/run/last.pt was trained with another vocabulary than {tmp}/run/vocab.json",
         setup=lambda t: edit_json(t / "run" / "vocab.json", swap_two_words)),
    Case("--resume: another vocabulary size", ["train", "--resume", "{tmp}/run"],
         "checkpoint {tmp}/run/last.pt has vocabulary size ",
         setup=lambda t: edit_json(t / "run" / "vocab.json", lambda v: v["tokens"].append("extra"))),
    Case("--resume: another model config", ["train", "--resume", "{tmp}/run"],
         "checkpoint {tmp}/run/last.pt was written with another config than {tmp}/run/config.json "
         "(differs in: model.latent_dim)", setup=lambda t: edit_json(t / "run" / "config.json", set_latent_dim)),
    Case("--resume: another training config", ["train", "--resume", "{tmp}/run"],
         "checkpoint {tmp}/run/last.pt was written with another config than {tmp}/run/config.json "
         "(differs in: train.lr)", setup=lambda t: edit_json(t / "run" / "config.json", set_lr)),
    Case("--resume: config.json unreadable", ["train", "--resume", "{tmp}/run"],
         "{tmp}/run/config.json is unreadable (JSONDecodeError)",
         setup=lambda t: (t / "run" / "config.json").write_text('{"model": {')),
    Case("--resume: config.json bad value", ["train", "--resume", "{tmp}/run"],
         "{tmp}/run/config.json: epochs must be >= 1, got 0",
         setup=lambda t: edit_json(t / "run" / "config.json", lambda c: c["train"].update(epochs=0))),
    Case("--resume: config.json unknown key", ["train", "--resume", "{tmp}/run"],
         "{tmp}/run/config.json: unknown config key(s) ['nope'] in section 'train'",
         setup=lambda t: edit_json(t / "run" / "config.json", lambda c: c["train"].update(nope=1))),
    Case("--resume: vocab.json missing", ["train", "--resume", "{tmp}/run"],
         "{tmp}/run has no readable tokenizer (vocab.json / spm.model): FileNotFoundError",
         setup=lambda t: (t / "run" / "vocab.json").unlink()),
    # -- data fetch -------------------------------------------------------------------------------
    Case("fetch: unknown corpus", ["data", "fetch", "nope", "--data-dir", "{tmp}"],
         "unknown corpus 'nope'; known corpora: ptb, yahoo, yelp"),
    Case("fetch: --from missing", ["data", "fetch", "ptb", "--from", "{tmp}/none", "--data-dir", "{tmp}/d"],
         "--from must be a folder or a URL, got {tmp}/none"),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    config = apply_overrides(preset_config("tiny"), {"data": "synthetic", "synthetic_train": 200, "epochs": 1,
                                                      "threads": 1, "progress": False})
    train_run(config, run)
    return run


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_non_zero(case: Case, tmp_path: Path, finished_run: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)                     # a case that wrongly trains writes runs/ here
    if case.id == "CUDA device without CUDA" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    shutil.copytree(finished_run, tmp_path / "run")
    if case.setup:
        case.setup(tmp_path)
    args = [a.format(tmp=tmp_path) for a in case.args]
    result = CliRunner().invoke(cli, args)
    output = result.output
    assert "Traceback" not in output
    assert result.exit_code == case.code, output
    lines = output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, output
    if not case.usage:
        assert lines == errors, output               # nothing but the one line
    expected = case.message.format(tmp=tmp_path)
    if case.contains:
        assert expected in errors[0]
    else:
        assert errors[0].startswith(f"Error: {expected}"), errors[0]
    if case.check:
        case.check(tmp_path)


def test_force_replaces_a_run(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "eval_test_k500.json").write_text("{}")               # an evaluation of the old run
    (run / ".last.pt.abc.tmp").write_bytes(b"torn")               # a temporary left by a kill
    (run / "notes.txt").write_text("mine")                        # not the suite's: kept
    result = CliRunner().invoke(cli, ["train", *TINY, "--seed", "1", "-o", str(run), "--force"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 1
    assert not (run / "eval_test_k500.json").exists() and not (run / ".last.pt.abc.tmp").exists()
    assert (run / "notes.txt").read_text() == "mine"


def test_a_one_megabyte_line_trains_with_max_len(tmp_path):
    """No crash on an absurdly long line: max_len truncates it (or drops it)."""
    folder = corpus(tmp_path, train=b"a b c\n" * 20 + b"w " * 500_000 + b"\n" + b"b c a\n" * 20)
    for mode in ("truncate", "drop"):
        result = CliRunner().invoke(cli, ["train", "--data", str(folder), "--set", "max_len=20", "--set",
                                          f"long_lines={mode}", "--epochs", "1", *FLAGS, "-o", str(tmp_path / mode)])
        assert result.exit_code == 0, result.output
        row = json.loads((tmp_path / mode / "log.jsonl").read_text())
        assert row["train_sentences"] == (41 if mode == "truncate" else 40)
