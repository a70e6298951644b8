"""Tokenizers: a word vocabulary built from the training split, or a sentencepiece model.

Both give the same four special ids: <pad>=0, <s>=1, </s>=2, <unk>=3. Yahoo's `_UNK` and
PTB's `<unk>` are both read as the one unknown token.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from ..core.io import atomic_write_bytes, atomic_write_text

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
UNK_SPELLINGS = frozenset({"<unk>", "_UNK", "<UNK>"})
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


class WordVocab:
    """Whitespace tokens -> ids; the vocabulary comes from the training split only."""

    kind = "word"

    def __init__(self, tokens: list[str]):
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError("a vocabulary must start with <pad>, <s>, </s>, <unk>")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        for special in (PAD, BOS, EOS):  # a literal "<s>" in the text is a word, not a sentence boundary
            self.index[special] = UNK_ID

    @classmethod
    def build(cls, lines: Iterable[str], max_size: int | None = None, min_count: int = 1) -> "WordVocab":
        """Most frequent first (ties by first appearance); unknown spellings fold into <unk>."""
        counts: Counter[str] = Counter()
        for line in lines:
            counts.update(line.split())
        for spelling in UNK_SPELLINGS:
            counts.pop(spelling, None)
        kept = [t for t, c in counts.most_common() if c >= min_count and t not in SPECIALS]
        if max_size is not None:
            kept = kept[:max_size]
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        index = self.index
        return [index.get(w, UNK_ID) for w in text.split()]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.tokens[i] for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID))

    def save(self, folder: str | Path) -> None:
        atomic_write_text(Path(folder) / "vocab.json", json.dumps({"kind": "word", "tokens": self.tokens}))


class SentencePieceVocab:
    """A sentencepiece unigram model trained on the training split, saved as spm.model in the run."""

    kind = "sentencepiece"

    def __init__(self, model_bytes: bytes):
        import sentencepiece as spm

        self.model_bytes = model_bytes
        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        self.tokens = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    @classmethod
    def build(cls, lines: Iterable[str], vocab_size: int, seed: int = 0) -> "SentencePieceVocab":
        import io

        import sentencepiece as spm

        # unknown-token spellings are not text: they are cut out here and become UNK_ID in encode()
        text = [" ".join(w for w in line.split() if w not in UNK_SPELLINGS) for line in lines]
        model = io.BytesIO()
        spm.set_random_generator_seed(seed)  # TrainerSpec has no seed field; this is the library's own knob
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(text), model_writer=model, vocab_size=vocab_size,
            pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
            user_defined_symbols=[], hard_vocab_limit=False, minloglevel=2, num_threads=1)
        return cls(model.getvalue())

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Pieces of the words; each unknown-token spelling (`<unk>`, `_UNK`) is the one id UNK_ID."""
        words = text.split()
        if not any(w in UNK_SPELLINGS for w in words):
            return self.sp.encode(text)
        ids: list[int] = []
        run: list[str] = []
        for w in words + [UNK]:  # pieces never cross a word boundary, so encoding runs of words is exact
            if w in UNK_SPELLINGS:
                if run:
                    ids += self.sp.encode(" ".join(run))
                    run = []
                ids.append(UNK_ID)
            else:
                run.append(w)
        return ids[:-1]

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])

    def save(self, folder: str | Path) -> None:
        atomic_write_bytes(Path(folder) / "spm.model", self.model_bytes)
        atomic_write_text(Path(folder) / "vocab.json", json.dumps({"kind": "sentencepiece", "tokens": self.tokens}))


Vocab = WordVocab | SentencePieceVocab


def load_vocab(folder: str | Path) -> Vocab:
    """Read the tokenizer saved with a run."""
    folder = Path(folder)
    meta = json.loads((folder / "vocab.json").read_text())
    if meta["kind"] == "sentencepiece":
        return SentencePieceVocab((folder / "spm.model").read_bytes())
    return WordVocab(meta["tokens"])

