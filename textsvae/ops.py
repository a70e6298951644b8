"""Fused output layer + cross-entropy: the decoder's hot spot (about 70% of its FLOPs).

nll_i = logsumexp_v(l_i) - l_{i, y_i},  l_i = h_i W^T + b.
Rows go through in chunks of CHUNK_ROWS so each chunk's (rows, V) logits are still in cache
for the max / exp / sum passes. The forward pass keeps exp(l_i - m_i) (and 1 / sum) instead of
the logits, so the backward pass turns them into softmax - onehot in place: no (N, V) zeros,
log-softmax copy or second gradient buffer is made. Under autocast (bf16 on CPU, bf16/fp16 on
GPU) the three matmuls run in low precision and the softmax stays in fp32.
"""
from __future__ import annotations

import torch

CHUNK_ROWS = 512


def _nll_chunks(h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll (N,), 1/sum_v exp(l - m) (N,)); if keep is given, exp(l - m) is written into it."""
    acc = torch.promote_types(h.dtype, torch.float32)  # softmax precision: fp32 or wider
    n = h.size(0)
    nll = torch.empty(n, dtype=acc, device=h.device)
    inv_sum = torch.empty(n, dtype=acc, device=h.device)
    for start in range(0, n, CHUNK_ROWS):
        end = min(start + CHUNK_ROWS, n)
        logits = torch.mm(h[start:end], w.t()).to(acc).add_(bias)      # (C, V)
        target_logit = logits.gather(1, targets[start:end, None]).squeeze(1)
        row_max = logits.amax(1, keepdim=True)
        exp = logits.sub_(row_max).exp_()                               # in place: exp(l - m)
        total = exp.sum(1)
        nll[start:end] = row_max.squeeze(1) + total.log() - target_logit
        inv_sum[start:end] = total.reciprocal()
        if keep is not None:
            keep[start:end] = exp
    return nll, inv_sum


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, mm_dtype):
        h, w = hidden.to(mm_dtype), weight.to(mm_dtype)
        acc = torch.promote_types(h.dtype, torch.float32)
        exp = torch.empty(h.size(0), w.size(0), dtype=acc, device=h.device)
        nll, inv_sum = _nll_chunks(h, w, bias.to(acc), targets, keep=exp)
        ctx.save_for_backward(h, w, exp, inv_sum, targets)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype)
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll):
        h, w, exp, inv_sum, targets = ctx.saved_tensors
        grad = exp.mul_((grad_nll * inv_sum).unsqueeze(1))             # softmax * dnll, in place
        grad.scatter_add_(1, targets.unsqueeze(1), -grad_nll.unsqueeze(1).to(grad.dtype))
        grad_bias = grad.sum(0).to(ctx.dtypes[2])
        grad = grad.to(h.dtype)
        grad_hidden = (grad @ w).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        grad_weight = (grad.t() @ h).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return grad_hidden, grad_weight, grad_bias, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         targets: torch.Tensor) -> torch.Tensor:
    """Per-row NLL of softmax(hidden W^T + b) at targets: (N, H), (V, H), (V,), (N,) -> (N,), fp32 or wider.

    Differentiable once (the backward is not itself differentiable: SA-VAE uses the plain path).
    """
    device = hidden.device.type
    mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    with torch.autocast(device, enabled=False):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad or bias.requires_grad):
            return _LinearCrossEntropy.apply(hidden, weight, bias, targets, mm_dtype)
        h, w = hidden.to(mm_dtype), weight.to(mm_dtype)
        return _nll_chunks(h, w, bias.to(torch.promote_types(h.dtype, torch.float32)), targets, keep=None)[0]
