"""The fast paths equal the straightforward computation."""
import pytest
import torch
import torch.nn.functional as F

from textsvae.core.config import ModelConfig
from textsvae.data.batching import make_batch
from textsvae.kernels import ops
from textsvae.kernels.fast_paths import fast_paths
from textsvae.kernels.ops import linear_cross_entropy
from textsvae.model.models import TextVAE


def _inputs(dtype=torch.float64, n=50, h=16, v=30):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=g).to(dtype).requires_grad_()
    weight = torch.randn(v, h, generator=g).to(dtype).requires_grad_()
    bias = torch.randn(v, generator=g).to(dtype).requires_grad_()
    targets = torch.randint(v, (n,), generator=g)
    return hidden, weight, bias, targets


def use_the_gpu_softmax(monkeypatch, gpu: bool) -> None:
    """gpu: run the softmax as on a GPU (every row shifted by its max) here on the CPU."""
    if gpu:
        monkeypatch.setattr(ops, "skips_row_max", lambda device: False)


@pytest.mark.parametrize("gpu_softmax", [False, True])
@pytest.mark.parametrize("chunk_rows", [7, 512])
def test_fused_linear_cross_entropy_matches_unfused_values_and_gradients(monkeypatch, chunk_rows, gpu_softmax):
    """nll_i = logsumexp(h_i W^T + b) - (h_i W^T + b)_{y_i}; gradients against autograd of F.cross_entropy."""
    monkeypatch.setattr(ops, "CHUNK_ROWS", chunk_rows)
    use_the_gpu_softmax(monkeypatch, gpu_softmax)
    weights = torch.rand(50, dtype=torch.float64)
    h, w, b, t = _inputs()
    ref = F.cross_entropy(h @ w.t() + b, t, reduction="none")
    (ref * weights).sum().backward()
    h2, w2, b2, _ = _inputs()
    out = linear_cross_entropy(h2, w2, b2, t)
    (out * weights).sum().backward()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for a, b_ in ((h.grad, h2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        torch.testing.assert_close(a, b_, rtol=0, atol=1e-12)
    with torch.no_grad():  # the no-grad path (evaluation)
        torch.testing.assert_close(linear_cross_entropy(h2, w2, b2, t), ref.detach(), rtol=0, atol=1e-12)


def test_bf16_autocast_stays_close_and_returns_fp32():
    """bf16 matmuls with an fp32 softmax: relative error of the NLL well under 1%."""
    h, w, b, t = (x.detach() for x in _inputs(torch.float32))
    ref = F.cross_entropy(h @ w.t() + b, t, reduction="none")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_cross_entropy(h, w, b, t)
    assert out.dtype == torch.float32
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-2


def test_bf16_autocast_gradients_stay_close():
    h, w, b, t = _inputs(torch.float32)
    F.cross_entropy(h @ w.t() + b, t, reduction="sum").backward()
    h2, w2, b2, _ = _inputs(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        linear_cross_entropy(h2, w2, b2, t).sum().backward()
    for ref, got in ((h.grad, h2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        assert got.dtype == torch.float32
        assert float((got - ref).abs().max() / ref.abs().max()) < 2e-2


@pytest.mark.parametrize("chunk_rows", [7, 1024])
def test_bf16_bias_gradient_read_from_the_softmax_block_equals_its_row_sum(monkeypatch, chunk_rows):
    """Under bf16 autocast the bias gradient E^T (g / s) - the targets' g (fewer_passes) equals the plain
    path's sum over rows of g (softmax - onehot): the same fp32 softmax block, summed another way; the
    other gradients are the same bits."""
    monkeypatch.setattr(ops, "CHUNK_ROWS", chunk_rows)
    grads = []
    for fewer in (True, False):
        h, w, b, t = _inputs(torch.float32, n=60, h=16, v=70)
        weights = torch.rand(60, generator=torch.Generator().manual_seed(1))
        with fast_paths(fewer_passes=fewer):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = (linear_cross_entropy(h, w, b, t) * weights).sum()
            loss.backward()
        grads.append((h.grad, w.grad, b.grad))
    torch.testing.assert_close(grads[0][2], grads[1][2], rtol=1e-5, atol=1e-6)
    assert float(grads[0][2].abs().max()) > 1e-2                         # not trivially zero
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_a_buffer_awaiting_its_backward_pass_is_not_reused():
    """Two forward passes, then both backward passes: each gets its own kept softmax (the workspace
    hands a buffer out again only once the backward pass that owns it has run)."""
    (h1, w, b, t), h2 = _inputs(), torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    ref1 = torch.autograd.grad(F.cross_entropy(h1 @ w.t() + b, t, reduction="sum"), h1)[0]
    ref2 = torch.autograd.grad(F.cross_entropy(h2 @ w.t() + b, t, reduction="sum"), h2)[0]
    first = linear_cross_entropy(h1, w, b, t).sum()
    second = linear_cross_entropy(h2, w, b, t).sum()
    torch.testing.assert_close(torch.autograd.grad(second, h2)[0], ref2, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(first, h1)[0], ref1, rtol=0, atol=1e-12)


@pytest.mark.parametrize("decoder", ["standard", "skip", "lm"])
def test_model_log_px_fused_equals_plain_path(decoder):
    """log p(x|z) and its parameter gradients are the same with the fused and the plain output layer."""
    torch.manual_seed(0)
    model = TextVAE(40, ModelConfig(decoder=decoder, emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=4,
                                    dec_layers=2, dropout_in=0.0, dropout_out=0.0)).double()
    batch = make_batch([[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]], [0, 1, 2])
    z = None if decoder == "lm" else torch.randn(3, 2, 4, dtype=torch.float64)
    results = []
    for fused in (True, False):
        model.zero_grad()
        with fast_paths(fused_output=fused):
            log_p = model.log_px_given_z(batch, z)
        log_p.sum().backward()
        results.append((log_p.detach(), model.decoder.out.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-10)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=1e-10)


@pytest.mark.parametrize("chunk_rows,max_runs,gpu_softmax", [(1024, 256, False), (7, 256, False), (1024, 0, False),
                                                           (7, 0, True)])
def test_skip_output_layer_with_the_z_term_once_per_sample_matches_the_concatenation(monkeypatch, chunk_rows,
                                                                                     max_runs, gpu_softmax):
    """softmax(W [h_i ; z_s(i)] + b) with U = z W_z^T + b per sample equals the per-row concatenation,
    values and the gradients of h, z, W and b (U's gradient summed over each sample's rows, by runs
    of rows or, max_runs = 0, by index_add_ as on a GPU)."""
    monkeypatch.setattr(ops, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(ops, "MAX_RUNS", max_runs)
    use_the_gpu_softmax(monkeypatch, gpu_softmax)
    g = torch.Generator().manual_seed(0)
    h, z = torch.randn(40, 16, generator=g), torch.randn(6, 4, generator=g)
    weight, bias = torch.randn(30, 20, generator=g), torch.randn(30, generator=g)
    row_sample = torch.randint(6, (40,), generator=g)
    targets = torch.randint(30, (40,), generator=g)
    row_weights = torch.rand(40, generator=g)
    leaves = [x.double().requires_grad_() for x in (h, z, weight, bias)]
    expected = F.cross_entropy(torch.cat([leaves[0], leaves[1][row_sample]], -1) @ leaves[2].t() + leaves[3],
                               targets, reduction="none")
    (expected * row_weights.double()).sum().backward()
    with torch.no_grad():
        got = ops.skip_cross_entropy(h, z, row_sample, weight, bias, targets)
    torch.testing.assert_close(got.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    ours = [x.clone().requires_grad_() for x in (h, z, weight, bias)]
    got = ops.skip_cross_entropy(*ours[:2], row_sample, *ours[2:], targets)
    (got * row_weights).sum().backward()
    torch.testing.assert_close(got.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    for mine, ref in zip(ours, leaves):
        torch.testing.assert_close(mine.grad.double(), ref.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_whose_softmax_sum_leaves_the_safe_range_are_redone_shifted_by_their_max(monkeypatch, dtype):
    """The CPU softmax skips the row-max shift; rows with logits near +-400 (2^l2 overflows or all
    underflow) must still give the NLL and gradients of the shifted computation."""
    monkeypatch.setattr(ops, "CHUNK_ROWS", 16)
    h, w, b, t = (x.detach() for x in _inputs(torch.float64))
    w[:, 0], h[:, 0] = 1.0, 0.0   # feature 0 shifts every logit of a row alike
    h[3] *= 60.0                  # row max logit in the hundreds: the sum of 2^l2 overflows (or passes 2^60)
    h[20] *= 60.0
    h[40, 0] = -500.0             # every logit of row 40 below -400 nats: the sum of 2^l2 underflows
    weights = torch.rand(50, dtype=torch.float64)
    ref_h, ref_w, ref_b = (x.clone().requires_grad_() for x in (h, w, b))
    ref = F.cross_entropy(ref_h @ ref_w.t() + ref_b, t, reduction="none")
    (ref * weights).sum().backward()
    ref = ref.detach()
    got_h, got_w, got_b = (x.to(dtype).requires_grad_() for x in (h, w, b))
    got = linear_cross_entropy(got_h, got_w, got_b, t)
    (got * weights.to(dtype)).sum().backward()
    assert torch.isfinite(got).all()
    eps = 1e-5 if dtype == torch.float32 else 1e-12   # relative to the largest expected value
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=eps * float(ref.abs().max()))
    for expected, actual in ((ref_h.grad, got_h.grad), (ref_w.grad, got_w.grad), (ref_b.grad, got_b.grad)):
        torch.testing.assert_close(actual.double(), expected, rtol=0, atol=eps * float(expected.abs().max()))
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(*(x.to(dtype) for x in (h, w, b)), t).double(),
                                   ref, rtol=0, atol=eps * float(ref.abs().max()))


def test_the_skip_output_layer_redoes_out_of_range_rows_with_their_own_z_term(monkeypatch):
    """The per-sample z term (no gradients) also reaches the rows redone shifted by their max."""
    monkeypatch.setattr(ops, "CHUNK_ROWS", 16)
    g = torch.Generator().manual_seed(1)
    h, z = torch.randn(40, 16, generator=g), torch.randn(6, 4, generator=g)
    weight, bias = torch.randn(30, 20, generator=g), torch.randn(30, generator=g)
    z[2] *= 80.0                           # the rows of sample 2: logits in the hundreds, 2^l2 overflows
    row_sample = torch.arange(40) % 6
    targets = torch.randint(30, (40,), generator=g)
    full = torch.cat([h, z[row_sample]], -1).double() @ weight.double().t() + bias.double()
    expected = F.cross_entropy(full, targets, reduction="none")
    with torch.no_grad():
        got = ops.skip_cross_entropy(h, z, row_sample, weight, bias, targets)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5 * float(expected.abs().max()))
