"""Minimum desired rate, MDR (Pelsmaeker & Aziz, ACL 2020, "Effective Estimation of Deep Generative Language
Models"): maximise the ELBO subject to the rate R = E_x KL(q(z|x) || p(z)) >= r, through its Lagrangian

    min_theta max_lambda  E_B[Rec + KL] + |lambda| (r - R_B),    R_B = mean_b KL_b over the batch,

with the multiplier learned by gradient ascent, as in the authors' code (tom-pelsmaeker/deep-generative-lm,
model/base_decoder.py `_compute_constraint`, scripts/generative.py): lambda starts at 1.01, its gradient
g = sign(lambda) (r - R_B) is ascended by RMSprop at the model's learning rate there (1e-3 by default;
alpha 0.99, eps 1e-8, PyTorch's), v <- 0.99 v + 0.01 g^2, lambda <- lambda + lr g / (sqrt(v) + 1e-8),
after each optimiser step of the model. Unlike free bits the penalty has no kink, and the multiplier grows
only while the rate stays below r (it falls back when the constraint holds with room). With annealing
(`anneal+mdr`) beta scales the whole term, the multiplier's part included. Evaluation and model selection
use the plain ELBO.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..kernels.metrics import gaussian_kl
from . import register
from .base import Method, StepOutput, check, param

if TYPE_CHECKING:
    from ..data.batching import Batch
    from .context import SetupContext, TrainingContext

RMS_ALPHA, RMS_EPS = 0.99, 1e-8    # torch.optim.RMSprop's defaults, which Pelsmaeker & Aziz use


@dataclass
class MDRParams:
    target: float = param(5.0, "r, the minimum rate in nats per sentence (Pelsmaeker & Aziz's example: 5)")
    lr: float = param(1e-3, "RMSprop learning rate of the multiplier (their code: the model's, 1e-3)")
    init: float = param(1.01, "the multiplier's initial value (their code: 1.01); at 0 its gradient sign(0) = 0 "
                              "would hold it there")

    def __post_init__(self) -> None:
        check(self.target >= 0, f"target must be >= 0, got {self.target}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.init > 0, f"init must be > 0, got {self.init}")


@register("mdr")
class MDR(Method):
    """MDR: Lagrangian for KL >= target, multiplier learned by RMSprop ascent (Pelsmaeker & Aziz 2020)."""

    Params = MDRParams
    needs_latent = True

    def __init__(self, params: MDRParams | None = None):
        super().__init__(params)
        self.multiplier = torch.tensor(float(self.params.init))   # lambda; |lambda| weighs the constraint
        self.square_avg = torch.tensor(0.0)                        # RMSprop's running mean of g^2

    def setup(self, ctx: "SetupContext") -> None:
        super().setup(ctx)
        device = next(ctx.model.parameters()).device
        self.multiplier, self.square_avg = self.multiplier.to(device), self.square_avg.to(device)

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """(B,) KL_b + |lambda| (r - KL_b): its batch mean is KL + |lambda| (r - R_B), lambda held fixed."""
        kl = gaussian_kl(mu, logvar).sum(-1)
        return kl + self.multiplier.abs() * (self.params.target - kl)

    def ascend(self, rate: torch.Tensor) -> None:
        """One RMSprop ascent step on lambda from the batch rate R_B (a 0-dim tensor, no host read)."""
        grad = torch.sign(self.multiplier) * (self.params.target - rate.to(self.multiplier.dtype))
        self.square_avg = RMS_ALPHA * self.square_avg + (1.0 - RMS_ALPHA) * grad * grad
        self.multiplier = self.multiplier + self.params.lr * grad / (self.square_avg.sqrt() + RMS_EPS)

    def train_step(self, trainer: "TrainingContext", batch: "Batch", beta: float) -> StepOutput:
        out = super().train_step(trainer, batch, beta)
        self.ascend(out.kl.detach().mean())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"multiplier": float(self.multiplier), "square_avg": float(self.square_avg)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        device = self.multiplier.device
        self.multiplier = torch.tensor(float(state["multiplier"]), device=device)
        self.square_avg = torch.tensor(float(state["square_avg"]), device=device)
