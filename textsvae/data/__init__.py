"""Corpora, tokenizers, batching and the built-in synthetic corpus."""
from .batching import Batch, bucket_batches, iterate_batches, make_batch
from .corpus import Corpus, CorpusError, load_corpus, read_raw_splits
from .vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, SentencePieceVocab, Vocab, WordVocab, load_vocab

__all__ = ["Batch", "bucket_batches", "iterate_batches", "make_batch", "Corpus", "CorpusError", "load_corpus",
           "read_raw_splits", "BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID", "SentencePieceVocab", "Vocab", "WordVocab",
           "load_vocab"]
