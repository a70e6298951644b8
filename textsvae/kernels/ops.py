"""Fused output layer + cross-entropy: the decoder's hot spot (about 70% of its FLOPs).

nll_i = logsumexp_v(l_i) - l_{i, y_i},  l_i = h_i W^T + b.
Rows go through in equal chunks of at most CHUNK_ROWS (without a backward pass only one chunk's
(rows, V) logits exist at a time). The forward pass keeps E_i = exp(l_i - m_i) and 1 / sum_v E_iv
instead of the logits (m_i = 0 on the CPU, see _nll_chunks). In fp32 the backward pass reads E
only through its two matmuls, the per-row scales going onto the (N, H) side; with low-precision
matmuls it turns E into softmax - onehot in place. No (N, V) zeros, log-softmax copy or second
gradient buffer is made. The matmul writes straight into that kept
buffer (or into one chunk buffer), and both are reused from call to call on the CPU: a fresh
block of tens of MB costs a page fault per 4 kB on every call. Those buffers' rows start a
multiple of VOCAB_ALIGN elements apart (the logits are a (N, V) view of a (N, V rounded up)
buffer): unaligned rows ran the fp32 matmul markedly slower at V = 10002 (`benchmarks/perf/output_layer.py`,
results/perf.md). Under autocast (bf16 on CPU, bf16/fp16
on GPU) the three matmuls run in low precision and the softmax stays in fp32.
"""
from __future__ import annotations

import contextlib

import torch

from .fast_paths import switches

CHUNK_ROWS = 1024
VOCAB_ALIGN = 32
LOG2E = 1.4426950408889634      # log2(e)
LN2 = 0.6931471805599453        # ln(2) = 1 / LOG2E
SAFE_SUM = (2.0 ** -60, 2.0 ** 60)  # a row's sum of 2^l2 outside this is redone shifted by its max
MAX_RUNS = 256                  # _sum_rows_per_sample: more runs of one sample's rows than this use index_add_


