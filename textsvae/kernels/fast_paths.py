"""The fast paths, switched in one place: each computes what its plain path computes (to rounding).

    with fast_paths(sample_lstm=False):   # the plain path, e.g. to time the fast one against it
        ...

`benchmarks/perf/fast_paths.py` times each one off and on; tests check each against its plain path.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Iterator


@dataclass(frozen=True)
class FastPaths:
    fused_output: bool = True        # output layer and cross-entropy in one op (ops); off: twice differentiable
    fewer_passes: bool = True        # the fused softmax's passes over (N, V) cut, no row-max shift on the CPU (ops)
    z_term_per_sample: bool = True   # the skip layer's z part once per sample, not once per word (ops)
    sample_lstm: bool = True         # without gradients, the first decoder layer reads each sentence once
                                     # for all its z samples (sample_lstm)
    sparse_embeddings: bool = True   # sparse embedding gradients under plain SGD on the CPU (optim)


_current = FastPaths()


def switches() -> FastPaths:
    """The fast paths' switches now (as set by the innermost `fast_paths(...)` block)."""
    return _current


@contextmanager
def fast_paths(**switches: bool) -> Iterator[FastPaths]:
    """Set some switches for the duration of the block (unknown names are a TypeError)."""
    global _current
    known = {f.name for f in fields(FastPaths)}
    unknown = set(switches) - known
    if unknown:
        raise TypeError(f"unknown fast path(s) {sorted(unknown)}; known: {sorted(known)}")
    previous = _current
    _current = replace(previous, **switches)
    try:
        yield _current
    finally:
        _current = previous
