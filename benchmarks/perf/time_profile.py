"""Where the time goes: torch.profiler over training steps or an IW-NLL pass at a preset.

    python benchmarks/perf/time_profile.py train --decoder skip --threads 2
    python benchmarks/perf/time_profile.py iwnll --decoder skip --threads 2 --sentences 10

Prints the ops with the most self CPU time (the same model, data and code paths as `perf.py`).
"""
from __future__ import annotations

import argparse

from timing import fp32_cpu_trainer  # a sibling: this folder is on sys.path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["train", "iwnll"])
    p.add_argument("--preset", default="ptb")
    p.add_argument("--data", default="ptb", help="a corpus folder or an installed corpus name")
    p.add_argument("--decoder", default="skip", choices=["standard", "skip"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="profiled training steps")
    p.add_argument("--sentences", type=int, default=10, help="profiled test sentences (IW-NLL)")
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--rows", type=int, default=15)
    args = p.parse_args()
    if min(args.threads, args.steps, args.sentences, args.k, args.rows) < 1:
        p.error("--threads, --steps, --sentences, --k and --rows must be >= 1")

    import torch
    from torch.profiler import ProfilerActivity, profile

    from textsvae.evaluation import evaluate_model

    trainer, cfg = fp32_cpu_trainer("time_profile.py", args.preset, args.data, args.threads, args.decoder)  # as perf's
    torch.set_num_threads(args.threads)
    if args.what == "train":
        batches = trainer.train_batches(0)
        for _ in range(3):
            trainer.method.train_step(trainer, next(batches), 1.0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                trainer.method.train_step(trainer, next(batches), 1.0)
    else:
        sentences = trainer.corpus.splits["test"][: args.sentences]
        trainer.model.eval()
        evaluate_model(trainer.model, trainer.method, sentences[:2], cfg.eval, trainer.device, iw_samples=args.k)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            evaluate_model(trainer.model, trainer.method, sentences, cfg.eval, trainer.device, iw_samples=args.k)
    print(f"{args.what}, {args.decoder} decoder, {args.threads} threads, torch {torch.__version__}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=36))


if __name__ == "__main__":
    main()
