"""A user's baseline as a plugin: KL capacity control (Burgess et al. 2018, "Understanding
disentangling in beta-VAE"). Load it with `--plugin examples/my_method.py`.

loss = Rec + gamma * |KL - C(step)|, where the capacity C rises linearly from 0 to c_max nats.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from textsvae.kernels.metrics import gaussian_kl
from textsvae.methods import schedules
from textsvae.methods import Method, register
from textsvae.methods.base import check, param


@dataclass
class CapacityParams:
    c_max: float = param(5.0, "final KL capacity C in nats per sentence")
    gamma: float = param(1.0, "weight of |KL - C| in the loss")
    epochs: float = param(10.0, "epochs for C to rise from 0 to c_max")

    def __post_init__(self) -> None:  # bad values become one-line errors
        check(self.c_max >= 0, f"c_max must be >= 0, got {self.c_max}")
        check(self.gamma > 0, f"gamma must be > 0, got {self.gamma}")
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")


@register("capacity")
class Capacity(Method):
    """KL capacity: loss = Rec + gamma * |KL - C|, C rising linearly to c_max (Burgess et al. 2018)."""

    Params = CapacityParams
    needs_latent = True  # refused with --decoder lm
    capacity = 0.0       # C at the current step

    def beta(self, step: int, epoch: int, steps_per_epoch: int) -> float:
        # called once before each training step: remember C(step), return the weight gamma
        p = self.params
        self.capacity = schedules.linear(step, 0.0, p.c_max, p.epochs * steps_per_epoch)
        return p.gamma

    def kl_term(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        kl = gaussian_kl(mu, logvar).sum(-1)  # (B,) nats per sentence
        return (kl - self.capacity).abs()
