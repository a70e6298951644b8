"""Aggressive inference-network training (He, Spokoyny, Neubig & Berg-Kirkpatrick, ICLR 2019)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import register
from .base import Method, StepOutput, check, param

if TYPE_CHECKING:
    from ..data.batching import Batch
    from .context import SetupContext, TrainingContext


@dataclass
class AggressiveParams:
    max_inner: int = param(99, "at most this many encoder steps before each decoder step "
                               "(He et al.'s `while sub_iter < 100` from sub_iter = 1: 99)")
    check_every: int = param(15, "compare the encoder's mean loss per word every this many inner steps (He et al.: 15)")

    def __post_init__(self) -> None:
        check(self.max_inner >= 1, f"max_inner must be >= 1, got {self.max_inner}")
        check(self.check_every >= 1, f"check_every must be >= 1, got {self.check_every}")


@register("aggressive")
class Aggressive(Method):
    """Aggressive training: encoder updated to convergence before each decoder step while validation MI rises (He et al. 2019).

    Inner loop (He et al.'s code): encoder steps on fresh random minibatches; every `check_every`
    steps the mean loss per word of the last block is compared with the previous block's and the
    loop stops when it got worse, or after `max_inner` steps (the block's loss is summed on the
    device, so a GPU waits for it once per check, not at every step). Then one step on the current batch
    updates the decoder only. Once an epoch's validation MI falls below the previous epoch's, the
    aggressive phase ends and each step updates both. Encoder and decoder have their own optimisers (method state,
    checkpointed); when the trainer halves the LR both are rebuilt at the new LR, as He et al. do.
    """

    Params = AggressiveParams
    needs_latent = True

    def __init__(self, params: AggressiveParams | None = None):
        super().__init__(params)
        self.aggressive = True
        self.pre_mi = 0.0                                  # He et al.'s starting `pre_mi = 0`
        self.last_inner_steps = 0
        self.lr: float | None = None                       # the LR the optimisers were built with
        self.enc_opt: torch.optim.Optimizer | None = None
        self.dec_opt: torch.optim.Optimizer | None = None
        self.generator = torch.Generator()                 # draws the fresh minibatches (CPU indices)
        self._pending: dict[str, Any] = {}                 # optimiser states loaded before the optimisers exist

    def setup(self, ctx: "SetupContext") -> None:
        super().setup(ctx)
        self.generator.manual_seed(ctx.config.train.seed + 7919)

    def _optimizers(self, trainer: "TrainingContext") -> None:
        """Build both optimisers on first use (after every setup) and again whenever the trainer's LR changed."""
        lr = trainer.state.lr
        if self.enc_opt is not None and self.lr == lr:
            return
        model = trainer.model
        self.enc_opt = trainer.make_optimizer(model.encoder.parameters(), lr)
        self.dec_opt = trainer.make_optimizer(model.decoder.parameters(), lr)
        if self._pending.get("lr") == lr and "enc_opt" in self._pending:   # resume: same LR, same state
            self.enc_opt.load_state_dict(self._pending["enc_opt"])
            self.dec_opt.load_state_dict(self._pending["dec_opt"])
        self._pending = {}
        self.lr = lr

    def _inner_loop(self, trainer: "TrainingContext", batch: "Batch", beta: float) -> int:
        """Encoder-only steps: the current batch first, then fresh random ones (as in He et al.'s code)."""
        model, p = trainer.model, self.params
        block_loss, block_words, previous = 0.0, 0, math.inf
        steps = 0
        while steps < p.max_inner:
            burn = batch if steps == 0 else trainer.random_train_batch(self.generator)
            self.enc_opt.zero_grad(set_to_none=True)
            self.dec_opt.zero_grad(set_to_none=True)
            out = self.loss(model, burn, beta)
            out.loss.backward()
            trainer.clip_and_step(self.enc_opt, model.parameters())  # He et al. clip the global norm
            steps += 1
            # loss is a mean over sentences; summed in float64 on the device, read once per check
            block_loss = out.loss.detach().double() * len(burn) + block_loss
            block_words += burn.n_targets
            if steps % p.check_every == 0:
                current = float(block_loss) / block_words
                if current > previous:
                    break
                previous, block_loss, block_words = current, 0.0, 0
        return steps

    def train_step(self, trainer: "TrainingContext", batch: "Batch", beta: float) -> StepOutput:
        self._optimizers(trainer)
        self.last_inner_steps = self._inner_loop(trainer, batch, beta) if self.aggressive else 0
        self.enc_opt.zero_grad(set_to_none=True)
        self.dec_opt.zero_grad(set_to_none=True)
        out = self.loss(trainer.model, batch, beta)
        out.loss.backward()
        trainer.clip_and_step(self.dec_opt, trainer.model.parameters())  # He et al. clip all parameters
        if not self.aggressive:
            self.enc_opt.step()
        return out

    def end_epoch(self, trainer: "TrainingContext", valid: dict[str, float]) -> None:
        """He et al.: the aggressive phase ends after the first epoch whose validation MI is below the
        previous epoch's (below 0 for the first); no MI to compare (the LM) ends it too."""
        if not self.aggressive:
            return
        mi = valid.get("mi", -math.inf)
        if mi < self.pre_mi:
            self.aggressive = False
        self.pre_mi = mi

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"aggressive": self.aggressive, "pre_mi": self.pre_mi,
                                 "inner_steps": self.last_inner_steps, "generator": self.generator.get_state()}
        if self.enc_opt is not None:
            state.update(lr=self.lr, enc_opt=self.enc_opt.state_dict(), dec_opt=self.dec_opt.state_dict())
        else:
            state.update(self._pending)  # loaded but not rebuilt yet: keep it for the next checkpoint
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.aggressive = bool(state["aggressive"])
        self.pre_mi = float(state["pre_mi"])
        self.last_inner_steps = int(state.get("inner_steps", 0))
        if "generator" in state:
            self.generator.set_state(state["generator"])
        # rebuilt (and these states loaded) at the next step, against the trainer's LR then
        self.enc_opt = self.dec_opt = None
        self.lr = None
        self._pending = {k: state[k] for k in ("lr", "enc_opt", "dec_opt") if k in state}
