"""The built-in synthetic corpus: sentences from a known latent-variable model.

Generative story (all from one seed):
  topic k ~ Uniform{0..K-1}
  template t ~ Uniform(templates of topic k)      # a fixed sequence of slots, 6-14 long
  each slot: 'T' -> a word from topic k's Zipf distribution over its own 30 words,
             'F' -> a function word from a Zipf distribution shared by all topics.
The topic is kept as the line's label, so a model's z can be probed for it; the true
mutual information I(x; topic) is at most log K nats.
"""
from __future__ import annotations

import numpy as np

N_FUNCTION_WORDS = 40
WORDS_PER_TOPIC = 30
TEMPLATES_PER_TOPIC = 4
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _make_words(rng: np.random.RandomState, n: int, taken: set[str]) -> list[str]:
    words = []
    while len(words) < n:
        syllables = rng.randint(2, 4)
        w = "".join(_CONSONANTS[rng.randint(len(_CONSONANTS))] + _VOWELS[rng.randint(len(_VOWELS))]
                    for _ in range(syllables))
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


def _zipf(n: int) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1)
    return p / p.sum()


def synthetic_corpus(topics: int = 8, n_train: int = 8000, seed: int = 1234
                     ) -> dict[str, tuple[list[str], list[str]]]:
    """Return {split: (lines, labels)} for train, valid and test (valid/test get n_train // 10)."""
    rng = np.random.RandomState(seed)
    taken: set[str] = set()
    function_words = _make_words(rng, N_FUNCTION_WORDS, taken)
    topic_words = [_make_words(rng, WORDS_PER_TOPIC, taken) for _ in range(topics)]
    templates = [[rng.choice(["T", "F"], size=rng.randint(6, 15), p=[0.5, 0.5]).tolist()
                  for _ in range(TEMPLATES_PER_TOPIC)] for _ in range(topics)]
    p_function, p_topic = _zipf(N_FUNCTION_WORDS), _zipf(WORDS_PER_TOPIC)

    def sentence(k: int) -> str:
        slots = templates[k][rng.randint(TEMPLATES_PER_TOPIC)]
        n_t = sum(s == "T" for s in slots)
        t_words = iter(rng.choice(WORDS_PER_TOPIC, size=n_t, p=p_topic))
        f_words = iter(rng.choice(N_FUNCTION_WORDS, size=len(slots) - n_t, p=p_function))
        return " ".join(topic_words[k][next(t_words)] if s == "T" else function_words[next(f_words)]
                        for s in slots)

    sizes = {"train": n_train, "valid": max(n_train // 10, 2), "test": max(n_train // 10, 2)}
    corpus = {}
    for split, n in sizes.items():
        labels = rng.randint(topics, size=n)
        corpus[split] = ([sentence(int(k)) for k in labels], [str(int(k)) for k in labels])
    return corpus
