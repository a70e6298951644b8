"""Both latent decoders against an independent transcription of the papers' decoders (docs/protocol.md 1).

The oracle below is written from the authors' code, not from textsvae's:
- the Skip-VAE authors' `RNNVAE._dec_forward` (github.com/yoonkim/skip-vae, models_text_skip.py):
  one dropout on the word vectors, layer 1 reads [dropout(emb(x_{t-1})); z], the top layer starts at
  h0 = A z + a (`latent_hidden_linear`, with a bias) and c0 = 0, every other layer at 0; the softmax reads
  [dropout(h_L); z] with a bias (skip = 1) or dropout(h_L) (skip = 0). Their code stacks layers in one
  nn.LSTM, so upper layers there read h alone; the paper's skip model (Dieng et al. 2019, eq. 5) also
  feeds z to every upper layer, which is what the oracle's skip decoder does for layers k > 1.
- He et al.'s decoder (github.com/jxhe/vae-lagging-encoder, modules/decoders/dec_lstm.py): c0 = W z with
  no bias, h0 = tanh(c0), here for every layer ("all-layers").
The LSTM cell is written out (gates in i, f, g, o order), one sentence at a time with no padding, in fp64.
"""
from __future__ import annotations

import pytest
import torch

from textsvae.core.config import ModelConfig
from textsvae.data import make_batch
from textsvae.data.vocab import BOS_ID, EOS_ID
from textsvae.model.decoding import _Stepper
from textsvae.model.models import TextVAE

V, E, H, D = 13, 5, 6, 3
SENTENCES = [[4, 5, 6, 7, 8], [9, 10], [11, 12, 4], [6]]


def lstm_cell_sequence(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """h_t for t = 1..T of one LSTM layer: [i f g o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh,
    c_t = sigma(f) c_{t-1} + sigma(i) tanh(g), h_t = sigma(o) tanh(c_t). x (T, I), h and c (H,)."""
    out = []
    for t in range(x.size(0)):
        i, f, g, o = (w_ih @ x[t] + b_ih + w_hh @ h + b_hh).chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out)


def reference_log_px(p: dict, sentence: list[int], z: torch.Tensor, skip: bool, init_state: str,
                     n_layers: int, drop_emb: torch.Tensor | None = None, drop_h: torch.Tensor | None = None):
    """log p(x|z) summed over the sentence's n + 1 targets; drop_emb (n+1, E) and drop_h (n+1, H) are
    dropout's scaled masks (0 or 1/(1-p)), applied to the word vectors and to h_L only, never to z."""
    inputs, targets = [BOS_ID] + sentence, sentence + [EOS_ID]
    emb = p["embed"][inputs]                                                   # (T, E)
    if drop_emb is not None:
        emb = emb * drop_emb
    zs = z.expand(len(inputs), z.numel())                                      # (T, D)
    if init_state == "top-layer":
        h0 = [torch.zeros(H, dtype=z.dtype)] * (n_layers - 1) + [p["init_w"] @ z + p["init_b"]]
        c0 = [torch.zeros(H, dtype=z.dtype)] * n_layers
    else:
        c0 = list((p["init_w"] @ z).view(n_layers, H))
        h0 = [torch.tanh(c) for c in c0]
    x = torch.cat([emb, zs], dim=-1)
    for k in range(n_layers):
        if k > 0 and skip:
            x = torch.cat([x, zs], dim=-1)
        x = lstm_cell_sequence(x, h0[k], c0[k], *p["lstm"][k])
    h = x if drop_h is None else x * drop_h
    logits = torch.cat([h, zs], dim=-1) @ p["out_w"].T + p["out_b"] if skip else h @ p["out_w"].T + p["out_b"]
    return torch.log_softmax(logits, dim=-1)[torch.arange(len(targets)), targets].sum()


def weights_of(m: TextVAE) -> dict:
    d = m.decoder
    return {"embed": d.embed.weight, "init_w": d.init_state.weight,
            "init_b": d.init_state.bias if d.init_state.bias is not None else None,
            "lstm": [(l.weight_ih_l0, l.weight_hh_l0, l.bias_ih_l0, l.bias_hh_l0) for l in d.layers],
            "out_w": d.out.weight, "out_b": d.out.bias}


def build(decoder: str, init_state: str, layers: int, dropout: float = 0.0, seed: int = 0) -> TextVAE:
    torch.manual_seed(seed)
    cfg = ModelConfig(decoder=decoder, emb_dim=E, enc_hidden=E, dec_hidden=H, dec_layers=layers, latent_dim=D,
                      dropout_in=dropout, dropout_out=dropout, init_range=0.4, emb_init_range=0.4,
                      init_state=init_state)
    return TextVAE(V, cfg).double().eval()


