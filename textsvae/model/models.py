"""LSTM VAE for text: an LSTM encoder for q(z|x) and an LSTM decoder for p(x|z).

Decoders (docs/protocol.md section 1; their switches in decoders.py):
- standard (He et al. 2019): layer 1 reads [dropout(emb(x_{t-1})); z] at every step and
  p(x_t|.) = softmax(V dropout(h_t) + b).
- skip (Skip-VAE, Dieng et al. 2019): as standard, plus layer k > 1 reads [h^{(k-1)}_t; z]
  and the softmax reads [dropout(h^{(L)}_t); z], i.e. softmax(V h_t + U z).
- lm: the same LSTM with no z (a language model, the NLL reference).

The initial state (`init_state`, both latent decoders):
- all-layers (He et al.'s code): every layer k starts at c0_k = W_k z (no bias), h0_k = tanh(c0_k).
- top-layer (the Skip-VAE authors' code): the top layer starts at h0 = A z + a, c0 = 0; every
  other layer at h0 = c0 = 0.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.config import ModelConfig
from ..core.decoders import decoder_kind
from ..data.batching import Batch
from ..data.vocab import PAD_ID
from ..kernels import sample_lstm
from ..kernels.dropout import Dropout
from ..kernels.metrics import sample_diag_gaussian
from ..kernels.ops import autocast_off
from .output_layer import OutputLayer


class Encoder(nn.Module):
    """Embedding -> 1-layer LSTM -> last hidden state -> (mu, log sigma^2) of a diagonal Gaussian."""

    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.emb_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(cfg.emb_dim, cfg.enc_hidden, batch_first=True)
        self.to_params = nn.Linear(cfg.enc_hidden, 2 * cfg.latent_dim)
        self.mu_norm: nn.Module = nn.Identity()  # a hook for methods that normalise mu (BN-VAE)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.lstm(self.embed(tokens))                       # (B, T, H)
        # the LSTM is causal, so the output at the last real token ignores the padding after it
        last = out[torch.arange(out.size(0), device=out.device), lengths - 1]  # (B, H)
        mu, logvar = self.to_params(last).chunk(2, dim=-1)           # (B, D) each
        return self.mu_norm(mu), logvar


class Decoder(nn.Module):
    """Stacked LSTM decoder; z enters per `cfg.decoder` (see the module docstring)."""

    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        kind = decoder_kind(cfg.decoder)
        self.kind = kind.name
        self.uses_z, self.skip = kind.uses_z, kind.skip
        nz = cfg.latent_dim if self.uses_z else 0
        self.hidden, self.n_layers = cfg.dec_hidden, cfg.dec_layers
        self.embed = nn.Embedding(vocab_size, cfg.emb_dim, padding_idx=PAD_ID)
        sizes = [cfg.emb_dim + nz] + [cfg.dec_hidden + (nz if self.skip else 0)] * (cfg.dec_layers - 1)
        self.layers = nn.ModuleList(nn.LSTM(s, cfg.dec_hidden, batch_first=True) for s in sizes)
        self.init_scheme = cfg.init_state
        self.init_state: nn.Linear | None = None
        if self.uses_z and self.init_scheme == "all-layers":
            self.init_state = nn.Linear(nz, cfg.dec_layers * cfg.dec_hidden, bias=False)   # [W_1; ...; W_L]
        elif self.uses_z:
            self.init_state = nn.Linear(nz, cfg.dec_hidden)                                 # A, a (top layer)
        self.drop_in = Dropout(cfg.dropout_in)
        self.drop_out = Dropout(cfg.dropout_out)
        self.out = OutputLayer(cfg.dec_hidden, nz, vocab_size, self.skip)

    def initial_states(self, z: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(h0, c0) of each layer, bottom first, each (1, R, H), for z (R, D): see the module docstring."""
        rows = z.size(0)
        if self.init_scheme == "all-layers":
            c0 = self.init_state(z).view(rows, self.n_layers, self.hidden).transpose(0, 1)  # (L, R, H)
            return [(torch.tanh(c0[k]).unsqueeze(0).contiguous(), c0[k].unsqueeze(0).contiguous())
                    for k in range(self.n_layers)]
        top = self.init_state(z).unsqueeze(0)                                              # (1, R, H)
        zeros = top.new_zeros(top.shape)
        return [(zeros, zeros)] * (self.n_layers - 1) + [(top, zeros)]

    def hidden_states(self, inputs: torch.Tensor, z: torch.Tensor | None,
                      cut_recurrent_z: bool = False, n_samples: int | None = None) -> torch.Tensor:
        """Top-layer outputs (B, T, H) after output dropout; (B * S, T, H) with n_samples S.

        n_samples S: inputs (B, T) are read once per z sample, z being (B * S, D) with row b * S + s
        sentence b's sample s. Without gradients (IW-NLL), the first layer then projects each
        sentence's embeddings once (see textsvae.kernels.sample_lstm).
        cut_recurrent_z zeroes z wherever it enters the LSTM (inputs and initial state), leaving
        only the softmax skip: used by tests to show the skip path alone reaches the logits.
        """
        x = self.embed(inputs)                                        # (B, T, E)
        if not self.uses_z:
            states = [None] * self.n_layers
            z_steps = None
        else:
            rows, steps = z.size(0), inputs.size(1)
            z_rec = torch.zeros_like(z) if cut_recurrent_z else z
            states = self.initial_states(z_rec)
            z_steps = z_rec.unsqueeze(1).expand(rows, steps, z.size(-1))  # (R, T, D)
        first = 0
        if n_samples is not None and self.uses_z and (self.drop_in.p == 0 or not self.drop_in.training) \
                and sample_lstm.applies(self.layers[0], x):
            x, first = sample_lstm.lstm_over_samples(self.layers[0], x, z_rec, states[0]), 1
        else:
            if n_samples is not None:
                x = x.repeat_interleave(n_samples, dim=0)            # (B * S, T, E)
            x = self.drop_in(x)
        x, _ = self.run_layers(x, z_steps, states, first)
        return self.drop_out(x)

    def run_layers(self, x: torch.Tensor, z_steps: torch.Tensor | None, states: list, first: int = 0
                   ) -> tuple[torch.Tensor, list]:
        """Layers `first`.. over x (R, T, in), where z enters them: z_steps (R, T, D) joins layer 1's input
        and, for the skip decoder, every layer's above it. Returns the top layer's outputs (R, T, H) and
        each layer's last (h, c) (None for the layers below `first`, as given)."""
        last = list(states)
        for k in range(first, self.n_layers):
            if z_steps is not None and (k == 0 or self.skip):
                x = torch.cat([x, z_steps], dim=-1)
            x, last[k] = self.layers[k](x, states[k])
        return x, last



