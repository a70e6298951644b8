"""Corpora, tokenizers, batching and the synthetic corpus (issue 2, item 7)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from textsvae.core.config import DataConfig
from textsvae.data import (BOS_ID, EOS_ID, PAD_ID, UNK_ID, CorpusError, SentencePieceVocab, WordVocab,
                           bucket_batches, load_corpus, load_vocab, make_batch, read_raw_splits)
from textsvae.data.corpus import find_split_file
from textsvae.data.synthetic import synthetic_corpus


def write_corpus(folder: Path, train: list[str], valid: list[str] | None = None, test: list[str] | None = None,
                 names: tuple[str, str, str] = ("train.txt", "valid.txt", "test.txt")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in zip(names, (train, valid or ["x y"], test or ["x y"])):
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# -- vocabulary ---------------------------------------------------------------------------

def test_both_unknown_spellings_are_one_id(tiny_corpus):
    corpus = load_corpus(DataConfig(data=str(tiny_corpus)))
    vocab = corpus.vocab
    assert vocab.encode("<unk>") == vocab.encode("_UNK") == vocab.encode("<UNK>") == [UNK_ID]
    assert "_UNK" not in vocab.tokens and vocab.tokens.count("<unk>") == 1
    # "a cat saw a dog <unk>" and "the _UNK ran" in train: both spellings became UNK_ID
    assert corpus.splits["train"][2] == [vocab.index[w] for w in "a cat saw a dog".split()] + [UNK_ID]
    assert corpus.splits["train"][3] == [vocab.index["the"], UNK_ID, vocab.index["ran"]]


def test_vocab_comes_from_train_only(tiny_corpus):
    corpus = load_corpus(DataConfig(data=str(tiny_corpus)))
    assert "zebra" not in corpus.vocab.tokens                       # only in test
    test_ids = corpus.splits["test"][1]                              # "the zebra sat"
    assert test_ids == [corpus.vocab.index["the"], UNK_ID, corpus.vocab.index["sat"]]


def test_vocab_order_max_size_and_min_count():
    lines = ["b a a c", "c a b d", "e"]                              # a:3 b:2 c:2 d:1 e:1
    assert WordVocab.build(lines).tokens[4:] == ["a", "b", "c", "d", "e"]  # ties by first appearance
    assert WordVocab.build(lines, max_size=2).tokens[4:] == ["a", "b"]
    assert WordVocab.build(lines, min_count=2).tokens[4:] == ["a", "b", "c"]
    v = WordVocab.build(lines, max_size=2)
    assert v.encode("a c e") == [4, UNK_ID, UNK_ID]


def test_literal_special_tokens_in_text_are_unknown_words():
    v = WordVocab.build(["<s> a </s> <pad> b"])
    assert v.tokens == ["<pad>", "<s>", "</s>", "<unk>", "a", "b"]
    assert v.encode("<s> a </s> <pad>") == [UNK_ID, 4, UNK_ID, UNK_ID]  # never a sentence boundary


def test_word_vocab_save_and_load(tmp_path):
    v = WordVocab.build(["a b c", "c d"])
    v.save(tmp_path)
    w = load_vocab(tmp_path)
    assert w.tokens == v.tokens and w.encode("d c _UNK x") == v.encode("d c _UNK x")


def test_max_vocab_and_min_count_from_config(tiny_corpus):
    full = load_corpus(DataConfig(data=str(tiny_corpus)))
    cut = load_corpus(DataConfig(data=str(tiny_corpus), max_vocab=3))
    assert len(cut.vocab) == 4 + 3 and cut.vocab.tokens[4:] == full.vocab.tokens[4:7]
    frequent = load_corpus(DataConfig(data=str(tiny_corpus), min_count=16))
    # 5 distinct lines x 8: counts are multiples of 8; "the" 32, "sat"/"on"/"cat"/"dog"/"a" 16
    assert set(frequent.vocab.tokens[4:]) == {"the", "sat", "on", "cat", "dog", "a"}


# -- reading corpus folders ---------------------------------------------------------------------

@pytest.mark.parametrize("names", [
    ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),   # He et al.'s NAME.split.txt
    ("train.txt", "val.txt", "test.txt"),                 # Yahoo's val.txt
    ("yelp.train.txt", "yelp.val.txt", "yelp.test.txt"),
    ("train", "dev", "test"),
])
def test_split_file_spellings(tmp_path, names):
    folder = write_corpus(tmp_path / "c", ["a b c"], ["a b"], ["c"], names=names)
    name, lines, _ = read_raw_splits(DataConfig(data=str(folder)))
    assert name == "c" and lines == {"train": ["a b c"], "valid": ["a b"], "test": ["c"]}
    assert find_split_file(folder, "valid").name == names[1]


def test_labels_are_kept_and_split_off(tiny_corpus):
    corpus = load_corpus(DataConfig(data=str(tiny_corpus)))
    assert corpus.labels["train"][:5] == ["a", "b", "a", "b", "a"]
    assert corpus.labels["valid"][:2] == ["a", "b"]
    # "a\tthe cat sat on the mat": the text after the tab only
    v = corpus.vocab
    assert corpus.splits["train"][0] == v.encode("the cat sat on the mat")


def test_lines_without_labels_have_none(tmp_path):
    folder = write_corpus(tmp_path / "c", ["a b", "1\tc d"])
    _, lines, labels = read_raw_splits(DataConfig(data=str(folder)))
    assert lines["train"] == ["a b", "c d"] and labels["train"] == [None, "1"]


def test_blank_lines_are_dropped_and_max_lines_cuts(tmp_path):
    folder = write_corpus(tmp_path / "c", ["a", "", "   ", "b", "c", "d"])
    _, lines, _ = read_raw_splits(DataConfig(data=str(folder)))
    assert lines["train"] == ["a", "b", "c", "d"]
    _, lines, _ = read_raw_splits(DataConfig(data=str(folder), max_lines=2))
    assert lines["train"] == ["a", "b"]


def test_max_len_truncate_and_drop_counts(tmp_path):
    folder = write_corpus(tmp_path / "c", ["a b c d e f", "a b", "a b c d", "a"], ["a b c d e", "a"])
    cfg = DataConfig(data=str(folder), max_len=3)
    truncated = load_corpus(cfg)
    assert [len(s) for s in truncated.splits["train"]] == [3, 2, 3, 1]
    assert truncated.stats["train"]["long_lines_affected"] == 2
    assert truncated.stats["valid"] == {"lines": 2, "long_lines_affected": 1, "tokens": 3 + 1 + 1 + 1}
    dropped = load_corpus(replace(cfg, long_lines="drop"))
    assert [len(s) for s in dropped.splits["train"]] == [2, 1]
    assert dropped.stats["train"] == {"lines": 2, "long_lines_affected": 2, "tokens": 3 + 2}
    assert dropped.labels["train"] == [None, None]


def test_crlf_gives_the_same_tokens_as_lf(tmp_path):
    lines = ["the cat sat", "on the mat", "", "the end"]
    lf = tmp_path / "lf"
    crlf = tmp_path / "crlf"
    for folder, nl in ((lf, "\n"), (crlf, "\r\n")):
        folder.mkdir()
        for split in ("train", "valid", "test"):
            (folder / f"{split}.txt").write_bytes(nl.join(lines).encode() + nl.encode())
    a, b = load_corpus(DataConfig(data=str(lf))), load_corpus(DataConfig(data=str(crlf)))
    assert a.vocab.tokens == b.vocab.tokens and a.splits == b.splits
    assert not any("\r" in t for t in b.vocab.tokens)


def test_utf8_byte_order_mark_is_not_part_of_the_first_word(tmp_path):
    folder = write_corpus(tmp_path / "c", ["the cat", "the dog"])
    (folder / "train.txt").write_bytes(b"\xef\xbb\xbf" + (folder / "train.txt").read_bytes())
    corpus = load_corpus(DataConfig(data=str(folder)))
    assert corpus.vocab.tokens[4:] == ["the", "cat", "dog"]


def test_a_one_megabyte_line_is_read_and_cut_by_max_len(tmp_path, caplog):
    huge = " ".join(["w"] * 500_000)   # 1 MB, 500k tokens
    folder = write_corpus(tmp_path / "c", ["a b", huge, "c"], ["a " * 300_000])
    with caplog.at_level("WARNING", logger="textsvae.data.corpus"):
        uncut = load_corpus(DataConfig(data=str(folder)), needed=("train",))
    assert [len(s) for s in uncut.splits["train"]] == [2, 500_000, 1]
    assert "train: the longest line has 500000 tokens" in caplog.text and "max_len" in caplog.text
    corpus = load_corpus(DataConfig(data=str(folder), max_len=50))
    assert [len(s) for s in corpus.splits["train"]] == [2, 50, 1]
    assert corpus.stats["train"]["long_lines_affected"] == 1
    assert corpus.stats["valid"]["long_lines_affected"] == 1
    dropped = load_corpus(DataConfig(data=str(folder), max_len=50, long_lines="drop", max_lines=None),
                          needed=("train",))
    assert [len(s) for s in dropped.splits["train"]] == [2, 1]


@pytest.mark.parametrize("case, expected", [
    ("empty", "corpus file is empty: {path}"),
    ("blank", "the 'train' split of {folder} has no non-blank lines"),
    ("undecodable", "corpus file {path} is not valid UTF-8 (line 2"),
    ("missing", "corpus {folder} has no 'train' split"),
])
def test_bad_corpus_files_are_one_line_errors(tmp_path, case, expected):
    folder = write_corpus(tmp_path / "c", ["a b"], ["a"], ["b"])
    path = folder / "train.txt"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "blank":
        path.write_text("\n  \n\t\n\n")
    elif case == "undecodable":
        path.write_bytes(b"good line\nbad \xff\xfe line\n")
    else:
        path.unlink()
    with pytest.raises(CorpusError) as err:
        load_corpus(DataConfig(data=str(folder)))
    message = str(err.value)
    assert expected.format(path=path, folder=folder) in message and "\n" not in message


def test_missing_folder_and_not_installed_named_corpus(tmp_path):
    with pytest.raises(CorpusError, match="corpus folder not found"):
        load_corpus(DataConfig(data=str(tmp_path / "nope")))
    with pytest.raises(CorpusError, match=r"corpus 'ptb' is not installed in .*textsvae data fetch ptb"):
        load_corpus(DataConfig(data="ptb", data_dir=str(tmp_path)))


# -- sentencepiece ---------------------------------------------------------------------------

def test_sentencepiece_unknown_spellings_and_determinism(tiny_corpus):
    cfg = DataConfig(data=str(tiny_corpus), tokenizer="sentencepiece", sp_vocab_size=30)
    a, b = load_corpus(cfg), load_corpus(cfg)
    assert isinstance(a.vocab, SentencePieceVocab)
    assert a.vocab.model_bytes == b.vocab.model_bytes and a.splits == b.splits
    v = a.vocab
    assert v.encode("<unk>") == v.encode("_UNK") == [UNK_ID]
    assert v.encode("the _UNK ran") == v.encode("the") + [UNK_ID] + v.encode("ran")
    assert v.encode("the <unk> ran") == v.encode("the _UNK ran")
    assert v.decode(v.encode("the cat sat")) == "the cat sat"


def test_sentencepiece_model_is_saved_and_reloaded(tmp_path, tiny_corpus):
    v = load_corpus(DataConfig(data=str(tiny_corpus), tokenizer="sentencepiece", sp_vocab_size=30)).vocab
    v.save(tmp_path)
    assert (tmp_path / "spm.model").read_bytes() == v.model_bytes
    w = load_vocab(tmp_path)
    assert isinstance(w, SentencePieceVocab) and w.tokens == v.tokens
    assert w.encode("a cat saw the dog _UNK") == v.encode("a cat saw the dog _UNK")


# -- the synthetic corpus -------------------------------------------------------------------------

def test_synthetic_corpus_is_a_pure_function_of_its_seed():
    np_state = __import__("numpy").random.get_state()
    a = synthetic_corpus(4, 100, seed=7)
    __import__("numpy").random.seed(999)        # the global RNG plays no part
    torch.manual_seed(999)
    b = synthetic_corpus(4, 100, seed=7)
    __import__("numpy").random.set_state(np_state)
    assert a == b
    assert synthetic_corpus(4, 100, seed=8)["train"] != a["train"]
    assert [len(a[s][0]) for s in ("train", "valid", "test")] == [100, 10, 10]
    assert set(a["train"][1]) == {"0", "1", "2", "3"}                # every topic among 100 draws
    assert all(6 <= len(line.split()) <= 14 for line in a["train"][0])


def test_synthetic_corpus_through_load_corpus():
    cfg = DataConfig(data="synthetic", synthetic_train=50, synthetic_topics=3, synthetic_seed=5)
    a, b = load_corpus(cfg), load_corpus(cfg)
    assert a.splits == b.splits and a.labels == b.labels and a.vocab.tokens == b.vocab.tokens
    assert [len(a.splits[s]) for s in ("train", "valid", "test")] == [50, 5, 5]
    assert set(a.labels["train"]) == {"0", "1", "2"}
    assert a.splits["train"] == [a.vocab.encode(line) for line in synthetic_corpus(3, 50, seed=5)["train"][0]]


# -- batches and masks --------------------------------------------------------------------------

def test_make_batch_layout_and_mask():
    sentences = [[5, 6, 7], [8]]
    b = make_batch(sentences, [0, 1])
    assert b.tokens.tolist() == [[BOS_ID, 5, 6, 7, EOS_ID], [BOS_ID, 8, EOS_ID, PAD_ID, PAD_ID]]
    assert b.lengths.tolist() == [5, 3] and b.n_targets == 4 + 2
    assert b.inputs.tolist() == [[BOS_ID, 5, 6, 7], [BOS_ID, 8, EOS_ID, PAD_ID]]
    assert b.targets.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert b.target_mask.tolist() == [[True] * 4, [True, True, False, False]]
    padded = make_batch(sentences, [0, 1], pad_to=9)
    assert padded.tokens.tolist() == [row + [PAD_ID] * 4 for row in b.tokens.tolist()]
    assert padded.n_targets == b.n_targets
    assert padded.target_mask.tolist() == [row + [False] * 4 for row in b.target_mask.tolist()]


def test_bucket_batches_cover_every_index_once_and_group_lengths():
    lengths = [5, 1, 9, 3, 3, 7, 2, 8, 1, 4]
    plain = bucket_batches(lengths, 3)
    assert plain == [[1, 8, 6], [3, 4, 9], [0, 5, 7], [2]]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    shuffled = bucket_batches(lengths, 3, g1)
    assert shuffled == bucket_batches(lengths, 3, g2)             # a pure function of the generator
    assert sorted(i for b in shuffled for i in b) == list(range(10))
    # shuffling changes ties and the batch order, never which lengths share a batch
    assert {tuple(sorted(lengths[i] for i in b)) for b in shuffled} == {(1, 1, 2), (3, 3, 4), (5, 7, 8), (9,)}


def test_batch_target_positions_are_found_on_the_host_and_match_the_mask():
    from textsvae.data.batching import Batch

    sentences = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
    batch = make_batch(sentences, [0, 1, 2, 3])
    rows, steps = batch.target_mask.nonzero(as_tuple=True)
    assert batch.n_targets == 4 + 2 + 6 + 3
    assert torch.equal(batch.target_rows, rows) and torch.equal(batch.target_steps, steps)
    rebuilt = Batch(batch.tokens, batch.lengths, batch.index)          # built by hand: derived the same way
    assert rebuilt.n_targets == batch.n_targets and torch.equal(rebuilt.target_rows, rows)
    # S samples per sentence: every (b*S + s, t) of the row-repeated mask exactly once
    S = 3
    rep_rows, rep_steps = batch.target_positions(S)
    expected = set(zip(*(t.tolist() for t in batch.target_mask.repeat_interleave(S, 0).nonzero(as_tuple=True))))
    got = list(zip(rep_rows.tolist(), rep_steps.tolist()))
    assert len(got) == len(expected) == S * batch.n_targets and set(got) == expected
