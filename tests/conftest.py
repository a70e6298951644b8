"""Shared fixtures: one torch thread per test process (machines here have 2 cores), small corpora."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PTB = SHARED_DATA / "ptb"


@pytest.fixture
def write_bench():
    """write_bench(folder, name, text): a benchmark file `name`.toml in folder (made if missing); returns folder."""
    def write(folder: Path, name: str, text: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.toml").write_text(text)
        return folder
    return write


@pytest.fixture
def ptb_dir() -> Path:
    """The real PTB folder (train, valid, test) beside the repository; the test skips without it."""
    if not PTB.is_dir():
        pytest.skip("../shared/data/ptb is not present")
    return PTB


@pytest.fixture
def ptb_cut(tmp_path: Path) -> Path:
    """The first lines of real PTB: 400 train, 100 valid, 100 test sentences."""
    if not PTB.is_dir():
        pytest.skip("../shared/data/ptb is not present")
    out = tmp_path / "ptb_cut"
    out.mkdir()
    for split, n in (("train", 400), ("valid", 100), ("test", 100)):
        lines = (PTB / f"{split}.txt").read_text().splitlines()[:n]
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A hand-made corpus with a label column and both unknown-token spellings."""
    out = tmp_path / "tiny"
    out.mkdir()
    train = ["a\tthe cat sat on the mat", "b\tthe dog sat on the log", "a\ta cat saw a dog <unk>",
             "b\tthe _UNK ran", "a\tcats and dogs"] * 8
    (out / "train.txt").write_text("\n".join(train) + "\n")
    (out / "valid.txt").write_text("a\tthe cat ran\nb\tthe dog sat on a mat\n" * 4)
    (out / "test.txt").write_text("a\ta dog sat\nb\tthe zebra sat\n" * 4)
    return out
