"""Sentences per second of greedy and beam-search decoding (textsvae.model.decoding) at the `ptb` preset sizes.

    python benchmarks/perf/decode_speed.py --threads 2 --sentences 128 --max-len 30 --batch 64 \
        --out results/decode-speed.json

The model is a randomly initialised TextVAE at the `ptb` preset (embeddings 256, encoder and decoder
LSTMs 256, z of 32 dims) over a vocabulary of 10,002 words: decoding speed depends on the sizes,
not on the weights. Every variant decodes the same number of steps: the output bias of </s> is set
to -1e4, so no sentence (and no beam hypothesis) ever ends, and each call runs max_len words plus
the step that would have room for </s>, max_len + 1 decoder steps (checked: every output has
max_len words). A trained model stops earlier, at each batch's longest sentence, so these are the
rates of full-length decodes. z ~ N(0, I), seed 0, the same for every variant.

Each variant decodes --sentences sentences, --batch at a time or one at a time (batch 1), after
a warm-up call; the best of --reps rounds counts. ms per step is the time of one decoder step of one
call (batch rows, or batch x beam rows for beam search).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from timing import sync  # a sibling: this folder is on sys.path

VOCAB = 10_002    # PTB's vocabulary with <pad>, <s>, </s> (and <unk>)


def build(decoder: str, device):
    """A fresh ptb-preset TextVAE whose </s> logit is pushed down (every decode runs to max_len)."""
    import torch

    from textsvae.core.config import apply_overrides, preset_config
    from textsvae.data.vocab import EOS_ID
    from textsvae.model.models import TextVAE

    torch.manual_seed(0)
    config = apply_overrides(preset_config("ptb"), {"decoder": decoder})
    model = TextVAE(VOCAB, config.model).to(device).eval()
    with torch.no_grad():
        model.decoder.out.bias[EOS_ID] = -1e4
    return model


def time_variant(model, z, options, batch: int, reps: int, device) -> tuple[float, list[list[int]]]:
    """Best seconds over reps rounds to decode every row of z, `batch` rows per call; and the outputs."""
    from textsvae.model.decoding import decode

    decode(model, z[:batch], options)   # warm-up
    best, out = float("inf"), []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        out = [y for i in range(0, z.size(0), batch) for y in decode(model, z[i:i + batch], options)]
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--sentences", type=int, default=128, help="sentences decoded per variant")
    p.add_argument("--max-len", type=int, default=30, help="words per sentence (every decode runs to it)")
    p.add_argument("--batch", type=int, default=64, help="sentences per call of the batched variants")
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--decoders", default="standard,skip")
    p.add_argument("--reps", type=int, default=1, help="timed rounds per variant (the best counts)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--note", default="", help="a note kept in the JSON (e.g. the machine was busy)")
    p.add_argument("--out", default=None, help="write the JSON rows here")
    args = p.parse_args(argv)
    if min(args.threads, args.sentences, args.max_len, args.batch, args.beam_size, args.reps) < 1:
        p.error("--threads, --sentences, --max-len, --batch, --beam-size and --reps must be >= 1")

    import torch

    from textsvae.core.io import atomic_write_text
    from textsvae.model.decoding import DecodeOptions

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    z = torch.randn(args.sentences, 32, generator=torch.Generator().manual_seed(0)).to(device)
    variants = [("greedy", DecodeOptions("greedy", max_len=args.max_len)),
                (f"beam-{args.beam_size}", DecodeOptions("beam", beam_size=args.beam_size, max_len=args.max_len))]
    rows = []
    for decoder in args.decoders.split(","):
        model = build(decoder, device)
        for name, options in variants:
            outputs = {}
            for batch in dict.fromkeys((args.batch, 1)):
                print(f"... {name} {decoder} batch {batch}", file=sys.stderr, flush=True)
                seconds, outputs[batch] = time_variant(model, z, options, batch, args.reps, device)
                if any(len(y) != args.max_len for y in outputs[batch]):
                    raise SystemExit("a sentence ended before --max-len: the step count is not fixed")
                calls = -(-args.sentences // batch)
                steps = calls * (args.max_len + 1)
                rows.append({"variant": name, "decoder": decoder, "batch": batch, "sentences": args.sentences,
                             "max_len": args.max_len, "steps_per_call": args.max_len + 1, "calls": calls,
                             "seconds": seconds, "sentences_per_s": args.sentences / seconds,
                             "ms_per_step": 1000 * seconds / steps, "threads": torch.get_num_threads(),
                             "device": str(device), "vocab": VOCAB, "preset": "ptb", "note": args.note})
            if len(outputs) == 2:   # batching changes float rounding only: the same words, nearly always
                same = sum(a == b for a, b in zip(outputs[args.batch], outputs[1])) / args.sentences
                for row in rows[-2:]:
                    row["same_output_as_other_batch"] = same
            if args.out:   # after every variant, so a later failure keeps the rows already measured
                atomic_write_text(args.out, json.dumps(rows, indent=2) + "\n")
    print_table(rows)
    return rows


def print_table(rows: list[dict]) -> None:
    print("| variant | decoder | batch | sentences/s | ms per step |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['decoder']} | {r['batch']} | {r['sentences_per_s']:.1f} | {r['ms_per_step']:.2f} |")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
