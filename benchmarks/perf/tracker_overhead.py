"""What experiment tracking costs: one `quick`-sized run (8 epochs of 4,000 synthetic sentences, the
tiny preset, Adam 0.003, monitor rows every 100 steps) trained without trackers and with each of them,
alternating, in one process.

    WANDB_MODE=offline python benchmarks/perf/tracker_overhead.py --reps 2 --threads 1

Reports the median wall time of `train_run` (tracker start-up included) and the ratio to the untracked
run; the rows of log.jsonl must be equal in every variant (checked), since trackers change nothing.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from textsvae.core.config import apply_overrides, preset_config
from textsvae.core.io import read_jsonl
from textsvae.training.train import train_run

VARIANTS = ("", "tensorboard", "mlflow", "wandb", "tensorboard,mlflow,wandb")
TIMING = {"seconds", "tokens_per_s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    base = {"data": "synthetic", "synthetic_train": 4000, "epochs": 8, "lr": 0.003, "monitor_size": 200,
            "monitor_every": 100, "threads": args.threads, "progress": False}
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    logs: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for variant in VARIANTS:
                config = apply_overrides(preset_config("tiny"), {**base, "track": variant})
                run = Path(tmp) / f"{variant or 'none'}-{rep}"
                start = time.perf_counter()
                train_run(config, run)
                seconds[variant].append(time.perf_counter() - start)
                logs[variant] = [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run / "log.jsonl")]
    same = all(rows == logs[""] for rows in logs.values())
    reference = statistics.median(seconds[""])
    print(f"| trackers | median s of {args.reps} | ratio to none |")
    print("|---|---:|---:|")
    for variant in VARIANTS:
        median = statistics.median(seconds[variant])
        print(f"| {variant or 'none'} | {median:.1f} | {median / reference:.2f} |")
    print(f"\nlog.jsonl equal in every variant: {same}")


if __name__ == "__main__":
    main()
