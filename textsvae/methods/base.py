"""The Method plug-in: how one training step turns a batch into a loss, and its hooks.

A method is one file in this folder: a class decorated with @register("name"), whose
`Params` dataclass holds its parameters (`param(default, help)` fields, values checked in
`__post_init__` with `check`) and whose docstring's first line cites the paper. The default behaviour is the plain ELBO, rec + beta * KL with
beta from `beta()`; methods override only what they change.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..core.config import ConfigError
from ..kernels.metrics import gaussian_kl

if TYPE_CHECKING:
    from ..data.batching import Batch
    from ..model.models import TextVAE
    from .context import SetupContext, TrainingContext


class MethodError(ConfigError):
    """Unknown method or parameter, or a bad parameter value (one line for the user)."""


def param(default: Any, help: str) -> Any:
    """A Params field with its default and a one-line help shown by `textsvae methods`."""
    return field(default=default, metadata={"help": help})


def check(ok: bool, message: str) -> None:
    """For Params.__post_init__: raise ValueError(message) unless ok (build_method makes it a MethodError)."""
    if not ok:
        raise ValueError(message)


@dataclass
class NoParams:
    """A method without parameters."""


@dataclass
class StepOutput:
    """One batch's objective: `loss` (a scalar to minimise) and per-sentence sums for the log."""

    loss: torch.Tensor
    rec: torch.Tensor   # (B,) -log p(x|z), one sample
    kl: torch.Tensor    # (B,) KL(q(z|x) || p(z)), analytic


class Method:
    """Base class: the ELBO with beta = 1. Subclasses set `name` (via @register) and `Params`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    needs_latent: ClassVar[bool] = False  # True: meaningless without z, so `--decoder lm` is refused

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    # -- set-up ------------------------------------------------------------------
    def setup(self, ctx: "SetupContext") -> None:
        """Called once after the model is built and before the optimiser is (e.g. add a BN layer),
        in training and when a run is rebuilt for evaluation (`context.py` lists what ctx holds).

        Overrides call `super().setup(ctx)` first: it refuses the LM for methods that need z.
        """
        if self.needs_latent and ctx.model.is_lm:
            raise MethodError(f"method '{self.name}' acts on the latent z; it cannot run with --decoder lm "
                              f"(use --decoder standard or skip)")

    # -- the objective -------------------------------------------------------------
    def beta(self, step: int, epoch: int, steps_per_epoch: int) -> float:
        """Weight of the KL term at this optimiser step (0-based); validation always uses 1."""
        return 1.0

    def posterior(self, model: "TextVAE", batch: "Batch") -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x) used for training and evaluation (SA-VAE refines them here)."""
        return model.encode(batch)

    def decoder_inputs(self, model: "TextVAE", batch: "Batch") -> torch.Tensor | None:
        """Decoder inputs during training; None keeps the batch's own (word dropout changes them)."""
        return None

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """(B,) the KL penalty that enters the training loss (free bits floors it)."""
        return gaussian_kl(mu, logvar).sum(-1)

    def extra_loss(self, model: "TextVAE", batch: "Batch", z: torch.Tensor) -> torch.Tensor | None:
        """(B,) a term added to each sentence's training loss, not weighted by beta (the bag-of-words
        head's loss), given the sample z (B, D) that the reconstruction used; None adds nothing."""
        return None

    def loss(self, model: "TextVAE", batch: "Batch", beta: float) -> StepOutput:
        """mean over sentences of rec + beta * KL (+ extra_loss), one reparameterised sample of z."""
        inputs = self.decoder_inputs(model, batch)
        if model.is_lm:
            rec = -model.log_px_given_z(batch, None, inputs=inputs)
            kl = torch.zeros_like(rec)
            return StepOutput(rec.mean(), rec, kl)
        mu, logvar = self.posterior(model, batch)
        z = model.sample(mu, logvar)
        rec = -model.log_px_given_z(batch, z, inputs=inputs)
        kl = gaussian_kl(mu, logvar).sum(-1)
        per_sentence = rec + beta * self.kl_term(mu, logvar)
        extra = self.extra_loss(model, batch, z)
        if extra is not None:
            per_sentence = per_sentence + extra
        return StepOutput(per_sentence.mean(), rec, kl)

    # -- the step and the epoch -------------------------------------------------------
    def train_step(self, trainer: "TrainingContext", batch: "Batch", beta: float) -> StepOutput:
        """One optimiser step on the whole model (aggressive training overrides this)."""
        trainer.optimizer.zero_grad(set_to_none=True)
        out = self.loss(trainer.model, batch, beta)
        out.loss.backward()
        trainer.clip_and_step(trainer.optimizer)
        return out

    def selection_loss(self, valid: dict[str, float]) -> float:
        """The validation number that picks best.pt and drives the LR rule: -ELBO at beta = 1 by default
        (pretrain-fb's autoencoder phase uses the reconstruction loss, as Li et al.'s AE run does)."""
        return valid["loss"]

    def end_epoch(self, trainer: "TrainingContext", valid: dict[str, float]) -> None:
        """Called after each epoch's validation and the LR rule (phase switches: aggressive, pretrain-fb)."""

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Mutable method state to checkpoint (phases, counters); parameters live in the config."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def param_values(self) -> dict[str, Any]:
        """{parameter: value}, as saved in the run's config.json and accepted back by build_method."""
        return asdict(self.params)

