"""End to end, the CPU fast paths off and on in one process, alternating, at a preset.

    python benchmarks/perf/fast_paths.py --threads 2

The switches are `textsvae.kernels.fast_paths`'. A noisy machine drifts within minutes (see `results/perf.md`), by more than these paths
change, so each variant runs on the same work in turn and the totals are compared:
- IW-NLL with K samples: every group of --group test sentences is scored by each variant in turn
  (the order rotating from group to group); variants are the plain paths, `fewer_passes`
  alone, and that with `sample_lstm` (the shipped code). Their IW-NLL must agree.
- training steps: every batch is trained on by each variant in turn (the plain paths,
  `fewer_passes`, for the skip decoder that with `z_term_per_sample`, then with
  `sparse_embeddings`, the shipped code, when the preset trains with plain SGD), from
  the same weights and optimiser state (restored after each variant's step), so both do the same
  arithmetic (with their own dropout draws).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

from timing import cpu_trainer  # a sibling: this folder is on sys.path

# textsvae.kernels.fast_paths switches per variant
VARIANTS = {"plain": dict(fewer_passes=False, sample_lstm=False),
            "fewer passes": dict(fewer_passes=True, sample_lstm=False),
            "fewer passes + sample_lstm": dict(fewer_passes=True, sample_lstm=True)}


def iwnll(trainer, cfg, args) -> list[str]:
    from textsvae.evaluation.scoring import evaluate_model
    from textsvae.kernels.fast_paths import fast_paths

    sentences = trainer.corpus.splits["test"][: args.sentences]
    trainer.model.eval()
    names = list(VARIANTS)
    seconds = dict.fromkeys(names, 0.0)
    nll = {name: [] for name in names}
    for g, start in enumerate(range(0, len(sentences), args.group)):
        group = sentences[start:start + args.group]
        for name in names[g % len(names):] + names[: g % len(names)]:
            with fast_paths(**VARIANTS[name]):
                began = time.perf_counter()
                result = evaluate_model(trainer.model, trainer.method, group, cfg.eval, trainer.device,
                                        iw_samples=args.k)
                seconds[name] += time.perf_counter() - began
            nll[name].append(result["iw_nll"] * len(group))
    base = seconds["plain"]
    out = []
    for name in names:
        mean_nll = sum(nll[name]) / len(sentences)
        out.append(f"| IW-NLL K={args.k}, {len(sentences)} sentences | {name} | {seconds[name]:.1f} s | "
                   f"x{base / seconds[name]:.2f} | iw_nll {mean_nll:.4f} |")
    return out


# textsvae.kernels.fast_paths switches per variant; the z term applies to the skip decoder only
TRAIN_VARIANTS = {
    "plain": dict(fewer_passes=False, z_term_per_sample=False, sparse_embeddings=False),
    "fewer passes": dict(fewer_passes=True, z_term_per_sample=False, sparse_embeddings=False),
    "fewer passes + z term per sample": dict(fewer_passes=True, z_term_per_sample=True, sparse_embeddings=False),
    "+ sparse embedding gradients": dict(fewer_passes=True, z_term_per_sample=True, sparse_embeddings=True)}


def train(trainer, args) -> list[str]:
    from textsvae.kernels import optim
    from textsvae.kernels.fast_paths import fast_paths

    batches = trainer.train_batches(0)
    model, method, t = trainer.model, trainer.method, trainer.config.train
    names = list(TRAIN_VARIANTS) if model.decoder.skip else [n for n in TRAIN_VARIANTS if "z term" not in n]
    seconds = dict.fromkeys(names, 0.0)

    def use(name: str):
        """The variant's switches for a block; the embeddings' sparse flag is set inside it."""
        context = fast_paths(**TRAIN_VARIANTS[name])
        context.__enter__()
        optim.sparse_embeddings(model, t.optimizer, t.momentum)
        return context

    for _ in range(args.warmup):
        method.train_step(trainer, next(batches), 1.0)
    tokens = 0
    for step in range(args.steps):
        batch = next(batches)
        weights = copy.deepcopy(model.state_dict())
        optimiser = copy.deepcopy(trainer.optimizer.state_dict())
        for name in names[step % len(names):] + names[: step % len(names)]:
            model.load_state_dict(weights)
            trainer.optimizer.load_state_dict(optimiser)
            context = use(name)
            began = time.perf_counter()
            method.train_step(trainer, batch, 1.0)
            seconds[name] += time.perf_counter() - began
            context.__exit__(None, None, None)
        tokens += batch.n_targets
    optim.sparse_embeddings(model, t.optimizer, t.momentum)
    return [f"| training, {args.steps} steps | {name} | {seconds[name]:.1f} s | "
            f"x{seconds['plain'] / seconds[name]:.2f} | {tokens / seconds[name]:.0f} tok/s |" for name in names]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ptb")
    p.add_argument("--data", default="ptb", help="a corpus folder or an installed corpus name")
    p.add_argument("--decoders", default="standard,skip")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--sentences", type=int, default=60, help="test sentences scored by every variant")
    p.add_argument("--group", type=int, default=4, help="sentences per turn")
    p.add_argument("--steps", type=int, default=60, help="training steps taken by both variants")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cases", default="iwnll,train")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="training precision and eval_precision of every variant")
    args = p.parse_args()
    cases = args.cases.split(",")
    decoders = args.decoders.split(",")
    if min(args.threads, args.k, args.sentences, args.group, args.steps) < 1 or args.warmup < 0:
        p.error("--threads, --k, --sentences, --group and --steps must be >= 1, --warmup >= 0")
    if not set(cases) <= {"iwnll", "train"} or not set(decoders) <= {"standard", "skip"}:
        p.error("--cases takes iwnll,train and --decoders standard,skip")

    import torch

    rows = []
    for decoder in decoders:
        trainer, cfg = cpu_trainer("fast_paths.py", args.preset, args.data, args.threads, decoder, args.precision)
        torch.set_num_threads(args.threads)
        print(f"... {decoder}", file=sys.stderr, flush=True)
        found = (iwnll(trainer, cfg, args) if "iwnll" in cases else []) + (train(trainer, args) if "train" in cases else [])
        rows += [f"| {decoder} " + row for row in found]
    print(f"{args.preset} preset, {args.precision}, {args.threads} threads, torch {torch.__version__}, "
          f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| decoder | work | variant | seconds | speed-up | result |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