CASES = [(dec, init, layers) for dec in ("standard", "skip") for init in ("all-layers", "top-layer")
         for layers in (1, 2, 3)]


@pytest.mark.parametrize("decoder,init_state,layers", CASES)
def test_log_px_given_z_equals_the_transcription(decoder, init_state, layers):
    m = build(decoder, init_state, layers)
    batch = make_batch(SENTENCES, list(range(len(SENTENCES))))
    z = torch.randn(len(SENTENCES), D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = m.log_px_given_z(batch, z)
        ref = torch.stack([reference_log_px(weights_of(m), s, z[b], decoder == "skip", init_state, layers)
                           for b, s in enumerate(SENTENCES)])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("decoder,init_state,layers", CASES)
def test_samples_path_and_step_decoder_equal_the_transcription(decoder, init_state, layers):
    """The IW-NLL path (S samples per sentence, layer 1 run once per sentence) and the step-by-step decoder
    of generation (decoding._Stepper, teacher-forced) give the transcription's log p(x|z) too."""
    m = build(decoder, init_state, layers)
    batch = make_batch(SENTENCES, list(range(len(SENTENCES))))
    S = 3
    z = torch.randn(len(SENTENCES), S, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = m.log_px_given_z(batch, z)                                               # (B, S)
        ref = torch.stack([torch.stack([reference_log_px(weights_of(m), sent, z[b, s], decoder == "skip",
                                                         init_state, layers) for s in range(S)])
                           for b, sent in enumerate(SENTENCES)])
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
        for b, sent in enumerate(SENTENCES):
            stepper, total = _Stepper(m, z[b, :1], 1), torch.zeros((), dtype=torch.float64)
            for prev, target in zip([BOS_ID] + sent, sent + [EOS_ID]):
                total = total + torch.log_softmax(stepper.logits(torch.tensor([prev])).double(), -1)[0, target]
            torch.testing.assert_close(total, ref[b, 0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("decoder,init_state", [("standard", "top-layer"), ("skip", "top-layer"),
                                                ("skip", "all-layers")])
def test_dropout_touches_the_word_vectors_and_top_outputs_only(decoder, init_state):
    """In training mode the model's dropout masks, read off its two dropout modules, replayed in the
    transcription on the word vectors and on h_L give the same log p(x|z): dropout never touches z."""
    m = build(decoder, init_state, 2, dropout=0.5).train()
    masks = {}

    def keep(name):
        def hook(module, args, out):
            x = args[0]
            masks[name] = torch.where(x != 0, out / x, torch.zeros_like(x)).detach()
        return hook

    m.decoder.drop_in.register_forward_hook(keep("in"))
    m.decoder.drop_out.register_forward_hook(keep("out"))
    batch = make_batch(SENTENCES, list(range(len(SENTENCES))))
    z = torch.randn(len(SENTENCES), D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    with torch.no_grad():
        ours = m.log_px_given_z(batch, z)
    assert masks["in"].shape[-1] == E and masks["out"].shape[-1] == H   # z is never an input of dropout
    ref = torch.stack([reference_log_px(weights_of(m), s, z[b], decoder == "skip", init_state, 2,
                                        masks["in"][b, :len(s) + 1], masks["out"][b, :len(s) + 1])
                       for b, s in enumerate(SENTENCES)])
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_the_two_initial_states_give_different_likelihoods():
    """Same weights elsewhere, another initial state: log p(x|z) moves (what the setting is for)."""
    a, b = build("skip", "all-layers", 1), build("skip", "top-layer", 1)
    b.decoder.init_state.weight.data.copy_(a.decoder.init_state.weight.data)
    state = {k: v for k, v in a.state_dict().items() if "init_state" not in k}
    b.load_state_dict(state, strict=False)
    batch = make_batch(SENTENCES, list(range(len(SENTENCES))))
    z = torch.randn(len(SENTENCES), D, dtype=torch.float64)
    with torch.no_grad():
        assert (a.log_px_given_z(batch, z) - b.log_px_given_z(batch, z)).abs().min() > 1e-4


def test_top_layer_parameters():
    """top-layer: one Linear A z + a for the top layer (H x D weight and a bias); all-layers: W, L*H x D, no bias."""
    top, every = build("standard", "top-layer", 3), build("standard", "all-layers", 3)
    assert top.decoder.init_state.weight.shape == (H, D) and top.decoder.init_state.bias.shape == (H,)
    assert every.decoder.init_state.weight.shape == (3 * H, D) and every.decoder.init_state.bias is None