def autocast_on(device_type: str) -> bool:
    """torch.is_autocast_enabled(device_type); False on a device without autocast (such as meta)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False


def autocast_off(device_type: str):
    """torch.autocast(device_type, enabled=False), or no context on a device without autocast."""
    try:
        return torch.autocast(device_type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


class _Workspace:
    """Reusable CPU buffers, one per name and dtype, handed out only while no one else holds them."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype], tuple[torch.Tensor, int]] = {}

    @staticmethod
    def _users(buffer: torch.Tensor) -> int:
        return torch._C._storage_Use_Count(buffer.untyped_storage()._cdata)

    def take(self, name: str, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised (rows, cols) tensor; a fresh one on GPUs (their allocator caches already)."""
        if device.type != "cpu" or not hasattr(torch._C, "_storage_Use_Count"):
            return torch.empty(rows, cols, dtype=dtype, device=device)
        cached = self._buffers.get((name, dtype))
        # a view saved for a backward pass that has not run yet keeps the buffer busy: leave it to its owner
        if cached is None or cached[0].numel() < rows * cols or self._users(cached[0]) != cached[1]:
            buffer = torch.empty(rows * cols, dtype=dtype)
            cached = self._buffers[(name, dtype)] = (buffer, self._users(buffer))  # its count when idle
        return cached[0][: rows * cols].view(rows, cols)


WORKSPACE = _Workspace()


def aligned_rows(rows: int, cols: int, dtype: torch.dtype, device: torch.device, name: str) -> torch.Tensor:
    """A (rows, cols) view whose rows start VOCAB_ALIGN elements apart, from the workspace."""
    padded = -(-cols // VOCAB_ALIGN) * VOCAB_ALIGN
    return WORKSPACE.take(name, rows, padded, dtype, device)[:, :cols]


def _redo_shifted(rows: torch.Tensor, h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor,
                  row_base: tuple[torch.Tensor, torch.Tensor] | None, exp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of one chunk (h, row_base and exp that chunk's) redone the usual way: exp[rows] = 2^(l2 - m2).

    Returns (sum, m2) per row."""
    acc = exp.dtype
    base = bias if row_base is None else row_base[0][row_base[1][rows]]
    l2 = torch.addmm(base.to(acc), h[rows].to(acc), w.t().to(acc)).mul_(LOG2E)
    row_max = l2.amax(1, keepdim=True)
    redone = l2.sub_(row_max).exp2_()
    exp[rows] = redone
    return redone.sum(1), row_max.squeeze(1)


def skips_row_max(device: torch.device) -> bool:
    """Whether the softmax skips its row-max shift: on the CPU with the fewer_passes fast path. Its check
    of each chunk's sums is a host read, a sync on a GPU, which therefore shifts every row by its max."""
    return switches().fewer_passes and device.type == "cpu"


def _nll_chunks(h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                keep: torch.Tensor | None, row_base: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll (N,), 1/s (N,)) with s = sum_v 2^(l2 - m2); if keep (N, V) is given, 2^(l2 - m2) is left in it.

    Works in base 2: the matmul writes l2 = log2(e) * l (its alpha and beta, so no extra pass) and
    exp(l - m) = 2^(l2 - m2), ATen's exp2 kernel being faster than its exp on the CPU
    (`benchmarks/perf/kernels.py`). The shift m2 is 0 on the CPU with the fewer_passes fast path
    (no row-max pass, no subtraction pass): fp32 holds 2^l2 exactly as well for any |l2| < 126,
    and rows whose sum leaves SAFE_SUM (overflow, or every logit far below 0) are redone shifted
    by their max. On other devices m2 is the row max (a per-chunk check would sync with the host).
    row_base = (U, index) replaces the bias: l_i = h_i W^T + U[index_i].
    """
    acc = torch.promote_types(h.dtype, torch.float32)  # softmax precision: fp32 or wider
    n, vocab = h.size(0), w.size(0)
    nll = torch.empty(n, dtype=acc, device=h.device)
    inv_sum = torch.empty(n, dtype=acc, device=h.device)
    rows = -(-n // max(1, -(-n // CHUNK_ROWS)))      # equal chunks: a small last one runs the matmul slowly
    scratch = wide = None
    if keep is None or h.dtype != acc:
        scratch = aligned_rows(min(n, rows), vocab, h.dtype, h.device, "logits")
    if keep is None and h.dtype != acc:
        wide = aligned_rows(min(n, rows), vocab, acc, h.device, "wide")
    bias_2 = bias * LOG2E if h.dtype != acc else None
    shift_free = skips_row_max(h.device)
    for start in range(0, n, rows):
        end = min(start + rows, n)
        out = scratch[: end - start] if scratch is not None else keep[start:end]
        if row_base is not None:                                        # l2 = log2(e) (h W^T + U[index])
            base = torch.index_select(row_base[0], 0, row_base[1][start:end], out=out)
            logits = torch.addmm(base, h[start:end], w.t(), beta=LOG2E, alpha=LOG2E, out=out)
        elif h.dtype == acc:                                            # l2 = log2(e) (h W^T + b), one pass
            logits = torch.addmm(bias, h[start:end], w.t(), beta=LOG2E, alpha=LOG2E, out=out)
        else:                                                           # low-precision matmul, fp32 bias
            low = torch.mm(h[start:end], w.t(), out=out)
            logits = (keep[start:end] if keep is not None else wide[: end - start]).copy_(low)
            logits = torch.add(bias_2, logits, alpha=LOG2E, out=logits)
        target_logit = logits.gather(1, targets[start:end, None]).squeeze(1)
        if shift_free:
            total = logits.exp2_().sum(1)                               # in place: 2^l2
            shift = torch.zeros_like(total)
            redo = ((total < SAFE_SUM[0]) | ~(total <= SAFE_SUM[1])).nonzero().squeeze(1)  # ~(<=): also NaN
            if redo.numel():
                chunk_base = None if row_base is None else (row_base[0], row_base[1][start:end])
                total[redo], shift[redo] = _redo_shifted(redo, h[start:end], w, bias, chunk_base, logits)
        else:
            row_max = logits.amax(1, keepdim=True)
            total = logits.sub_(row_max).exp2_().sum(1)                 # in place: 2^(l2 - m2)
            shift = row_max.squeeze(1)
        nll[start:end] = (shift - target_logit) * LN2 + total.log()
        inv_sum[start:end] = total.reciprocal()
    return nll, inv_sum


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, mm_dtype):
        h, w = hidden.to(mm_dtype), weight.to(mm_dtype)
        acc = torch.promote_types(h.dtype, torch.float32)
        exp = aligned_rows(h.size(0), w.size(0), acc, h.device, "exp")
        nll, inv_sum = _nll_chunks(h, w, bias.to(acc), targets, keep=exp)
        ctx.save_for_backward(h, w, exp, inv_sum, targets)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype)
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll):
        h, w, exp, inv_sum, targets = ctx.saved_tensors
        if exp.dtype != h.dtype or not switches().fewer_passes:       # low-precision matmuls
            return _backward_via_softmax(ctx, grad_nll)
        scale = grad_nll * inv_sum
        grad_hidden = _grad_hidden(exp, w, scale, grad_nll, targets).to(ctx.dtypes[0]) \
            if ctx.needs_input_grad[0] else None
        grad_weight = _grad_weight(exp, h, scale, grad_nll, targets).to(ctx.dtypes[1]) \
            if ctx.needs_input_grad[1] else None
        # db likewise with 1 for h, a matrix-vector product (a 257th matmul column cost more)
        grad_bias = (exp.t() @ scale).index_add_(0, targets, grad_nll, alpha=-1).to(ctx.dtypes[2])
        return grad_hidden, grad_weight, grad_bias, None, None


# fp32 backward passes: dnll/dl = g (p - onehot) with p = s E (s = inv_sum per row, E = exp as kept).
# The matmuls read E as it is and the row scales s, g go onto the (N, H) side: no pass over (N, V).
def _grad_hidden(exp: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, grad_nll: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
    """dnll/dh = s (E W) - g W_y (scale = g s)."""
    return (exp @ w).mul_(scale.unsqueeze(1)).sub_(grad_nll.unsqueeze(1) * w[targets])


def _grad_weight(exp: torch.Tensor, h: torch.Tensor, scale: torch.Tensor, grad_nll: torch.Tensor,
                 targets: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """dnll/dW = E^T (s h) - the sum of g h over the rows with target v (written into out if given)."""
    return torch.mm(exp.t(), h * scale.unsqueeze(1), out=out).index_add_(0, targets, h * grad_nll.unsqueeze(1),
                                                                        alpha=-1)


def _backward_via_softmax(ctx, grad_nll):
    """The backward pass for low-precision matmuls: g (softmax - onehot) made in place, then cast for them."""
    h, w, exp, inv_sum, targets = ctx.saved_tensors
    scale, bias_first = grad_nll * inv_sum, switches().fewer_passes
    if bias_first:                     # db = E^T s - the targets' g, as the fp32 backward: a read, no (N, V) sum
        with autocast_off(exp.device.type):                             # fp32, even if backward() runs under autocast
            grad_bias = (exp.t() @ scale).index_add_(0, targets, grad_nll, alpha=-1).to(ctx.dtypes[2])
    grad = exp.mul_(scale.unsqueeze(1))                                 # softmax * dnll, in place
    grad.scatter_add_(1, targets.unsqueeze(1), -grad_nll.unsqueeze(1).to(grad.dtype))
    if not bias_first:
        grad_bias = grad.sum(0).to(ctx.dtypes[2])
    if grad.dtype != h.dtype:                                           # keep the rows aligned for the matmuls
        grad = aligned_rows(*grad.shape, h.dtype, h.device, "grad").copy_(grad)
    grad_hidden = (grad @ w).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
    grad_weight = (grad.t() @ h).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
    return grad_hidden, grad_weight, grad_bias, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         targets: torch.Tensor) -> torch.Tensor:
    """Per-row NLL of softmax(hidden W^T + b) at targets: (N, H), (V, H), (V,), (N,) -> (N,), fp32 or wider.

    Differentiable once (the backward is not itself differentiable: SA-VAE uses the plain path).
    """
    device = hidden.device.type
    mm_dtype = torch.get_autocast_dtype(device) if autocast_on(device) else hidden.dtype
    with autocast_off(device):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad or bias.requires_grad):
            return _LinearCrossEntropy.apply(hidden, weight, bias, targets, mm_dtype)
        h, w = hidden.to(mm_dtype), weight.to(mm_dtype)
        return _nll_chunks(h, w, bias.to(torch.promote_types(h.dtype, torch.float32)), targets, keep=None)[0]


class _SkipLinearCrossEntropy(torch.autograd.Function):
    """softmax(W_h h_i + U_s(i)) with U = z W_z^T + b, z's part once per sample in both passes (fp32)."""

    @staticmethod
    def forward(ctx, hidden, z, row_sample, weight, bias, targets):
        exp = aligned_rows(hidden.size(0), weight.size(0), hidden.dtype, hidden.device, "exp")
        nll, inv_sum = _skip_nll_chunks(hidden, z, row_sample, weight, bias, targets, keep=exp)
        ctx.save_for_backward(hidden, z, row_sample, weight, exp, inv_sum, targets)
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll):
        # as _LinearCrossEntropy's fp32 backward for W_h and h; U's gradient is summed per sample:
        # dU_s = sum over rows i of sample s of g_i (s_i E_i - onehot(y_i)), then dz, dW_z and db from it
        hidden, z, row_sample, weight, exp, inv_sum, targets = ctx.saved_tensors
        h_dim = hidden.size(1)
        w_h, w_z = weight[:, :h_dim], weight[:, h_dim:]
        scale = grad_nll * inv_sum
        grad_hidden = _grad_hidden(exp, w_h, scale, grad_nll, targets)
        grad_weight = torch.empty_like(weight)
        _grad_weight(exp, hidden, scale, grad_nll, targets, out=grad_weight[:, :h_dim])  # straight into its columns
        grad_u = _sum_rows_per_sample(exp, scale, row_sample, z.size(0))
        grad_u.index_put_((row_sample, targets), -grad_nll, accumulate=True)
        torch.mm(grad_u.t(), z, out=grad_weight[:, h_dim:])
        return grad_hidden, grad_u @ w_z, None, grad_weight, grad_u.sum(0), None


