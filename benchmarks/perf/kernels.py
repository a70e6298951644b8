"""The small kernels behind this suite's CPU speed choices, each beside its alternative, in one process.

    python benchmarks/perf/kernels.py --threads 2

Every pair alternates within each round and keeps its best time over --reps rounds, so the
machine's drift hits both alike:
- exp vs exp2 over a (1024, V) block of logits (the fused softmax in `textsvae/kernels/ops.py` uses exp2);
- tanh vs 2 sigmoid(2x) - 1 over a (600, 256) LSTM cell state (`textsvae/kernels/sample_lstm.py` uses the latter);
- `nn.Dropout` vs `textsvae.kernels.dropout.Dropout`, forward + backward on a (32, 22, 256) decoder input;
- the skip decoder's output layer without gradients: [h ; z] concatenated per row vs z's term
  once per sample (`ops.skip_cross_entropy`), 6000 rows of 22 steps, with the largest difference;
- the fused output layer (`ops.linear_cross_entropy`, H = 256) with the fewer_passes fast path off and on:
  forward + backward over 900 rows (a training step) and forward over 6000 rows (IW-NLL);
- the decoder's first LSTM layer without gradients over 12 sentences x 50 samples of 22 steps
  (one IW-NLL chunk at the default eval.mem_budget_mb): nn.LSTM over the repeated input vs
  `sample_lstm.lstm_over_samples`;
- an fp32 and a bf16 square matmul (a CPU without bf16 instructions emulates the latter);
- with --compile, torch.compile (inductor, which needs a C++ compiler) against the eager kernels it
  would fuse: the softmax's exp2 and row sum over (704, V) logits, and one step of sample_lstm's cell
  update after the gates' matmul over 600 rows. The compile time is left out.
"""
from __future__ import annotations

import argparse

from timing import best_seconds  # a sibling: this folder is on sys.path


