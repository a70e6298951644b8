"""Seconds for IW-NLL with K = 500 over the PTB test split (3,761 sentences) at the `ptb` preset.

    OMP_NUM_THREADS=2 python benchmarks/perf/eval_speed.py --data ptb --threads 2
    python benchmarks/perf/eval_speed.py --limit 100 --iw-samples 500 --decoder skip --json

Sentences and importance samples are decoded together (batches of B sentences x S samples, S set
by eval.mem_budget_mb). The model is a fresh `ptb`-preset model unless --run gives a trained run
(speed does not depend on the weights). A fp32 matmul probe runs in the same process, and the
achieved rate is quoted as a fraction of it, counting forward FLOPs as
2 x (multiply-adds of the decoder LSTM + the output layer) per target token per sample.
The reference code scores one sentence at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

from timing import macs_per_target, matmul_rate, sync  # a sibling: this folder is on sys.path

def matmul_gflops(device, seconds: float = 2.0) -> float:
    """fp32 rate of a square matmul (n = 1024 on CPU, 8192 on GPU; TF32 off), in GFLOP/s."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    return matmul_rate(torch.float32, (8192 if device.type == "cuda" else 1024,), seconds, device)


def build(args):
    """(model, method, test sentences, config, device) at the ptb preset, or from --run."""
    from textsvae.core.config import apply_overrides, preset_config
    from textsvae.data.corpus import load_corpus
    from textsvae.evaluation.run_eval import load_model, split_sentences
    from textsvae.kernels.device import resolve_device
    from textsvae.methods import build_method
    from textsvae.model.models import TextVAE

    if args.run:
        model, method, config, vocab, device = load_model(args.run, args.device)
        return model, method, split_sentences(config, vocab, "test"), config, device
    config = apply_overrides(preset_config("ptb"), {"data": str(args.data), "decoder": args.decoder,
                                                    "device": args.device, "seed": 0})
    import torch

    torch.manual_seed(0)
    corpus = load_corpus(config.data, needed=("train", "test"))
    device = resolve_device(config.train.device)
    model = TextVAE(len(corpus.vocab), config.model).to(device).eval()
    return model, build_method("vae"), corpus.splits["test"], config, device


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("TEXTSVAE_PTB", "ptb"),
                   help="a PTB folder or the installed corpus name (default ptb)")
    p.add_argument("--run", default=None, help="Use this trained run's best model instead of a fresh one")
    p.add_argument("--limit", type=int, default=None, help="Only the first N test sentences")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--iw-samples", type=int, default=500, help="K")
    p.add_argument("--decoder", choices=["standard", "skip", "lm"], default="standard")
    p.add_argument("--batch-size", type=int, default=None, help="eval.eval_batch_size (sentences per batch)")
    p.add_argument("--mem-budget-mb", type=int, default=None, help="eval.mem_budget_mb")
    p.add_argument("--device", default="auto")
    p.add_argument("--probe-seconds", type=float, default=2.0)
    p.add_argument("--json", action="store_true", help="Print one JSON object")
    args = p.parse_args(argv)

    import torch

    from textsvae.evaluation.scoring import score_sentences

    if args.threads:
        torch.set_num_threads(args.threads)
    model, method, sentences, config, device = build(args)
    n_split = len(sentences)
    sentences = sentences[: args.limit] if args.limit else sentences
    ecfg = config.eval
    ecfg = replace(ecfg, eval_batch_size=args.batch_size or ecfg.eval_batch_size,
                   mem_budget_mb=args.mem_budget_mb or ecfg.mem_budget_mb)
    probe = matmul_gflops(device, args.probe_seconds)
    score_sentences(model, method, sentences[:4], ecfg, device, iw_samples=2)  # warm-up
    sync(device)
    start = time.perf_counter()
    scores = score_sentences(model, method, sentences, ecfg, device, iw_samples=args.iw_samples)
    sync(device)
    seconds = time.perf_counter() - start
    targets = int(scores.n_tokens.sum())
    k = 1 if model.is_lm else args.iw_samples
    macs = macs_per_target(model.cfg, model.vocab_size)
    flops = 2 * (macs["decoder"] + macs["output"]) * targets * k
    row = {"sentences": len(sentences), "split_sentences": n_split, "targets": targets, "iw_samples": k,
           "decoder": model.cfg.decoder, "seconds": seconds, "sentences_per_s": len(sentences) / seconds,
           "full_split_seconds_est": seconds * n_split / len(sentences), "gflops": flops / seconds / 1e9,
           "matmul_fp32_gflops": probe, "fraction_of_matmul": flops / seconds / 1e9 / probe,
           "threads": torch.get_num_threads(), "device": str(device), "eval_batch_size": ecfg.eval_batch_size,
           "mem_budget_mb": ecfg.mem_budget_mb, "iw_nll": float(scores.iw_nll.mean()),
           "preset": "ptb" if not args.run else args.run}
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        print(f"IW-NLL K={k} over {len(sentences)} of {n_split} test sentences ({targets} targets, "
              f"{model.cfg.decoder} decoder, {row['threads']} threads, {device}): {seconds:.1f} s, "
              f"{row['sentences_per_s']:.2f} sentences/s; whole split ~{row['full_split_seconds_est'] / 60:.1f} min")
        print(f"{row['gflops']:.1f} GFLOP/s = {100 * row['fraction_of_matmul']:.0f}% of the fp32 matmul probe "
              f"({probe:.1f} GFLOP/s); mean IW-NLL {row['iw_nll']:.2f}")
    return row


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
