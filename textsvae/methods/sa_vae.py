"""SA-VAE (Kim, Wiseman, Miller, Sontag & Rush, ICML 2018): semi-amortised inference."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..kernels.fast_paths import fast_paths
from ..kernels.metrics import gaussian_kl, sample_diag_gaussian
from . import register
from .base import Method, check, param

if TYPE_CHECKING:
    from ..data.batching import Batch
    from ..model.models import TextVAE


def refine(model: "TextVAE", batch: "Batch", mu: torch.Tensor, logvar: torch.Tensor, steps: int, lr: float,
           momentum: float, max_grad_norm: float, differentiable: bool,
           generator: torch.Generator | None = None, svi_batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """K steps of SVI on each example's (mu, logvar), minimising -ELBO_b = Rec_b + KL_b (one sample per step).

    v <- momentum * v + g;  lambda <- lambda - lr * v, with g = grad_lambda(-ELBO_b) / svi_batch: Kim
    et al. step on the mean loss of a batch of svi_batch sentences, so each example moves by lr /
    svi_batch times its own gradient. Kim et al. clip the mu and the logvar gradient of the whole
    batch at max_grad_norm each; here each example's is clipped at max_grad_norm / sqrt(svi_batch)
    (the same when the examples' norms are equal), so no example's refinement depends on the others
    in its batch. differentiable=True keeps the graph (create_graph) so the final loss
    back-propagates through every step into the encoder (Kim et al.'s end-to-end training); as in
    Kim et al.'s backward pass, the gradient reaching each step's (mu, logvar) is clipped too (per
    example, see _backward_row_limit), without which it can grow geometrically over the K steps.
    """
    args = (model, batch, mu, logvar, steps, lr, momentum, max_grad_norm, differentiable, generator, svi_batch)
    if not differentiable:
        return _svi(*args)
    with fast_paths(fused_output=False):  # the fused softmax + cross-entropy is not twice differentiable
        return _svi(*args)


def _svi(model: "TextVAE", batch: "Batch", mu: torch.Tensor, logvar: torch.Tensor, steps: int, lr: float,
         momentum: float, max_grad_norm: float, differentiable: bool,
         generator: torch.Generator | None, svi_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    nz = mu.shape[-1]
    with torch.enable_grad():  # evaluation calls this under no_grad; refinement needs gradients anyway
        lam = torch.cat([mu, logvar], -1)                      # (B, 2 nz): one row of variational parameters
        if not differentiable:
            lam = lam.detach().requires_grad_()
        elif not lam.requires_grad:  # a frozen encoder: nothing to back-propagate into
            lam.requires_grad_()
        clip_backward = differentiable and max_grad_norm > 0
        if clip_backward:
            backward_limit = _backward_row_limit(max_grad_norm, svi_batch, lam.shape[0])
        velocity = torch.zeros_like(lam)
        for _ in range(steps):
            mu, logvar = lam[:, :nz], lam[:, nz:]
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = sample_diag_gaussian(mu, logvar, eps)
            neg_elbo = -model.log_px_given_z(batch, z) + gaussian_kl(mu, logvar).sum(-1)     # (B,)
            # rows are independent, so the gradient of the sum is each row's own gradient
            (grad,) = torch.autograd.grad(neg_elbo.sum() / svi_batch, lam, create_graph=differentiable)
            if clip_backward:  # registered after this step's own grad call, so only the final backward sees it
                lam.register_hook(lambda g: _clip_rows(g, backward_limit))
            if max_grad_norm > 0:
                limit = max_grad_norm / svi_batch ** 0.5
                grad = torch.cat([_clip_rows(grad[:, :nz], limit), _clip_rows(grad[:, nz:], limit)], -1)
            velocity = momentum * velocity + grad
            lam = lam - lr * velocity
            if not differentiable:
                lam = lam.detach().requires_grad_()
    if not differentiable:
        lam = lam.detach()
    return lam[:, :nz], lam[:, nz:]


def _clip_rows(grad: torch.Tensor, limit: float) -> torch.Tensor:
    """Each row scaled down to norm `limit` where it is longer."""
    return grad * (limit / (grad.norm(dim=-1, keepdim=True) + 1e-12)).clamp(max=1.0)


def _backward_row_limit(max_grad_norm: float, svi_batch: int, batch_size: int) -> float:
    """Norm limit for one row of the gradient flowing back into an SVI step.

    Kim et al. clip the gradient of the batch's [mu, logvar] at max_grad_norm after every step of
    the backward pass through SVI (their loss is the mean over a batch of 32). The training loss here
    is the mean over `batch_size` sentences, so a row is (1 / batch_size) times that sentence's own
    gradient; in a batch of svi_batch equal rows Kim et al.'s clip leaves each at most
    max_grad_norm / sqrt(svi_batch) on their 1 / svi_batch scale, which is this limit on ours.
    """
    return max_grad_norm * svi_batch ** 0.5 / batch_size


@dataclass
class SAVAEParams:
    steps: int = param(20, "K, SVI steps per example (Kim et al. 2018: 10 to 20)")
    lr: float = param(1.0, "SVI learning rate (Kim et al. 2018: 1)")
    momentum: float = param(0.5, "SVI momentum (Kim et al. 2018: 0.5)")
    max_grad_norm: float = param(5.0, "clip the SVI gradients of mu and of logvar at this norm per batch of svi_batch (0: off; Kim et al. 2018: 5)")
    svi_batch: int = param(32, "the SVI loss is the mean over this many sentences, as in Kim et al.'s batches of 32 (fixed, so no batch size changes a result)")
    eval_seed: int = param(0, "seed of the SVI samples at evaluation, so evaluating twice gives the same numbers")

    def __post_init__(self) -> None:
        check(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}")
        check(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0, got {self.max_grad_norm}")
        check(self.svi_batch >= 1, f"svi_batch must be >= 1, got {self.svi_batch}")


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
                      differentiable=training, generator=generator, svi_batch=p.svi_batch)
