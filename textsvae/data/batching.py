"""Length-bucketed batches with padding masks.

A sentence w_1..w_n becomes <s> w_1..w_n </s>; the decoder reads tokens[:, :-1] and predicts
tokens[:, 1:], so each sentence has n + 1 targets (end-of-sentence counted, <s> not).
Padding sits at the end and is masked out of every loss and metric.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .vocab import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Batch:
    tokens: torch.Tensor   # (B, T) long: <s> w_1..w_n </s> <pad>...
    lengths: torch.Tensor  # (B,) long: n + 2
    index: torch.Tensor    # (B,) long: positions of these sentences in their split
    n_targets: int = -1    # sum of n + 1; counted on the host by make_batch
    # (row, step) of every real target in row-major order, found on the host by make_batch, so a
    # GPU never waits on a nonzero() in the training loop
    target_rows: torch.Tensor | None = None
    target_steps: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.n_targets < 0:
            self.n_targets = int((self.lengths - 1).sum())
        if self.target_rows is None:
            self.target_rows, self.target_steps = self.target_mask.nonzero(as_tuple=True)

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        return self.tokens[:, 1:]

    @property
    def target_mask(self) -> torch.Tensor:
        """(B, T-1) bool: True where the target is a real token (words and </s>)."""
        steps = torch.arange(self.tokens.size(1) - 1, device=self.tokens.device)
        return steps[None, :] < (self.lengths - 1)[:, None]

    def target_positions(self, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, steps) of the real targets; with n_samples S, of the batch repeated row by row S times
        (row b*S + s is sentence b's sample s), listed sample by sample. No host sync."""
        if n_samples is None:
            return self.target_rows, self.target_steps
        offsets = torch.arange(n_samples, device=self.target_rows.device)
        rows = (self.target_rows[None, :] * n_samples + offsets[:, None]).reshape(-1)
        return rows, self.target_steps.repeat(n_samples)

    def __len__(self) -> int:
        return self.tokens.size(0)

    def to(self, device: torch.device | str) -> "Batch":
        """This batch on `device` (see to_device)."""
        device = torch.device(device)
        return Batch(*(to_device(t, device) for t in (self.tokens, self.lengths, self.index)), self.n_targets,
                     to_device(self.target_rows, device), to_device(self.target_steps, device))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """t on `device`, without waiting. A host tensor bound for a GPU is first page-locked (pinned): a copy
    from pageable memory may wait for the device's queue to drain, a host sync at every batch."""
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def make_batch(sentences: list[list[int]], index: list[int], pad_to: int | None = None) -> Batch:
    """Pad sentences (ids without <s>/</s>) into one batch; pad_to forces extra padding (for tests)."""
    lengths = [len(sentences[i]) + 2 for i in index]
    width = max(lengths) if pad_to is None else max(pad_to, max(lengths))
    tokens = torch.full((len(index), width), PAD_ID, dtype=torch.long)
    for row, i in enumerate(index):
        s = sentences[i]
        tokens[row, 0] = BOS_ID
        tokens[row, 1:len(s) + 1] = torch.tensor(s, dtype=torch.long)
        tokens[row, len(s) + 1] = EOS_ID
    return Batch(tokens, torch.tensor(lengths, dtype=torch.long), torch.tensor(index, dtype=torch.long),
                 n_targets=sum(lengths) - len(lengths))


def bucket_batches(lengths: list[int], batch_size: int, generator: torch.Generator | None = None) -> list[list[int]]:
    """Group indices of similar length into batches; shuffled (ties and batch order) if a generator is given."""
    n = len(lengths)
    if generator is not None:
        tie_break = torch.randperm(n, generator=generator).tolist()
    else:
        tie_break = list(range(n))
    order = sorted(range(n), key=lambda i: (lengths[i], tie_break[i]))
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def iterate_batches(sentences: list[list[int]], batch_size: int, generator: torch.Generator | None = None):
    """Yield Batches over a split in bucketed order (deterministic when generator is None)."""
    for index in bucket_batches([len(s) for s in sentences], batch_size, generator):
        yield make_batch(sentences, index)
