"""`textsvae data fetch`: install a corpus from a local copy with digest checks."""
from __future__ import annotations

import hashlib
import shutil

import pytest
from click.testing import CliRunner

from textsvae.cli import cli
from textsvae.core.config import DataConfig
from textsvae.data import load_corpus
from textsvae.data.fetch import SOURCES, digest_of


@pytest.fixture
def ptb_copy(ptb_dir):
    return ptb_dir


def fetch(*args):
    return CliRunner().invoke(cli, ["data", "fetch", *args])


def test_fetch_ptb_from_a_local_copy(tmp_path, ptb_copy):
    data_dir = tmp_path / "data"
    result = fetch("ptb", "--from", str(ptb_copy), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(data_dir / "ptb")
    for name in ("train.txt", "valid.txt", "test.txt"):
        installed = (data_dir / "ptb" / name).read_bytes()
        assert installed == (ptb_copy / name).read_bytes()
        expected = next(r.digest for r in SOURCES["ptb"] if r.name == name)
        assert f"sha256:{hashlib.sha256(installed).hexdigest()}" == expected
    # installed: the name now resolves, and a second fetch only re-checks the digests
    mtimes = {p.name: p.stat().st_mtime_ns for p in (data_dir / "ptb").iterdir()}
    assert fetch("ptb", "--from", str(ptb_copy), "--data-dir", str(data_dir)).exit_code == 0
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (data_dir / "ptb").iterdir()}
    corpus = load_corpus(DataConfig(data="ptb", data_dir=str(data_dir), max_lines=5), needed=("train",))
    assert len(corpus.splits["train"]) == 5


def test_fetch_reads_he_et_al_file_names(tmp_path, ptb_copy):
    source = tmp_path / "src"
    source.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy(ptb_copy / f"{split}.txt", source / f"ptb.{split}.txt")
    result = fetch("ptb", "--from", str(source), "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "data" / "ptb").iterdir()) == ["test.txt", "train.txt", "valid.txt"]


def test_a_tampered_copy_is_refused_with_one_line(tmp_path, ptb_copy):
    source = tmp_path / "src"
    shutil.copytree(ptb_copy, source)
    valid = source / "valid.txt"
    valid.write_bytes(valid.read_bytes().replace(b" the ", b" teh ", 1))
    data_dir = tmp_path / "data"
    result = fetch("ptb", "--from", str(source), "--data-dir", str(data_dir))
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    got = digest_of(valid.read_bytes(), "sha256")
    assert lines[0].startswith(f"Error: ptb/valid.txt from {valid}: sha256 mismatch (expected c9fe6985")
    assert lines[0].endswith(f"got {got})")
    assert not (data_dir / "ptb" / "valid.txt").exists()        # nothing unchecked is installed


def test_a_tampered_installed_file_is_reported(tmp_path, ptb_copy):
    data_dir = tmp_path / "data"
    assert fetch("ptb", "--from", str(ptb_copy), "--data-dir", str(data_dir)).exit_code == 0
    installed = data_dir / "ptb" / "test.txt"
    installed.write_bytes(installed.read_bytes()[:-10])
    result = fetch("ptb", "--from", str(ptb_copy), "--data-dir", str(data_dir))
    assert result.exit_code == 2
    assert "test.txt (installed earlier; --force replaces it): sha256 mismatch" in result.output
    assert fetch("ptb", "--from", str(ptb_copy), "--data-dir", str(data_dir), "--force").exit_code == 0
    assert installed.read_bytes() == (ptb_copy / "test.txt").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["nope"], "Error: unknown corpus 'nope'; known corpora: ptb, yahoo, yelp"),
    (["ptb", "--from", "{tmp}/missing"], "Error: --from must be a folder or a URL, got {tmp}/missing"),
    (["ptb", "--from", "{tmp}/empty"], "Error: nothing of 'ptb' could be installed from {tmp}/empty"),
])
def test_fetch_errors(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    data_dir = tmp_path / "data"
    result = fetch(*[a.format(tmp=tmp_path) for a in args], "--data-dir", str(data_dir))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [message.format(tmp=tmp_path)]
    assert not (data_dir / "ptb").exists()                       # no empty folder that looks installed
