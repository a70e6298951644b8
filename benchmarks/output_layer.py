"""The fused output layer + cross-entropy (`textsvae/ops.py`) with its logit rows aligned or not, side by side.

    python benchmarks/output_layer.py --vocab 10002 --threads 2

PTB's vocabulary has 10,002 entries. This times, in one process and alternating so the machine's
drift hits every variant alike (best of --reps repetitions each):
- the bare fp32 matmul h W^T into rows of V floats and into rows of V rounded up to VOCAB_ALIGN;
- the fused op as shipped (aligned rows) and with VOCAB_ALIGN = 1 (rows of exactly V floats),
  forward + backward over --train-rows rows (a training step's targets) and forward only over
  --eval-rows rows (an IW-NLL decoder pass).
GFLOP/s count 2 x rows x H x V per matmul: 3 matmuls with the backward pass, 1 without.
"""
from __future__ import annotations

import argparse
import time


def best_seconds(variants: dict, reps: int) -> dict[str, float]:
    """Each variant's fastest call over reps rounds, the variants interleaved within a round."""
    for fn in variants.values():
        fn()
    best = {name: float("inf") for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=10002)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--train-rows", type=int, default=900)
    p.add_argument("--eval-rows", type=int, default=6000)
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if min(args.vocab, args.hidden, args.train_rows, args.eval_rows, args.reps, args.threads) < 1:
        p.error("every size, --reps and --threads must be >= 1")

    import torch

    from textsvae import ops

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    V, H = args.vocab, args.hidden
    weight = (torch.randn(V, H) * 0.05).requires_grad_()
    bias = torch.zeros(V, requires_grad=True)
    aligned = ops.VOCAB_ALIGN

    def with_align(align: int, fn):
        def run():
            ops.VOCAB_ALIGN = align
            try:
                fn()
            finally:
                ops.VOCAB_ALIGN = aligned
        return run

    rows = args.eval_rows
    h = torch.randn(rows, H)
    padded = -(-V // aligned) * aligned
    into_v, into_padded = torch.empty(rows, V), torch.empty(rows, padded)[:, :V]
    bare = best_seconds({"rows of V": lambda: torch.mm(h, weight.detach().t(), out=into_v),
                         f"rows of {padded}": lambda: torch.mm(h, weight.detach().t(), out=into_padded)}, args.reps)

    h_train = torch.randn(args.train_rows, H, requires_grad=True)
    t_train = torch.randint(V, (args.train_rows,))
    t_eval = torch.randint(V, (rows,))

    def train_step():
        ops.linear_cross_entropy(h_train, weight, bias, t_train).sum().backward()

    def eval_pass():
        with torch.no_grad():
            ops.linear_cross_entropy(h, weight, bias, t_eval)

    fused = best_seconds({"train, aligned": with_align(aligned, train_step),
                          "train, rows of V": with_align(1, train_step),
                          "eval, aligned": with_align(aligned, eval_pass),
                          "eval, rows of V": with_align(1, eval_pass)}, args.reps)

    def gflops(n_rows: int, matmuls: int, seconds: float) -> float:
        return 2 * n_rows * H * V * matmuls / seconds / 1e9

    print(f"V = {V}, H = {H}, {args.threads} threads, torch {torch.__version__}, best of {args.reps}")
    print("| case | GFLOP/s |")
    print("|---|---|")
    for name, seconds in bare.items():
        print(f"| bare matmul, {rows} x {H} x {V}, {name} | {gflops(rows, 1, seconds):.0f} |")
    for name, seconds in fused.items():
        n_rows, matmuls = (args.train_rows, 3) if name.startswith("train") else (rows, 1)
        print(f"| fused op, {name} ({n_rows} rows) | {gflops(n_rows, matmuls, seconds):.0f} |")


if __name__ == "__main__":
    main()
