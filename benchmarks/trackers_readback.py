"""Read every run of a tracked benchmark back from TensorBoard, MLflow and W&B and compare with the run's
log.jsonl, monitor.jsonl and rows.csv; print a markdown summary.

    WANDB_MODE=offline textsvae bench quick --results runs/quick --track tensorboard,mlflow,wandb
    python benchmarks/trackers_readback.py runs/quick [--show RUN_ID] > results/trackers-quick.md
"""
from __future__ import annotations

import argparse
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from textsvae.trackers.readback import logged_series, read_mlflow, read_tensorboard, read_wandb

FINAL = ("iw_nll", "kl", "mi", "au", "ppl")


def compare(points: dict[str, list[tuple[int, float]]], want: dict[str, dict[int, float]], float32: bool):
    """(values compared, values that differ, steps sent twice, metrics missing or extra)."""
    compared = differ = twice = 0
    got = {k: v for k, v in points.items() if "/" not in k or k.startswith("monitor/")}
    for key, pairs in got.items():
        steps = [s for s, _ in pairs]
        twice += len(steps) - len(set(steps))
    for key, by_step in want.items():
        have = dict(got.get(key, []))
        for step, value in by_step.items():
            compared += 1
            expected = float(np.float32(value)) if float32 else value
            differ += step not in have or have[step] != expected
    return compared, differ, twice, len(set(got) ^ set(want))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--show", default=None, help="A run id whose last epoch is printed from each tracker.")
    args = parser.parse_args()
    rows = pd.concat([pd.read_csv(p) for p in sorted(args.results.glob("*/rows.csv"))])
    runs = sorted(p.parent for p in args.results.glob("*/trackers.json"))
    totals = {name: [0, 0, 0, 0] for name in ("tensorboard", "mlflow", "wandb")}
    final = {"mlflow": [0, 0], "wandb": [0, 0]}
    for run in runs:
        want = logged_series(run)
        tb, _ = read_tensorboard(run)
        ml, ml_run, _ = read_mlflow(run)
        wb, _, wb_summary, _ = read_wandb(run)
        for name, points, f32 in (("tensorboard", tb, True), ("mlflow", ml, False), ("wandb", wb, False)):
            totals[name] = [a + b for a, b in zip(totals[name], compare(points, want, f32))]
        mine = rows[(rows.run_id == run.name) & (rows.split == "test")].set_index("metric").value
        for metric in FINAL:
            if metric in mine and not math.isnan(mine[metric]):
                for name, store in (("mlflow", ml_run.data.metrics), ("wandb", wb_summary)):
                    final[name][0] += 1
                    final[name][1] += store.get(f"test/{metric}") != mine[metric]
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"Read back from {len(runs)} runs in {args.results} (textsvae at {commit}):\n")
    print("| tracker | values compared with log.jsonl + monitor.jsonl | differing | steps sent twice | "
          "metrics missing or extra | final test metrics compared with rows.csv | differing |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (n, bad, twice, extra) in totals.items():
        f = final.get(name)
        print(f"| {name} | {n} | {bad} | {twice} | {extra} | {f[0] if f else '-'} | {f[1] if f else '-'} |")
    print("\nTensorBoard event files hold float32: its values are compared with float32(log value).")
    if args.show:
        run = args.results / args.show
        last = max(logged_series(run)["valid_loss"])
        tb, _ = read_tensorboard(run)
        ml, _, _ = read_mlflow(run)
        wb, _, _, _ = read_wandb(run)
        want = logged_series(run)
        print(f"\nRun {args.show}, step {last} (its last epoch):\n")
        print("| metric | log.jsonl | TensorBoard | MLflow | W&B |")
        print("|---|---:|---:|---:|---:|")
        for key in ("train_loss", "train_kl", "valid_loss", "valid_kl", "valid_mi", "valid_au", "lr", "beta"):
            values = [want[key][last]] + [dict(p[key])[last] for p in (tb, ml, wb)]
            print(f"| {key} | " + " | ".join(repr(v) for v in values) + " |")


if __name__ == "__main__":
    main()
