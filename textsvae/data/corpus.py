"""Corpora: resolve `--data`, read the split files through HuggingFace `datasets`, tokenize.

A corpus is a folder with train/valid/test text files, one sentence or document per line,
tokens split on whitespace; a line may be `label<TAB>text` (the label is kept as metadata).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import DataConfig
from .synthetic import synthetic_corpus
from .vocab import SentencePieceVocab, Vocab, WordVocab

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
NAMED_CORPORA = ("ptb", "yahoo", "yelp")
_SPLIT_SPELLINGS = {"train": ("train",), "valid": ("valid", "val", "validation", "dev"), "test": ("test",)}


LONG_LINE_WARNING = 10_000  # tokens; longer lines without max_len get a warning


class CorpusError(ValueError):
    """A corpus that cannot be read; the message is one line for the user."""


def split_labels(lines) -> tuple[list[str], list[str | None]]:
    """The non-blank lines and their labels: a line `label<TAB>text` is labelled, any other line is not."""
    texts, labels = [], []
    for line in lines:
        label, tab, text = line.partition("\t")
        if not tab:
            label, text = None, line
        if text.strip():
            texts.append(text)
            labels.append(label)
    return texts, labels


@dataclass
class Corpus:
    """Token ids per split (without <s> and </s>), the tokenizer, and optional line labels."""

    name: str
    vocab: Vocab
    splits: dict[str, list[list[int]]]
    labels: dict[str, list[str | None]] = field(default_factory=dict)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def tokens(self, split: str) -> int:
        """Target tokens of a split: words plus one end-of-sentence per line."""
        return sum(len(s) + 1 for s in self.splits[split])


def default_data_dir() -> Path:
    env = os.environ.get("TEXTSVAE_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "textsvae" / "data"


def find_split_file(folder: Path, split: str) -> Path | None:
    """`train.txt`, `train`, `NAME.train.txt`; for valid also `val`/`validation`/`dev` spellings."""
    for spelling in _SPLIT_SPELLINGS[split]:
        for candidate in (folder / f"{spelling}.txt", folder / spelling):
            if candidate.is_file():
                return candidate
        matches = sorted(folder.glob(f"*.{spelling}.txt"))
        if matches:
            return matches[0]
    return None


def resolve_corpus_folder(spec: str, data_dir: str | None) -> Path:
    """A folder path as given, or a corpus name under the data folder."""
    if spec in NAMED_CORPORA and not Path(spec).is_dir():
        root = Path(data_dir).expanduser() if data_dir else default_data_dir()
        folder = root / spec
        if not folder.is_dir():
            raise CorpusError(f"corpus '{spec}' is not installed in {root}; run `textsvae data fetch {spec}` "
                              f"(add `--from DIR` to install from a local copy)")
        return folder
    folder = Path(spec).expanduser()
    if not folder.exists():
        raise CorpusError(f"corpus folder not found: {spec} (give a folder, 'synthetic', 'hf:NAME' "
                          f"or one of {', '.join(NAMED_CORPORA)})")
    if not folder.is_dir():
        raise CorpusError(f"--data must be a folder of train/valid/test files, got a file: {spec}")
    return folder


def _read_lines_with_datasets(files: dict[str, Path]) -> dict[str, list[str]]:
    """Read text files through `datasets` (cached to Arrow); undecodable bytes are an error."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    for split, path in files.items():
        if path.stat().st_size == 0:
            raise CorpusError(f"corpus file is empty: {path}")
    try:
        ds = datasets.load_dataset("text", data_files={s: str(p) for s, p in files.items()})
    except Exception as exc:  # datasets wraps reader errors; find the decode error inside
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, UnicodeDecodeError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, UnicodeDecodeError):
            raise CorpusError(_find_undecodable(files.values()) or
                              f"corpus files are not valid UTF-8 ({cause.reason} at byte {cause.start} of a "
                              f"chunk) in one of: {', '.join(str(p) for p in files.values())}") from None
        raise CorpusError(f"could not read corpus files: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    out = {s: list(ds[s]["text"]) for s in files}
    for lines in out.values():  # a UTF-8 byte-order mark would glue itself to the first word
        if lines and lines[0].startswith("\ufeff"):
            lines[0] = lines[0][1:]
    return out


def _find_undecodable(paths) -> str | None:
    """'FILE is not valid UTF-8 (line N, byte B)' for the first file that does not decode."""
    for path in paths:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    return (f"corpus file {path} is not valid UTF-8 (line {n}, byte {err.start + 1} of the "
                            f"line: {raw[err.start:err.start + 4]!r})")
    return None


def _read_hf_hub(name: str, column: str) -> dict[str, list[str]]:
    import datasets

    try:
        ds = datasets.load_dataset(name)
    except Exception as exc:
        raise CorpusError(f"could not load 'hf:{name}' from the Hub (is this machine online?): "
                          f"{type(exc).__name__}".splitlines()[0]) from None
    out = {}
    for split in SPLITS:
        hub_split = next((s for s in _SPLIT_SPELLINGS[split] if s in ds), None)
        if hub_split is not None:
            if column not in ds[hub_split].column_names:
                raise CorpusError(f"hf:{name} has no column '{column}'; columns: {', '.join(ds[hub_split].column_names)}")
            out[split] = [str(t) for t in ds[hub_split][column]]
    return out


def read_raw_splits(cfg: DataConfig, needed: tuple[str, ...] = SPLITS) -> tuple[str, dict[str, list[str]], dict[str, list[str | None]]]:
    """Return (name, lines per split, labels per split); blank lines dropped, labels split off."""
    if cfg.data == "synthetic":
        syn = synthetic_corpus(cfg.synthetic_topics, cfg.synthetic_train, cfg.synthetic_seed)
        lines = {s: syn[s][0] for s in needed}
        labels: dict[str, list[str | None]] = {s: list(syn[s][1]) for s in needed}
        name = "synthetic"
    else:
        if cfg.data.startswith("hf:"):
            raw = _read_hf_hub(cfg.data[3:], cfg.hf_column)
            name = cfg.data
        else:
            folder = resolve_corpus_folder(cfg.data, cfg.data_dir)
            files = {}
            for split in needed:
                path = find_split_file(folder, split)
                if path is None:
                    spellings = "/".join(_SPLIT_SPELLINGS[split])
                    raise CorpusError(f"corpus {folder} has no '{split}' split (looked for {spellings}.txt "
                                      f"and NAME.{split}.txt)")
                files[split] = path
            raw = _read_lines_with_datasets(files)
            name = folder.name
        lines, labels = {}, {}
        for split in needed:
            if split not in raw:
                raise CorpusError(f"corpus {cfg.data} has no '{split}' split")
            kept, kept_labels = split_labels(raw[split])
            if not kept:
                raise CorpusError(f"the '{split}' split of {cfg.data} has no non-blank lines")
            lines[split], labels[split] = kept, kept_labels
    if cfg.max_lines is not None:
        lines = {s: v[: cfg.max_lines] for s, v in lines.items()}
        labels = {s: v[: cfg.max_lines] for s, v in labels.items()}
    return name, lines, labels


def build_vocab(cfg: DataConfig, train_lines: list[str], seed: int = 0) -> Vocab:
    if cfg.tokenizer == "sentencepiece":
        return SentencePieceVocab.build(train_lines, cfg.sp_vocab_size, seed=seed)
    return WordVocab.build(train_lines, max_size=cfg.max_vocab, min_count=cfg.min_count)


def load_corpus(cfg: DataConfig, vocab: Vocab | None = None, needed: tuple[str, ...] = SPLITS,
                seed: int = 0) -> Corpus:
    """Read, tokenize and length-limit the corpus; the vocabulary comes from train unless given."""
    if vocab is None and "train" not in needed:
        needed = ("train",) + tuple(needed)
    name, lines, labels = read_raw_splits(cfg, needed)
    if vocab is None:
        vocab = build_vocab(cfg, lines["train"], seed)
    splits, stats = {}, {}
    for split in needed:
        ids = [vocab.encode(line) for line in lines[split]]
        ids, split_labels, affected = _limit_length(ids, labels[split], cfg.max_len, cfg.long_lines)
        if not ids:
            raise CorpusError(f"every line of the '{split}' split is longer than max_len={cfg.max_len} "
                              f"and long_lines=drop")
        longest = max(len(s) for s in ids)
        if cfg.max_len is None and longest > LONG_LINE_WARNING:
            log.warning("%s: the longest line has %d tokens; a batch holding it needs memory in proportion "
                        "(--set max_len=N truncates or, with long_lines=drop, drops such lines)", split, longest)
        if affected:
            verb = "truncated" if cfg.long_lines == "truncate" else "dropped"
            log.warning("%s: %d of %d lines %s to max_len=%d", split, affected, len(lines[split]), verb, cfg.max_len)
        splits[split], labels[split] = ids, split_labels
        stats[split] = {"lines": len(ids), "long_lines_affected": affected, "tokens": sum(len(s) + 1 for s in ids)}
    return Corpus(name=name, vocab=vocab, splits=splits, labels={s: labels[s] for s in needed}, stats=stats)


def _limit_length(ids: list[list[int]], labels: list, max_len: int | None, mode: str):
    if max_len is None:
        return ids, labels, 0
    affected = sum(len(s) > max_len for s in ids)
    if mode == "truncate":
        return [s[:max_len] for s in ids], labels, affected
    keep = [i for i, s in enumerate(ids) if len(s) <= max_len]
    return [ids[i] for i in keep], [labels[i] for i in keep], affected
