"""The fused output layer + cross-entropy (`textsvae/kernels/ops.py`) with its logit rows aligned or not, side by side.

    python benchmarks/perf/output_layer.py --vocab 10002 --threads 2

PTB's vocabulary has 10,002 entries. This times, in one process and alternating so the machine's
drift hits every variant alike (best of --reps repetitions each):
- the bare fp32 matmul h W^T into rows of V floats and into rows of V rounded up to VOCAB_ALIGN;
- the fused op as shipped (aligned rows) and with VOCAB_ALIGN = 1 (rows of exactly V floats),
  forward + backward over --train-rows rows (a training step's targets) and forward only over
  --eval-rows rows (an IW-NLL decoder pass).
GFLOP/s count 2 x rows x H x V per matmul: 3 matmuls with the backward pass, 1 without.

With --ceiling it instead times, interleaved with perf.py's square fp32 probes (2048 and 4096), the
kernels one `ptb` training step is made of, each alone: the output layer's three matmuls over
--train-rows rows (h W^T, G W and G^T h) and one decoder LSTM layer (batch 32, --steps steps, input
E + z = 288, hidden 256) forward and backward, and prints each as a fraction of the faster probe:
how close to the probe a step built of these kernels can come.
"""
from __future__ import annotations

import argparse

from timing import best_seconds  # a sibling: this folder is on sys.path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=10002)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--train-rows", type=int, default=900)
    p.add_argument("--eval-rows", type=int, default=6000)
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ceiling", action="store_true", help="the step's kernels against the square probes")
    p.add_argument("--steps", type=int, default=23, help="time steps of the --ceiling LSTM (PTB: ~23 targets)")
    args = p.parse_args()
    if min(args.vocab, args.hidden, args.train_rows, args.eval_rows, args.reps, args.threads, args.steps) < 1:
        p.error("every size, --reps, --threads and --steps must be >= 1")

    import torch

    from textsvae.kernels import ops

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    V, H = args.vocab, args.hidden
    if args.ceiling:
        return print_ceiling(args, torch)
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


def print_ceiling(args, torch) -> None:
    """The training step's kernels, each alone, as fractions of the square probes timed beside them."""
    V, H, rows, batch = args.vocab, args.hidden, args.train_rows, 32
    padded = -(-V // 32) * 32
    h, w = torch.randn(rows, H), torch.randn(V, H)
    grad = torch.randn(rows, padded)[:, :V]                       # the softmax block, aligned rows as in ops
    logits = torch.empty(rows, padded)[:, :V]
    squares = {n: (torch.randn(n, n), torch.randn(n, n)) for n in (2048, 4096)}
    lstm = torch.nn.LSTM(H + 32, H, batch_first=True)
    x = torch.randn(batch, args.steps, H + 32, requires_grad=True)

    def lstm_step():
        out, _ = lstm(x)
        out.sum().backward()

    flops = {f"square {n}^3 (the probe)": 2 * n ** 3 for n in squares}
    flops.update({"output h W^T": 2 * rows * H * V, "output G W (grad h)": 2 * rows * H * V,
                  "output G^T h (grad W)": 2 * rows * H * V,
                  f"LSTM layer fwd+bwd, {batch} x {args.steps}": 3 * 2 * 4 * H * (2 * H + 32) * batch * args.steps})
    kernels = {f"square {n}^3 (the probe)": (lambda a=a, b=b: a @ b) for n, (a, b) in squares.items()}
    kernels.update({"output h W^T": lambda: torch.mm(h, w.t(), out=logits), "output G W (grad h)": lambda: grad @ w,
                    "output G^T h (grad W)": lambda: grad.t() @ h,
                    f"LSTM layer fwd+bwd, {batch} x {args.steps}": lstm_step})
    seconds = best_seconds(kernels, args.reps)
    rates = {name: flops[name] / t / 1e9 for name, t in seconds.items()}
    probe = max(rate for name, rate in rates.items() if name.startswith("square"))
    print(f"V = {V}, H = {H}, {rows} output rows, {args.threads} threads, torch {torch.__version__}, "
          f"best of {args.reps}, interleaved")
    print("| kernel | GFLOP/s | of the faster probe |")
    print("|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} | {rate / probe:.0%} |")


if __name__ == "__main__":
    main()
