"""The decoder kinds, declared once: how z enters the LSTM decoder (docs/protocol.md section 1).

Config validation, the CLI's --decoder choices, the model, the tests and the FLOP count of
`benchmarks/perf` all read this table. A new kind is one `DecoderKind(...)` here plus the code in
models.py and output_layer.py that its two switches do not already cover.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderKind:
    name: str
    uses_z: bool        # layer 1 reads [emb(x_{t-1}); z] at every step and every layer starts from W z
    skip: bool          # Skip-VAE: layers k > 1 read [h^{(k-1)}_t; z] and the softmax reads [h_t; z]
    help: str


DECODERS: dict[str, DecoderKind] = {d.name: d for d in (
    DecoderKind("standard", uses_z=True, skip=False, help="z at every step of layer 1 and in every initial state"),
    DecoderKind("skip", uses_z=True, skip=True, help="Skip-VAE: also z into every upper layer and the softmax"),
    DecoderKind("lm", uses_z=False, skip=False, help="no z: an LSTM language model, the NLL reference"),
)}


def decoder_names() -> tuple[str, ...]:
    return tuple(DECODERS)


def latent_decoder_names() -> tuple[str, ...]:
    """The kinds with a z (the VAEs)."""
    return tuple(name for name, kind in DECODERS.items() if kind.uses_z)


def decoder_kind(name: str) -> DecoderKind:
    """The declaration of `name`; KeyError for an unknown one (config validation refuses it first)."""
    return DECODERS[name]
