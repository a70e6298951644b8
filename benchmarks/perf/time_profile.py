"""Where the time goes: torch.profiler over training steps or an IW-NLL pass at a preset, or the step
against its kernel ceiling.

    python benchmarks/perf/time_profile.py train --decoder skip --threads 2
    python benchmarks/perf/time_profile.py train --precision bf16 --decoder standard
    python benchmarks/perf/time_profile.py ceiling --precision bf16 --decoder standard --steps 40
    python benchmarks/perf/time_profile.py iwnll --decoder skip --threads 2 --sentences 10

`train` and `iwnll` print the ops with the most self CPU time (the same model, data and code paths as
`perf.py`). A training step is the whole of one: the batch made from the corpus, forward, backward,
clipping and the optimiser. `ceiling` times, batch by batch and interleaved, the whole step and the
kernels it cannot do without at that batch's shapes, each alone: the output layer's three matmuls
(h W^T, G W, G^T h over the batch's targets, h being the layer's whole input: [h; z] for the skip
decoder), and every LSTM (encoder, each decoder layer) forward and
backward, in the run's precision. Their sum over the step is the ceiling: what a step made only of
those kernels would take.
"""
from __future__ import annotations

import argparse
import itertools
import time

from timing import cpu_trainer  # a sibling: this folder is on sys.path


def lstm_kernel(lstm, batch: int, steps: int, autocast):
    """One LSTM's forward + backward on random inputs of the step's shape, under the run's autocast."""
    import torch

    x = torch.randn(batch, steps, lstm.input_size, requires_grad=True)

    def run():
        with autocast():
            out, _ = lstm(x)
        out.float().sum().backward()
    return run


def output_kernels(n: int, hidden: int, vocab: int, dtype):
    """The output layer's three matmuls over n targets, the softmax block's rows aligned as in ops."""
    import torch

    from textsvae.kernels import ops

    padded = -(-vocab // ops.VOCAB_ALIGN) * ops.VOCAB_ALIGN
    h, w = torch.randn(n, hidden, dtype=dtype), torch.randn(vocab, hidden, dtype=dtype)
    grad = torch.randn(n, padded, dtype=dtype)[:, :vocab]
    logits = torch.empty(n, padded, dtype=dtype)[:, :vocab]

    def run():
        torch.mm(h, w.t(), out=logits)
        grad @ w
        grad.t() @ h
    return run


def ceiling(trainer, args) -> None:
    """The whole step and its kernels alone, interleaved batch by batch; totals and their ratio."""
    import torch

    model, method = trainer.model, trainer.method
    dtype = model.autocast_dtype or torch.float32
    decoder = model.decoder
    batches = (batch for epoch in itertools.count() for batch in trainer.train_batches(epoch))
    for _ in range(3):
        method.train_step(trainer, next(batches), 1.0)
    totals = {"step": 0.0, "output layer": 0.0, "LSTMs": 0.0}
    tokens = 0
    for _ in range(args.steps):
        batch = next(batches)
        size, steps = batch.inputs.shape
        hidden = decoder.out.in_features
        kernels = {"output layer": output_kernels(batch.n_targets, hidden, decoder.out.out_features, dtype)}
        lstms = list(decoder.layers) + ([model.encoder.lstm] if model.encoder is not None else [])
        runs = [lstm_kernel(lstm, size, steps + (1 if lstm is getattr(model.encoder, "lstm", None) else 0),
                            model._autocast) for lstm in lstms]
        kernels["LSTMs"] = lambda runs=runs: [run() for run in runs]
        for run in kernels.values():                       # warm: the shapes' first call allocates
            run()
        began = time.perf_counter()
        method.train_step(trainer, batch, 1.0)
        totals["step"] += time.perf_counter() - began
        for name, run in kernels.items():
            began = time.perf_counter()
            run()
            totals[name] += time.perf_counter() - began
        tokens += batch.n_targets
    needed = totals["output layer"] + totals["LSTMs"]
    print(f"| part | ms per step | us per target | of the step |")
    print("|---|---:|---:|---:|")
    for name, seconds in {**totals, "kernels (the ceiling)": needed}.items():
        print(f"| {name} | {seconds / args.steps * 1e3:.1f} | {seconds / tokens * 1e6:.1f} | "
              f"{seconds / totals['step']:.0%} |")
    print(f"step: {tokens / totals['step']:,.0f} targets/s; the ceiling: {tokens / needed:,.0f} targets/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["train", "ceiling", "iwnll"])
    p.add_argument("--preset", default="ptb")
    p.add_argument("--data", default="ptb", help="a corpus folder or an installed corpus name")
    p.add_argument("--decoder", default="skip", choices=["standard", "skip"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
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

    from textsvae.evaluation.scoring import evaluate_model

    trainer, cfg = cpu_trainer("time_profile.py", args.preset, args.data, args.threads, args.decoder, args.precision)
    torch.set_num_threads(args.threads)
    print(f"{args.what}, {args.decoder} decoder, {args.precision}, {args.threads} threads, torch {torch.__version__}")
    if args.what == "ceiling":
        return ceiling(trainer, args)
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
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=36))


if __name__ == "__main__":
    main()
