"""The decoder's first LSTM layer over S latent samples of each sentence, without gradients (IW-NLL).

Layer 1 reads [emb(x_t); z] at every step, so its input projection splits as
    W_ih [emb(x_t); z] + b = (W_e emb(x_t) + b)  +  W_z z,
the first term the same for every sample of a sentence (computed B * T times, not B * S * T), the
second the same at every step of a sample (computed B * S times, not B * S * T). The recurrence is
then a loop over steps: gates_t = shared_t + per_sample + h_{t-1} W_hh^T, with ATen's elementwise
kernels in place. Every tanh is taken as tanh(x) = 2 sigma(2x) - 1, which ATen computes faster
than its own tanh on the CPU. Off with `fast_paths(sample_lstm=False)`; the timings against
nn.LSTM over the repeated input are `benchmarks/perf/kernels.py` and `fast_paths.py`'s
(results/perf.md). CPU only: on a GPU cuDNN runs the whole sequence.
"""
from __future__ import annotations

import torch
from torch import nn

from .fast_paths import switches


def applies(lstm: nn.LSTM, x: torch.Tensor) -> bool:
    """Whether lstm_over_samples may replace lstm(x) here: one layer, no gradients, no autocast, CPU."""
    return (switches().sample_lstm and x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
            and lstm.num_layers == 1 and not lstm.bidirectional and lstm.bias and lstm.proj_size == 0
            and lstm.batch_first)


def lstm_over_samples(lstm: nn.LSTM, shared_input: torch.Tensor, z: torch.Tensor,
                      state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """lstm([shared_input repeated S times ; z], state)'s outputs, without the repeated input.

    shared_input (B, T, E) per sentence; z (B * S, D), row b * S + s being sentence b's sample s;
    state (h0, c0), each (1, B * S, H). Returns (B * S, T, H).
    """
    batch, steps, emb_dim = shared_input.shape
    rows, hidden = z.size(0), lstm.hidden_size
    samples = rows // batch
    # the cell input's rows doubled: one sigmoid over all four gates gives s = sigma(2 g), and g = 2 s - 1
    doubled = torch.ones(4 * hidden, 1, dtype=z.dtype)
    doubled[2 * hidden: 3 * hidden] = 2.0
    w_ih, w_hh, bias = lstm.weight_ih_l0 * doubled, lstm.weight_hh_l0 * doubled, lstm.bias_ih_l0 + lstm.bias_hh_l0
    shared = torch.addmm(bias * doubled[:, 0], shared_input.reshape(batch * steps, emb_dim),
                         w_ih[:, :emb_dim].t()).view(batch, steps, 1, 4 * hidden)
    per_sample = (z @ w_ih[:, emb_dim:].t()).view(batch, samples, 4 * hidden)
    out = torch.empty(rows, steps, hidden, dtype=z.dtype)
    gates = torch.empty(rows, 4 * hidden, dtype=z.dtype)
    sigma_c = torch.empty(rows, hidden, dtype=z.dtype)
    h, c = state[0][0], state[1][0].clone()
    in_gate, forget_gate, cell_sigma, out_gate = gates.split(hidden, dim=1)   # PyTorch's gate order
    for t in range(steps):
        torch.add(per_sample, shared[:, t], out=gates.view(batch, samples, 4 * hidden))
        gates.addmm_(h, w_hh.t()).sigmoid_()                                 # i, f, sigma(2 g), o
        c.mul_(forget_gate).addcmul_(in_gate, cell_sigma, value=2.0).sub_(in_gate)     # c_t = f c + i (2 s - 1)
        torch.mul(c, 2.0, out=sigma_c).sigmoid_()
        h = torch.mul(out_gate, sigma_c, out=out[:, t]).mul_(2.0).sub_(out_gate)  # h_t = o (2 sigma(2 c_t) - 1)
    return out
