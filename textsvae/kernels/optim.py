"""The optimiser step: global-norm gradient clipping that also takes sparse embedding gradients.

clip_grad_norm scales every gradient by min(1, max_norm / (||g|| + 1e-6)), ||g|| being the L2 norm of
all gradients as one vector (as torch.nn.utils.clip_grad_norm_, to the bit for dense gradients).
A batch touches a few hundred of the 10k rows of each embedding, so under plain SGD the embeddings
can take sparse gradients (`sparse_embeddings`): the backward pass no longer fills a dense (V, E)
gradient with zeros, and clipping and the SGD update read only the touched rows. Adam keeps dense
gradients (its moments decay every row at every step), and so does SGD with momentum. So do GPUs:
a sparse gradient's backward pass and coalescing size their outputs by the data, a host sync at
every step, while zero-filling a dense gradient there is cheap.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .fast_paths import switches


def sparse_embeddings(model: nn.Module, optimizer: str, momentum: float) -> bool:
    """Switch the model's embeddings to sparse gradients where the optimiser applies them exactly and
    the model is on the CPU; returns whether it did."""
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    use = switches().sparse_embeddings and optimizer == "sgd" and momentum == 0 and on_cpu
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            module.sparse = use
    return use


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients in place so that their global L2 norm is at most max_norm; returns the norm
    before clipping. Sparse gradients are coalesced first (a row's duplicates summed), so that their
    values' norm is the gradient's."""
    grads = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad._values())
        else:
            grads.append(p.grad)
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))   # one call, as torch's
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    # on the CPU, reading the scale costs no device sync, and a scale of 1 changes nothing
    if total.device.type != "cpu" or scale.item() < 1.0:
        torch._foreach_mul_(grads, scale)
    return total