class TextVAE(nn.Module):
    """Encoder + decoder; `decoder == 'lm'` gives a plain LSTM language model with no encoder."""

    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.latent_dim = cfg.latent_dim
        self.is_lm = not decoder_kind(cfg.decoder).uses_z
        self.encoder = None if self.is_lm else Encoder(vocab_size, cfg)
        self.decoder = Decoder(vocab_size, cfg)
        self.autocast_dtype: torch.dtype | None = None  # set by set_precision
        self.reset_parameters()

    def set_precision(self, precision: str) -> None:
        """'fp32' (default) or 'bf16'/'fp16': autocast the forward passes (softmax stays fp32)."""
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def _autocast(self):
        device = next(self.parameters()).device.type
        if self.autocast_dtype is None:
            return autocast_off(device)
        return torch.autocast(device, dtype=self.autocast_dtype)

    def reset_parameters(self, module: nn.Module | None = None) -> None:
        """He et al.'s init: parameters ~ U(-0.01, 0.01), embeddings ~ U(-0.1, 0.1)."""
        module = module or self
        for name, p in module.named_parameters():
            r = self.cfg.emb_init_range if "embed" in name else self.cfg.init_range
            nn.init.uniform_(p, -r, r)

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (B, D), of q(z|x)."""
        if self.encoder is None:
            raise RuntimeError("an LSTM language model (decoder 'lm') has no encoder")
        with self._autocast():
            mu, logvar = self.encoder(batch.tokens, batch.lengths)
        if self.autocast_dtype is not None:  # q's parameters and all metrics stay in fp32
            mu, logvar = mu.float(), logvar.float()
        return mu, logvar

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + sigma * eps; (B, D), or (B, S, D) when n_samples is given."""
        shape = mu.shape if n_samples is None else (mu.size(0), n_samples, mu.size(1))
        eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return sample_diag_gaussian(mu, logvar, eps)

    def log_px_given_z(self, batch: Batch, z: torch.Tensor | None, inputs: torch.Tensor | None = None,
                       cut_recurrent_z: bool = False) -> torch.Tensor:
        """log p(x|z) in nats, summed over the n + 1 targets of each sentence.

        z: (B, D) -> (B,); (B, S, D) -> (B, S), the S samples decoded as one batch of B*S rows;
        None for the LM. `inputs` replaces the decoder inputs (word dropout).
        """
        inputs = batch.inputs if inputs is None else inputs
        targets = batch.targets                                        # (B, T)
        n_samples = None
        if z is not None and z.dim() == 3:
            B, n_samples, D = z.shape
            z = z.reshape(B * n_samples, D)                            # row b*S + s: sentence b, sample s
        rows, steps = batch.target_positions(n_samples)                # only real targets reach the softmax
        with self._autocast():
            hidden = self.decoder.hidden_states(inputs, z, cut_recurrent_z, n_samples)  # (R, T, H)
            nll = self.decoder.out.nll(hidden[rows, steps], z, targets[rows // (n_samples or 1), steps],
                                   row_sample=rows if z is not None else None)  # (N,)
        log_p = torch.zeros(hidden.size(0), device=nll.device, dtype=nll.dtype).index_add_(0, rows, -nll)
        return log_p if n_samples is None else log_p.view(-1, n_samples)

    def logits_for(self, batch: Batch, z: torch.Tensor | None, cut_recurrent_z: bool = False) -> torch.Tensor:
        """Full (B, T, V) logits, for inspection and tests."""
        hidden = self.decoder.hidden_states(batch.inputs, z, cut_recurrent_z)
        zz = z.unsqueeze(1) if (z is not None and self.decoder.skip) else None
        return self.decoder.out.logits(hidden, zz)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