def best_ms(variants: dict, reps: int) -> dict[str, float]:
    """timing.best_seconds (interleaved, best of reps), in milliseconds."""
    return {name: seconds * 1e3 for name, seconds in best_seconds(variants, reps).items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--vocab", type=int, default=10002)
    p.add_argument("--compile", action="store_true", help="add the torch.compile rows (compiles first, ~1 min)")
    args = p.parse_args()
    if min(args.threads, args.reps, args.vocab) < 1:
        p.error("--threads, --reps and --vocab must be >= 1")

    import torch
    import torch.nn.functional as F

    from textsvae.kernels import ops
    from textsvae.kernels.dropout import Dropout
    from textsvae.kernels.fast_paths import fast_paths

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    V = args.vocab
    rows = []

    logits = torch.randn(1024, V).clamp_(max=0)
    work = torch.empty_like(logits)
    t = best_ms({"exp": lambda: torch.exp(logits, out=work), "exp2": lambda: torch.exp2(logits, out=work)}, args.reps)
    rows.append(("softmax exponent, (1024, V)", "exp", t["exp"], "exp2", t["exp2"], ""))

    cell = torch.randn(600, 256)      # one IW-NLL chunk's LSTM cell state (12 sentences x 50 samples)
    held = torch.empty_like(cell)
    t = best_ms({"tanh": lambda: torch.tanh(cell, out=held),
                 "sigmoid": lambda: torch.mul(cell, 2.0, out=held).sigmoid_().mul_(2.0).sub_(1.0)}, args.reps)
    diff = float((torch.tanh(cell) - (2 * torch.sigmoid(2 * cell) - 1)).abs().max())
    rows.append(("tanh of a (600, 256) cell state", "torch.tanh", t["tanh"], "2 sigmoid(2x) - 1", t["sigmoid"],
                 f"max |diff| {diff:.1e}"))

    x = torch.randn(32, 22, 256, requires_grad=True)
    grad = torch.randn(32, 22, 256)
    plain, ours = torch.nn.Dropout(0.5), Dropout(0.5)
    t = best_ms({"nn": lambda: plain(x).backward(grad), "ours": lambda: ours(x).backward(grad)}, args.reps)
    rows.append(("decoder dropout p=0.5, fwd + bwd, (32, 22, 256)", "nn.Dropout", t["nn"],
                 "textsvae Dropout", t["ours"], ""))

    H, D, N, T = 256, 32, 6000, 22
    weight, bias = torch.randn(V, H + D) * 0.05, torch.randn(V) * 0.1
    h, z = torch.randn(N, H), torch.randn(-(-N // T), D)
    row_sample, targets = torch.arange(N) // T, torch.randint(V, (N,))
    with torch.no_grad():
        concat = lambda: ops.linear_cross_entropy(torch.cat([h, z[row_sample]], -1), weight, bias, targets)  # noqa: E731
        per_sample = lambda: ops.skip_cross_entropy(h, z, row_sample, weight, bias, targets)  # noqa: E731
        diff = float((concat() - per_sample()).abs().max())
        exact = F.cross_entropy(torch.cat([h, z[row_sample]], -1).double() @ weight.double().t() + bias.double(),
                                targets, reduction="none")
        err = float((per_sample().double() - exact).abs().max())
        t = best_ms({"concat": concat, "per_sample": per_sample}, args.reps)
    rows.append((f"skip output layer, no grad, {N} rows", "[h ; z] per row", t["concat"], "z term per sample",
                 t["per_sample"], f"max |diff| {diff:.1e} nats; vs fp64 {err:.1e}"))

    def passes(on: bool, fn):
        def run():
            with fast_paths(fewer_passes=on):
                return fn()
        return run

    w_train = (torch.randn(V, H) * 0.05).requires_grad_()
    b_train = torch.zeros(V, requires_grad=True)
    h_train, t_train = torch.randn(900, H).requires_grad_(), torch.randint(V, (900,))
    train = lambda: ops.linear_cross_entropy(h_train, w_train, b_train, t_train).sum().backward()  # noqa: E731
    t = best_ms({"off": passes(False, train), "on": passes(True, train)}, args.reps)
    rows.append(("output layer fwd + bwd, 900 rows", "fewer_passes off", t["off"], "on", t["on"], ""))
    with torch.no_grad():
        evaluate = lambda: ops.linear_cross_entropy(h, weight[:, :H], bias, targets)  # noqa: E731
        diff = float((passes(False, evaluate)() - passes(True, evaluate)()).abs().max())
        t = best_ms({"off": passes(False, evaluate), "on": passes(True, evaluate)}, args.reps)
    rows.append((f"output layer no grad, {N} rows", "fewer_passes off", t["off"], "on", t["on"],
                 f"max |diff| {diff:.1e} nats"))

    from textsvae.kernels import sample_lstm

    E, B, S = 256, 12, 50
    lstm = torch.nn.LSTM(E + D, H, batch_first=True)
    emb, z_rows = torch.randn(B, T, E), torch.randn(B * S, D)
    state = (torch.randn(1, z_rows.size(0), H), torch.randn(1, z_rows.size(0), H))
    with torch.no_grad():
        repeated = lambda: lstm(torch.cat([emb.repeat_interleave(S, 0), z_rows[:, None].expand(-1, T, D)], -1),  # noqa: E731
                                state)[0]
        shared = lambda: sample_lstm.lstm_over_samples(lstm, emb, z_rows, state)  # noqa: E731
        diff = float((repeated() - shared()).abs().max())
        t = best_ms({"repeated": repeated, "shared": shared}, args.reps)
    rows.append((f"decoder LSTM layer 1, no grad, {B} sentences x {S} samples", "nn.LSTM, repeated input",
                 t["repeated"], "sample_lstm", t["shared"], f"max |diff| {diff:.1e}"))

    a32 = torch.randn(512, 512)
    a16 = a32.bfloat16()
    t = best_ms({"fp32": lambda: a32 @ a32, "bf16": lambda: a16 @ a16}, max(1, min(args.reps, 3)))
    rows.append(("square matmul 512^3", "fp32", t["fp32"], "bf16", t["bf16"],
                 f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}"))

    compile_error = None
    if args.compile:
        try:
            rows += compiled_rows(V, args.reps)
        except Exception as exc:  # no C++ compiler, an inductor error: keep the rows already timed
            compile_error = f"--compile: torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0]})"

    print(f"{args.threads} threads, torch {torch.__version__}, best of {args.reps}")
    print("| kernel | A | A ms | B | B ms | A / B | notes |")
    print("|---|---|---|---|---|---|---|")
    for name, a, ta, b, tb, note in rows:
        print(f"| {name} | {a} | {ta:.2f} | {b} | {tb:.2f} | x{ta / tb:.2f} | {note} |")
    if compile_error:
        raise SystemExit(compile_error)


def compiled_rows(vocab: int, reps: int) -> list[tuple]:
    """Eager kernels vs torch.compile's fusion of them, each writing into the same kept buffers."""
    import torch

    def softmax_sum(logits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:   # as ops._nll_chunks
        return torch.exp2(logits, out=out).sum(1)

    logits = torch.randn(704, vocab).clamp_(max=0)
    kept = torch.empty_like(logits)
    fused = torch.compile(softmax_sum, dynamic=False)
    sums = softmax_sum(logits, kept)
    diff = float(((fused(logits, kept) - sums) / sums).abs().max())
    t = best_ms({"eager": lambda: softmax_sum(logits, kept), "compiled": lambda: fused(logits, kept)}, reps)
    rows = [("exp2 + row sum, (704, V)", "eager", t["eager"], "torch.compile", t["compiled"],
             f"max relative diff of the sums {diff:.1e}")]

    def cell_step(gates: torch.Tensor, c: torch.Tensor, h_out: torch.Tensor) -> torch.Tensor:  # as sample_lstm
        in_gate, forget_gate, cell_sigma, out_gate = gates.sigmoid_().split(c.size(1), dim=1)
        c.mul_(forget_gate).addcmul_(in_gate, cell_sigma, value=2.0).sub_(in_gate)
        return torch.mul(out_gate, torch.sigmoid(2.0 * c), out=h_out).mul_(2.0).sub_(out_gate)

    pre_gates, c0 = torch.randn(600, 4 * 256), torch.randn(600, 256)
    gates, c, h_out = torch.empty_like(pre_gates), torch.empty_like(c0), torch.empty_like(c0)

    def step(fn):
        def run():
            gates.copy_(pre_gates)
            c.copy_(c0)
            return fn(gates, c, h_out)
        return run

    fused_cell = torch.compile(cell_step, dynamic=False)
    diff = float((step(fused_cell)().clone() - step(cell_step)()).abs().max())
    t = best_ms({"eager": step(cell_step), "compiled": step(fused_cell)}, reps)
    rows.append(("LSTM cell update after the gates' matmul, 600 rows", "eager", t["eager"], "torch.compile",
                 t["compiled"], f"both copy their inputs first; max |diff| {diff:.1e}"))
    return rows


if __name__ == "__main__":
    main()