def _sum_rows_per_sample(exp: torch.Tensor, scale: torch.Tensor, row_sample: torch.Tensor, samples: int) -> torch.Tensor:
    """(samples, V): sum over the rows i of each sample of scale_i E_i.

    On the CPU, rows of one sample come in runs (a sentence's targets are consecutive), so each run
    is one matrix-vector product: one read of E and no (N, V) write (index_add_ on the strided E ran
    as a slow scatter). Past MAX_RUNS runs, and on GPUs (no host sync), a scaled copy and index_add_.
    """
    out = torch.zeros(samples, exp.size(1), dtype=exp.dtype, device=exp.device)
    if exp.device.type == "cpu":
        values, counts = torch.unique_consecutive(row_sample, return_counts=True)
        if values.numel() <= MAX_RUNS:
            start = 0
            for value, count in zip(values.tolist(), counts.tolist()):
                out[value].addmv_(exp[start:start + count].t(), scale[start:start + count])
                start += count
            return out
    return out.index_add_(0, row_sample, exp * scale.unsqueeze(1))


def _skip_nll_chunks(hidden: torch.Tensor, z: torch.Tensor, row_sample: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """_nll_chunks of the skip layer with U = z W_z^T + b (S, V) once per sample in place of the bias."""
    h_dim = hidden.size(1)
    per_sample = torch.addmm(bias, z, weight[:, h_dim:].t())
    return _nll_chunks(hidden, weight[:, :h_dim], bias, targets, keep=keep, row_base=(per_sample, row_sample))


def skip_cross_entropy(hidden: torch.Tensor, z: torch.Tensor, row_sample: torch.Tensor, weight: torch.Tensor,
                       bias: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row NLL of softmax(W [h_i ; z_s(i)] + b), the skip decoder's output layer.

    (N, H), (S, D), (N,) sample of each row, (V, H + D), (V,), (N,) -> (N,). Its z-part is the same
    at every step of a sample, so U = z W_z^T + b is computed once per sample (S rows) and gathered
    per row where the bias would be added: the per-row matmuls have inner size H, not H + D
    (11% fewer multiply-adds at H = 256, D = 32). With gradients, U's gradient is summed over each
    sample's rows (one pass over the kept softmax block) before dz and dW_z. Autocast, other dtypes
    and the z_term_per_sample fast path off take the concatenated path.
    """
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (hidden, z, weight, bias))
    on = switches()
    if not on.z_term_per_sample or autocast_on(hidden.device.type) or hidden.dtype != torch.float32 \
            or (needs_grad and not on.fewer_passes):      # the per-sample backward is a fewer-passes one
        return linear_cross_entropy(torch.cat([hidden, z[row_sample]], dim=-1), weight, bias, targets)
    if needs_grad:
        return _SkipLinearCrossEntropy.apply(hidden, z, row_sample, weight, bias, targets)
    return _skip_nll_chunks(hidden, z, row_sample, weight, bias, targets, keep=None)[0]
