"""Decoding text from any decoder: greedy, beam search and sampling, step by step.

The LSTM state is carried from step to step (the prefix is never re-run). Each step computes
what training computes for that position: layer 1 reads [emb(y_{t-1}); z], the layers start
from `Decoder.initial_states(z)`, and for the skip decoder every upper layer reads [h; z] and the softmax
V h + U z (`Decoder.run_layers`, the wiring training uses, and `OutputLayer.logits`); the LM has no z. Dropout is off
(the model is put in eval mode). Outputs are token ids without <s> and </s>; a sentence still
open after max_len words ends there (</s> is forced at step max_len + 1, so a beam's score stays
the log-probability of what it returns).

- greedy: y_t = argmax_v p(v | y_<t, z).
- beam: the `beam_size` best prefixes by log p(y_<t | z), batched over sentences, finished
  hypotheses kept aside as in fairseq (`_beam`); the best by score / len^length_penalty wins
  (len counts </s>; length_penalty 0 is the plain log-probability). Beam size 1 is greedy.
- sample: y_t ~ softmax(logits / temperature), restricted to the smallest set of words whose
  probability reaches top_p (nucleus sampling, Holtzman et al. 2020); reproducible under `seed`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.config import ConfigError
from ..data.vocab import BOS_ID, EOS_ID, PAD_ID

STRATEGIES = ("greedy", "beam", "sample")


@dataclass(frozen=True)
class DecodeOptions:
    strategy: str = "greedy"        # greedy | beam | sample
    beam_size: int = 5              # beams per sentence (beam)
    length_penalty: float = 0.0     # beam: rank finished hypotheses by score / len^length_penalty
    temperature: float = 1.0        # sample: logits / temperature
    top_p: float = 1.0              # sample: nucleus mass in (0, 1]
    max_len: int = 100              # words at most (</s> not counted); </s> is forced after them
    seed: int = 0                   # sample: the generator's seed

    def __post_init__(self) -> None:
        checks = [
            (self.strategy in STRATEGIES, f"decode must be one of {', '.join(STRATEGIES)}, got '{self.strategy}'"),
            (self.beam_size >= 1, f"beam size must be >= 1, got {self.beam_size}"),
            (self.length_penalty >= 0, f"length penalty must be >= 0, got {self.length_penalty}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top-p must be in (0, 1], got {self.top_p}"),
            (self.max_len >= 1, f"max-len must be >= 1, got {self.max_len}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


class _Stepper:
    """One decoder step at a time for R rows: the LSTM states of every layer and the rows' z."""

    def __init__(self, model, z: torch.Tensor | None, rows: int):
        self.decoder = model.decoder
        self.z = z
        d = self.decoder
        self.states = d.initial_states(z) if d.uses_z else [None] * d.n_layers

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (R, V) of the next word after `tokens` (R,), advancing every layer's state."""
        d, z = self.decoder, self.z
        x, self.states = d.run_layers(d.embed(tokens).unsqueeze(1), None if z is None else z.unsqueeze(1),
                                      self.states)                                         # (R, 1, H)
        return d.out.logits(x[:, 0], z).float()

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (beam search's parents), in that order."""
        self.states = [None if s is None else (s[0][:, index], s[1][:, index]) for s in self.states]
        if self.z is not None:
            self.z = self.z[index]


def _rows(model, z: torch.Tensor | None, n: int | None) -> int:
    if model.is_lm:
        if z is not None:
            raise ConfigError("an LSTM language model (decoder 'lm') decodes without z")
        if n is None or n < 1:
            raise ConfigError(f"the number of sentences must be >= 1, got {n}")
        return n
    if z is None or z.dim() != 2 or z.size(1) != model.latent_dim:
        raise ConfigError(f"z must be (N, {model.latent_dim}) for this decoder")
    return z.size(0)


def _trim(rows: torch.Tensor) -> list[list[int]]:
    """Token ids up to (not including) the first </s>."""
    out = []
    for row in rows.tolist():
        out.append(row[: row.index(EOS_ID)] if EOS_ID in row else row)
    return out


@torch.no_grad()
def decode(model, z: torch.Tensor | None, options: DecodeOptions = DecodeOptions(),
           n: int | None = None) -> list[list[int]]:
    """Decode one sentence per row of z (N, D), or n sentences from an LM (z None); token ids."""
    rows = _rows(model, z, n)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        z = None if z is None else z.to(device, torch.float32)
        if options.strategy == "beam":
            return _beam(model, z, rows, options, device)
        return _left_to_right(model, z, rows, options, device)
    finally:
        model.train(was_training)


def _left_to_right(model, z, rows: int, options: DecodeOptions, device: torch.device) -> list[list[int]]:
    """Greedy (and beam size 1) or sampling, all rows at once."""
    stepper = _Stepper(model, z, rows)
    generator = torch.Generator(device=device).manual_seed(options.seed) if options.strategy == "sample" else None
    tokens = torch.full((rows,), BOS_ID, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    out = []
    for step in range(options.max_len + 1):                  # max_len words, then </s>
        logits = stepper.logits(tokens)
        if step == options.max_len:
            tokens = torch.full_like(tokens, EOS_ID)
        elif generator is None:
            tokens = logits.argmax(-1)
        else:
            tokens = _sample(logits, options.temperature, options.top_p, generator)
        tokens = torch.where(done, torch.full_like(tokens, PAD_ID), tokens)
        out.append(tokens)
        done |= tokens == EOS_ID
        if bool(done.all()):
            break
    return _trim(torch.stack(out, 1))[:rows] if out else [[] for _ in range(rows)]


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One draw per row from softmax(logits / T) restricted to the top-p nucleus."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p                  # mass of the words ranked above each
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)     # keep the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _beam(model, z, rows: int, options: DecodeOptions, device: torch.device) -> list[list[int]]:
    """Beam search as fairseq's: each step ranks the 2k best continuations of the k live prefixes; those
    among the first k that end in </s> become finished hypotheses (kept for good), the k best others
    live on; a sentence is done once it has k finished hypotheses (at step max_len + 1 every live
    prefix is closed). The best finished one by score / len^length_penalty is returned."""
    k, steps = options.beam_size, options.max_len + 1
    arange = torch.arange(rows, device=device)
    z_rows = None if z is None else z.repeat_interleave(k, 0)                          # (R K, D)
    stepper = _Stepper(model, z_rows, rows * k)
    scores = torch.full((rows, k), -torch.inf, device=device)
    scores[:, 0] = 0.0                                        # one live prefix per sentence at first
    tokens = torch.full((rows * k,), BOS_ID, dtype=torch.long, device=device)
    history = torch.full((rows, k, steps), PAD_ID, dtype=torch.long, device=device)
    done_scores = torch.full((rows, k), -torch.inf, device=device)                    # finished, ranked
    done_history = torch.full((rows, k, steps), PAD_ID, dtype=torch.long, device=device)
    n_done = torch.zeros(rows, dtype=torch.long, device=device)
    for step in range(steps):
        logp = torch.log_softmax(stepper.logits(tokens), dim=-1).view(rows, k, -1)    # (R, K, V)
        vocab = logp.size(-1)
        logp[..., PAD_ID] = -torch.inf
        if step == options.max_len:                           # the last step may only close a sentence
            logp = logp.masked_fill(torch.arange(vocab, device=device) != EOS_ID, -torch.inf)
        total = (scores.unsqueeze(-1) + logp).view(rows, k * vocab)
        cand_scores, flat = total.topk(min(2 * k, k * vocab), dim=-1)                 # (R, 2K)
        parent, word = flat // vocab, flat % vocab
        cand_history = history.gather(1, parent.unsqueeze(-1).expand(-1, -1, steps)).clone()
        cand_history[:, :, step] = word
        # finished: </s> among the first k candidates of a sentence that is not done
        closing = (word == EOS_ID) & torch.isfinite(cand_scores) & (n_done < k).unsqueeze(1)
        closing[:, k:] = False
        ranked = cand_scores / float(step + 1) ** options.length_penalty
        pool_scores = torch.cat([done_scores, ranked.masked_fill(~closing, -torch.inf)], 1)
        pool_history = torch.cat([done_history, cand_history], 1)
        done_scores, keep = pool_scores.topk(k, dim=-1)
        done_history = pool_history.gather(1, keep.unsqueeze(-1).expand(-1, -1, steps))
        n_done = (n_done + closing.sum(1)).clamp(max=k)
        if bool((n_done >= k).all()):
            break
        # live on: the k best candidates that do not end in </s>
        alive_scores = cand_scores.masked_fill(word == EOS_ID, -torch.inf)
        alive_scores = alive_scores.masked_fill((n_done >= k).unsqueeze(1), -torch.inf)   # a done sentence stops
        scores, pick = alive_scores.topk(k, dim=-1)
        parent, word = parent.gather(1, pick), word.gather(1, pick)
        history = cand_history.gather(1, pick.unsqueeze(-1).expand(-1, -1, steps))
        stepper.reorder((parent + arange.unsqueeze(1) * k).view(-1))
        tokens = word.view(-1)
    best = done_scores.argmax(-1)
    return _trim(done_history[arange, best])
