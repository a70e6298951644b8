"""End to end, the CPU fast paths off and on in one process, alternating, at a preset.

    python benchmarks/fast_paths.py --threads 2

A noisy machine drifts by 10-25% within minutes (see `results/perf.md`), more than these paths
change, so each variant runs on the same work in turn and the totals are compared:
- IW-NLL with K samples: every group of --group test sentences is scored by each variant in turn
  (the order rotating from group to group); variants are the plain paths, `ops.FEWER_PASSES`
  alone, and that with `sample_lstm` (the shipped code). Their IW-NLL must agree.
- training steps: every batch is trained on by each variant in turn (the plain paths,
  `ops.FEWER_PASSES`, for the skip decoder that with `ops.Z_TERM_PER_SAMPLE`, then with
  `optim.SPARSE_EMBEDDINGS`, the shipped code, when the preset trains with plain SGD), from
  the same weights and optimiser state (restored after each variant's step), so both do the same
  arithmetic (with their own dropout draws).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

VARIANTS = {"plain": (False, False), "fewer passes": (True, False), "fewer passes + sample_lstm": (True, True)}


def _set(variant: str) -> None:
    from textsvae import ops, sample_lstm

    ops.FEWER_PASSES, sample_lstm.ENABLED = VARIANTS[variant]


def iwnll(trainer, cfg, args) -> list[str]:
    from textsvae.evaluation import evaluate_model

    sentences = trainer.corpus.splits["test"][: args.sentences]
    trainer.model.eval()
    names = list(VARIANTS)
    seconds = dict.fromkeys(names, 0.0)
    nll = {name: [] for name in names}
    for g, start in enumerate(range(0, len(sentences), args.group)):
        group = sentences[start:start + args.group]
        for name in names[g % len(names):] + names[: g % len(names)]:
            _set(name)
            began = time.perf_counter()
            result = evaluate_model(trainer.model, trainer.method, group, cfg.eval, trainer.device, iw_samples=args.k)
            seconds[name] += time.perf_counter() - began
            nll[name].append(result["iw_nll"] * len(group))
    _set("fewer passes + sample_lstm")
    base = seconds["plain"]
    out = []
    for name in names:
        mean_nll = sum(nll[name]) / len(sentences)
        out.append(f"| IW-NLL K={args.k}, {len(sentences)} sentences | {name} | {seconds[name]:.1f} s | "
                   f"x{base / seconds[name]:.2f} | iw_nll {mean_nll:.4f} |")
    return out


# (ops.FEWER_PASSES, ops.Z_TERM_PER_SAMPLE, optim.SPARSE_EMBEDDINGS); the z term applies to the skip decoder only
TRAIN_VARIANTS = {"plain": (False, False, False), "fewer passes": (True, False, False),
                  "fewer passes + z term per sample": (True, True, False),
                  "+ sparse embedding gradients": (True, True, True)}


def train(trainer, args) -> list[str]:
    from textsvae import ops, optim

    batches = trainer.train_batches(0)
    model, method, t = trainer.model, trainer.method, trainer.config.train
    names = list(TRAIN_VARIANTS) if model.decoder.skip else [n for n in TRAIN_VARIANTS if "z term" not in n]
    seconds = dict.fromkeys(names, 0.0)

    def use(name: str) -> None:
        ops.FEWER_PASSES, ops.Z_TERM_PER_SAMPLE, optim.SPARSE_EMBEDDINGS = TRAIN_VARIANTS[name]
        optim.sparse_embeddings(model, t.optimizer, t.momentum)

    use(names[-1])
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
            use(name)
            began = time.perf_counter()
            method.train_step(trainer, batch, 1.0)
            seconds[name] += time.perf_counter() - began
        tokens += batch.n_targets
    use(names[-1])
    return [f"| training, {args.steps} steps | {name} | {seconds[name]:.1f} s | "
            f"x{seconds['plain'] / seconds[name]:.2f} | {tokens / seconds[name]:.0f} tok/s |" for name in names]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ptb")
    p.add_argument("--data", default="../shared/data/ptb")
    p.add_argument("--decoders", default="standard,skip")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--sentences", type=int, default=60, help="test sentences scored by every variant")
    p.add_argument("--group", type=int, default=4, help="sentences per turn")
    p.add_argument("--steps", type=int, default=60, help="training steps taken by both variants")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cases", default="iwnll,train")
    args = p.parse_args()
    cases = args.cases.split(",")
    decoders = args.decoders.split(",")
    if min(args.threads, args.k, args.sentences, args.group, args.steps) < 1 or args.warmup < 0:
        p.error("--threads, --k, --sentences, --group and --steps must be >= 1, --warmup >= 0")
    if not set(cases) <= {"iwnll", "train"} or not set(decoders) <= {"standard", "skip"}:
        p.error("--cases takes iwnll,train and --decoders standard,skip")

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from perf import _trainer  # the same set-up as the perf cases

    from textsvae.config import ConfigError
    from textsvae.data.corpus import CorpusError

    rows = []
    for decoder in decoders:
        try:
            trainer, cfg = _trainer(argparse.Namespace(preset=args.preset, data=args.data, threads=args.threads),
                                    decoder, "fp32")
        except (ConfigError, CorpusError) as exc:
            raise SystemExit(f"fast_paths.py: error: {exc}") from None
        torch.set_num_threads(args.threads)
        print(f"... {decoder}", file=sys.stderr, flush=True)
        found = (iwnll(trainer, cfg, args) if "iwnll" in cases else []) + (train(trainer, args) if "train" in cases else [])
        rows += [f"| {decoder} " + row for row in found]
    print(f"{args.preset} preset, {args.threads} threads, torch {torch.__version__}, "
          f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| decoder | work | variant | seconds | speed-up | result |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
