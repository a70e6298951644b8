"""SA-VAE (Kim, Wiseman, Miller, Sontag & Rush, ICML 2018): semi-amortised inference."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..metrics import gaussian_kl
from . import register
from .base import Method, check, param

if TYPE_CHECKING:
    from ..data.batching import Batch
    from ..models import TextVAE


def refine(model: "TextVAE", batch: "Batch", mu: torch.Tensor, logvar: torch.Tensor, steps: int, lr: float,
           momentum: float, max_grad_norm: float, differentiable: bool,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """K steps of SVI on each example's (mu, logvar), minimising -ELBO_b = Rec_b + KL_b (one sample per step).

    v <- momentum * v + g;  lambda <- lambda - lr * v, with g the per-example gradient, its norm clipped
    at max_grad_norm. differentiable=True keeps the graph (create_graph) so the final loss
    back-propagates through every step into the encoder (Kim et al.'s end-to-end training).
    """
    decoder = model.decoder
    fused = getattr(decoder, "fused_loss", False)
    if differentiable:
        decoder.fused_loss = False  # the fused softmax + cross-entropy is not twice differentiable
    try:
        return _svi(model, batch, mu, logvar, steps, lr, momentum, max_grad_norm, differentiable, generator)
    finally:
        if fused:
            decoder.fused_loss = fused


def _svi(model: "TextVAE", batch: "Batch", mu: torch.Tensor, logvar: torch.Tensor, steps: int, lr: float,
         momentum: float, max_grad_norm: float, differentiable: bool,
         generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():  # evaluation calls this under no_grad; refinement needs gradients anyway
        if not differentiable:
            mu, logvar = mu.detach().requires_grad_(), logvar.detach().requires_grad_()
        elif not mu.requires_grad:  # a frozen encoder: nothing to back-propagate into
            mu, logvar = mu.requires_grad_(), logvar.requires_grad_()
        v_mu, v_lv = torch.zeros_like(mu), torch.zeros_like(logvar)
        for _ in range(steps):
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps
            neg_elbo = -model.log_px_given_z(batch, z) + gaussian_kl(mu, logvar).sum(-1)     # (B,)
            # rows are independent, so the gradient of the sum is each row's own gradient
            g_mu, g_lv = torch.autograd.grad(neg_elbo.sum(), (mu, logvar), create_graph=differentiable)
            if max_grad_norm > 0:
                norm = torch.cat([g_mu, g_lv], -1).norm(dim=-1, keepdim=True)            # (B, 1)
                scale = (max_grad_norm / (norm + 1e-12)).clamp(max=1.0)
                g_mu, g_lv = g_mu * scale, g_lv * scale
            v_mu, v_lv = momentum * v_mu + g_mu, momentum * v_lv + g_lv
            mu, logvar = mu - lr * v_mu, logvar - lr * v_lv
            if not differentiable:
                mu, logvar = mu.detach().requires_grad_(), logvar.detach().requires_grad_()
    if not differentiable:
        mu, logvar = mu.detach(), logvar.detach()
    return mu, logvar


@dataclass
class SAVAEParams:
    steps: int = param(20, "K, SVI steps per example (Kim et al. 2018: 10 to 20)")
    lr: float = param(1.0, "SVI learning rate (Kim et al. 2018: 1)")
    momentum: float = param(0.5, "SVI momentum (Kim et al. 2018: 0.5)")
    max_grad_norm: float = param(5.0, "clip each example's SVI gradient norm (0: off; Kim et al. 2018: 5)")
    eval_seed: int = param(0, "seed of the SVI samples at evaluation, so evaluating twice gives the same numbers")

    def __post_init__(self) -> None:
        check(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}")
        check(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0, got {self.max_grad_norm}")


@register("sa-vae")
class SAVAE(Method):
    """SA-VAE: encoder output refined by K SVI steps per example, trained end to end through them (Kim et al. 2018)."""

    Params = SAVAEParams
    needs_latent = True

    def posterior(self, model: "TextVAE", batch: "Batch") -> tuple[torch.Tensor, torch.Tensor]:
        """Refined (mu, logvar): differentiable in training, detached (fixed-seed samples) at evaluation."""
        p = self.params
        mu, logvar = model.encode(batch)
        training = model.training and torch.is_grad_enabled()
        generator = None
        if not training:
            generator = torch.Generator(device=mu.device).manual_seed(p.eval_seed)
        return refine(model, batch, mu, logvar, p.steps, p.lr, p.momentum, p.max_grad_norm,
                      differentiable=training, generator=generator)
