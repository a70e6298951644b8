"""Autoencoder pretraining, decoder reset, then free bits (Li, He, Neubig, Berg-Kirkpatrick & Yang, EMNLP 2019)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import schedules
from . import register
from .base import Method, check, param
from .free_bits import MODES, free_bits_kl

if TYPE_CHECKING:
    from .context import TrainingContext

log = logging.getLogger(__name__)


@dataclass
class PretrainFBParams:
    pretrain_epochs: int = param(5, "epochs of autoencoder pretraining (beta = 0) before the decoder reset; -1: a "
                                    "whole autoencoder run, until the LR rule or the epoch budget ends it (Li et al.)")
    target: float = param(8.0, "free-bits target KL in nats after the reset (Li et al. 2019: 8)")
    mode: str = param("sentence-dim", "free-bits variant after the reset: 'sentence-dim' (each sentence's KL per "
                                      "dim floored at target/nz, Li et al.'s code), 'dim' (batch-averaged) or 'sentence'")
    kl_start: float = param(0.0, "beta right after the reset (Li et al.'s scripts: 0)")
    warmup_epochs: float = param(10.0, "epochs for beta to reach 1 after the reset (Li et al.'s scripts: 10; 0: at once)")

    def __post_init__(self) -> None:
        check(self.pretrain_epochs >= -1, f"pretrain_epochs must be >= 0, or -1 for a whole run, got {self.pretrain_epochs}")
        check(self.target >= 0, f"target must be >= 0, got {self.target}")
        check(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        check(0.0 <= self.kl_start <= 1.0, f"kl_start must be in [0, 1], got {self.kl_start}")
        check(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")


@register("pretrain-fb")
class PretrainFB(Method):
    """AE pretraining (beta 0), then reset the decoder and train with free bits and KL warm-up (Li et al. 2019).

    Phase 1: beta = 0, no KL floor (an autoencoder), its model selection and LR rule on the
    reconstruction loss. With pretrain_epochs = N it lasts N epochs; at their end the decoder is
    re-initialised, the optimiser made afresh at the current LR, and the best model and plateau
    count forgotten. With pretrain_epochs = -1 it is a whole run, as Li et al. train their
    autoencoder (text_beta.py, then text_anneal_fb.py --reset_dec): when the LR rule or the epoch
    budget ends it, its best model is reloaded, the decoder re-initialised, and training goes on as
    a new run (initial LR, no halvings, its own epoch budget and decay start).
    Phase 2: beta rises linearly from kl_start to 1 over warmup_epochs (counted from the reset),
    and the KL penalty is floored by free bits.
    """

    Params = PretrainFBParams
    needs_latent = True

    def __init__(self, params: PretrainFBParams | None = None):
        super().__init__(params)
        self.pretraining = self.params.pretrain_epochs != 0   # -1: a whole run
        self.reset_step = 0  # optimiser step at which phase 2 began

    def beta(self, step: int, epoch: int, steps_per_epoch: int) -> float:
        if self.pretraining:
            return 0.0
        p = self.params
        return schedules.linear(step - self.reset_step, p.kl_start, 1.0, p.warmup_epochs * steps_per_epoch)

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        if self.pretraining:
            return super().kl_term(mu, logvar)  # weighted by beta = 0 anyway
        return free_bits_kl(mu, logvar, self.params.target, self.params.mode)

    def selection_loss(self, valid: dict[str, float]) -> float:
        return valid["rec"] if self.pretraining else valid["loss"]

    def end_epoch(self, trainer: "TrainingContext", valid: dict[str, float]) -> None:
        if self.pretraining and self.params.pretrain_epochs < 0:
            self._end_of_whole_pretraining(trainer)
            return
        if self.pretraining and trainer.state.epoch >= self.params.pretrain_epochs and trainer.state.done:
            # no epoch is left to train (or validate) a reset decoder: keep the autoencoder that was validated
            log.warning("pretrain-fb: the run ends during autoencoder pretraining (epoch %d of pretrain_epochs=%d); "
                        "its model is the pretrained autoencoder, without a decoder reset or free bits",
                        trainer.state.epoch, self.params.pretrain_epochs)
            return
        if self.pretraining and trainer.state.epoch >= self.params.pretrain_epochs:
            self.pretraining = False
            self.reset_step = trainer.state.step
            trainer.model.reset_parameters(trainer.model.decoder)
            trainer.optimizer = trainer.make_optimizer(trainer.model.parameters(), trainer.state.lr)
            trainer.restart_model_selection()  # an AE-phase model is no candidate for the final VAE
            log.info("pretrain-fb: autoencoder pretraining done after epoch %d; decoder reset, free bits from now",
                     trainer.state.epoch)

    def _end_of_whole_pretraining(self, trainer: "TrainingContext") -> None:
        """Once the autoencoder run is over: its best model, a new decoder, and a new run from there."""
        t, s = trainer.config.train, trainer.state
        if not s.done:
            return
        if t.max_steps is not None and s.step >= t.max_steps:
            log.warning("pretrain-fb: the step budget ends the run during autoencoder pretraining; its model is "
                        "the pretrained autoencoder, without a decoder reset or free bits")
            return
        log.info("pretrain-fb: the autoencoder run ended after epoch %d (%s); its best model (epoch %d) goes on with "
                 "a new decoder, as a new run with free bits", s.epoch, s.stop_reason, s.best_epoch)
        trainer.reload_best()
        self.pretraining = False
        self.reset_step = s.step
        trainer.model.reset_parameters(trainer.model.decoder)
        trainer.restart_phase()

    def state_dict(self) -> dict[str, Any]:
        return {"pretraining": self.pretraining, "reset_step": self.reset_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.pretraining = bool(state["pretraining"])
            self.reset_step = int(state["reset_step"])
