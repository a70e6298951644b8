"""Speed and memory of training and evaluation beside a matmul probe of the same machine, in one run.

    python benchmarks/perf.py --preset ptb --data ../shared/data/ptb --threads 2 \
        --decoders standard,skip --precisions fp32,bf16 --out results/perf.json

Each case runs in its own subprocess (so its peak memory is its own) one after another:
- `matmul`: the best of fp32 (and bf16) square matmuls of sizes 1024-4096, the machine's reference rate;
- `train`: optimiser steps at the preset; FLOPs per target token = 6 x the multiply-adds of the
  encoder LSTM, decoder LSTM and output layer (the issue's convention);
- `iwnll`: IW-NLL with K samples over the first --eval-sentences test sentences, extrapolated to
  the whole split; FLOPs = 2 x multiply-adds of decoder LSTM + output layer per target per sample;
- `pack`: --threads single-thread training processes side by side (how `bench --jobs N` packs
  runs), their summed tokens/s against one process using all the threads;
- `iwpack`: the `iwnll` case scored by --threads forked single-thread processes (`eval.workers`);
- `miau`: MI and AU over the whole test split;
- `reseed`: the fp32 training case again with other dropout draws (same init, same batches): how far
  two fp32 runs' validation losses drift apart, the yardstick for the bf16 run's difference.
Each timed case also probes the fp32 matmul rate in its own process just before and just after its timing
(this machine's speed drifts by 10-25% over minutes); its ratio is against the faster of the two. The
training and IW-NLL cases run in --slices slices with a shorter probe of the same sizes
(--slice-probe-seconds each) after each, and a second ratio is against those probes'
time-weighted rate during the case.
Rows are JSON; the table printed at the end quotes each rate as a fraction of the fp32 matmul.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from textsvae.io import atomic_write_text


def _reset_peak_rss() -> None:
    """Start the peak-RSS count afresh (Linux: "5" to clear_refs resets VmHWM), so the probe is not counted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def macs_per_target(cfg, vocab_size: int) -> dict[str, float]:
    """Multiply-adds per target token of each part at this config."""
    m = cfg.model
    nz = m.latent_dim if m.decoder != "lm" else 0
    skip_nz = nz if m.decoder == "skip" else 0
    enc = 4 * m.enc_hidden * (m.emb_dim + m.enc_hidden) if m.decoder != "lm" else 0
    dec = 4 * m.dec_hidden * (m.emb_dim + nz + m.dec_hidden)
    dec += (m.dec_layers - 1) * 4 * m.dec_hidden * (m.dec_hidden + skip_nz + m.dec_hidden)
    out = (m.dec_hidden + skip_nz) * vocab_size
    return {"encoder": enc, "decoder": dec, "output": out}


PROBE_SIZES = (2048, 4096)   # the square matmuls of the probes taken in each case's process


def matmul_rate(dtype, sizes=(1024, 2048, 4096), seconds: float = 1.0) -> float:
    """The best GFLOP/s of square matmuls of these sizes (the most favourable: ratios to it are conservative)."""
    import torch

    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9)
    return best



def probed_slices(work: list, probe_seconds: float) -> tuple[list, float, float, float]:
    """Run each callable of work in turn, with a short fp32 matmul probe before the first and after each.

    Returns (their results, the work's seconds, the probe's GFLOP/s during the work, the peak MB
    so far without the probes' matrices). The rate during the work weights each slice by its
    seconds and rates it by the mean of the probes on either side of it, so that a case on a machine
    whose speed drifts within minutes is compared with that machine at that time.
    """
    import torch

    def probe() -> float:
        rate = matmul_rate(torch.float32, PROBE_SIZES, probe_seconds)
        _reset_peak_rss()  # the probe's matrices are not the case's memory
        return rate

    peak = _peak_rss_mb()  # the case's set-up
    rates, results, seconds = [probe()], [], []
    for fn in work:
        start = time.perf_counter()
        results.append(fn())
        seconds.append(time.perf_counter() - start)
        peak = max(peak, _peak_rss_mb())
        rates.append(probe())
    during = sum(t * (a + b) / 2 for t, a, b in zip(seconds, rates, rates[1:])) / sum(seconds)
    return results, sum(seconds), during, peak


def _split(items: list, parts: int) -> list[list]:
    """items in min(parts, len(items)) consecutive runs of near-equal size."""
    parts = min(parts, len(items))
    return [items[len(items) * i // parts: len(items) * (i + 1) // parts] for i in range(parts)]

def case_matmul(args) -> dict:
    """fp32, and bf16 when --precisions asks for it (a CPU without bf16 instructions takes minutes on it)."""
    import torch

    dtypes = [torch.float32] + ([torch.bfloat16] if "bf16" in args.precisions.split(",") else [])
    return {"matmul": [{"dtype": str(dtype).replace("torch.", ""), "gflops": matmul_rate(dtype, seconds=args.probe_seconds)}
                       for dtype in dtypes], "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _trainer(args, decoder: str, precision: str):
    from textsvae.config import apply_overrides, preset_config
    from textsvae.train import Trainer

    cfg = apply_overrides(preset_config(args.preset), {
        "data": args.data, "decoder": decoder, "precision": precision, "eval_precision": precision,
        "progress": False, "threads": args.threads, "seed": 0})
    return Trainer(cfg, "/nonexistent-perf-run"), cfg


def case_train(args, decoder: str, precision: str, dropout_seed: int | None = None) -> dict:
    import torch

    trainer, cfg = _trainer(args, decoder, precision)
    if dropout_seed is not None:  # the model is already initialised: only the dropout draws change
        torch.manual_seed(dropout_seed)
    macs = macs_per_target(cfg, len(trainer.corpus.vocab))
    batches = trainer.train_batches(0)
    for _ in range(args.warmup):
        trainer.method.train_step(trainer, next(batches), 1.0)

    def steps(n: int):
        def run() -> int:
            tokens = 0
            for _ in range(n):
                batch = next(batches)
                trainer.method.train_step(trainer, batch, 1.0)
                tokens += batch.n_targets
            return tokens
        return run

    slices = [steps(len(part)) for part in _split(range(args.steps), args.slices)]
    tokens, seconds, probe_during, peak = probed_slices(slices, args.slice_probe_seconds)
    rate = sum(tokens) / seconds
    trainer.model.set_precision("fp32")  # compare precisions on the same fp32 validation
    valid = trainer.validate("valid")
    return {"tokens_per_s": rate, "gflops": 6 * sum(macs.values()) * rate / 1e9, "steps": args.steps,
            "seconds": seconds, "probe_gflops_during": probe_during, "work_peak_rss_mb": peak,
            "valid_loss_after_steps": valid["loss"], "epoch_seconds_est": trainer.corpus.tokens("train") / rate,
            "macs_per_token": macs}


def case_iwnll(args, decoder: str, precision: str, workers: int = 1) -> dict:
    from dataclasses import replace

    from textsvae.evaluation import evaluate_model

    trainer, cfg = _trainer(args, decoder, precision)
    cfg = replace(cfg, eval=replace(cfg.eval, workers=workers))
    macs = macs_per_target(cfg, len(trainer.corpus.vocab))
    sentences = trainer.corpus.splits["test"][: args.eval_sentences]
    trainer.model.eval()
    evaluate_model(trainer.model, trainer.method, sentences[:8], cfg.eval, trainer.device, iw_samples=args.k)
    groups = _split(sentences, args.slices)
    results, seconds, probe_during, peak = probed_slices(
        [lambda g=g: evaluate_model(trainer.model, trainer.method, g, cfg.eval, trainer.device, iw_samples=args.k)
         for g in groups], args.slice_probe_seconds)
    iw_nll = sum(r["iw_nll"] * len(g) for r, g in zip(results, groups)) / len(sentences)
    targets = sum(len(s) + 1 for s in sentences)
    n_test = len(trainer.corpus.splits["test"])
    return {"k": args.k, "sentences": len(sentences), "seconds": seconds, "sentences_per_s": len(sentences) / seconds,
            "full_test_seconds_est": seconds * n_test / len(sentences), "test_sentences": n_test,
            "gflops": 2 * (macs["decoder"] + macs["output"]) * targets * args.k / seconds / 1e9,
            "iw_nll": iw_nll, "workers": workers, "probe_gflops_during": probe_during, "work_peak_rss_mb": peak,
            "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if workers > 1 else None}


def case_iwpack(args, decoder: str, precision: str) -> dict:
    """IW-NLL scored by --threads forked processes of one thread each (`eval.workers`)."""
    return case_iwnll(args, decoder, precision, workers=args.threads)


def case_miau(args, decoder: str, precision: str) -> dict:
    """MI and AU over the whole test split: encode every sentence, then the split-level metrics."""
    import torch

    from textsvae.data.batching import iterate_batches
    from textsvae.evaluation import latent_metrics

    trainer, cfg = _trainer(args, decoder, precision)
    sentences = trainer.corpus.splits["test"]
    trainer.model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        params = [trainer.model.encode(b.to(trainer.device)) for b in iterate_batches(sentences, cfg.eval.eval_batch_size)]
    mu = torch.cat([p[0] for p in params]).double()
    logvar = torch.cat([p[1] for p in params]).double()
    encoded = time.perf_counter()
    result = latent_metrics(mu, logvar, cfg.eval, trainer.device)
    done = time.perf_counter()
    return {"sentences": len(sentences), "encode_seconds": encoded - start, "mi_au_seconds": done - encoded,
            "seconds": done - start, "mi": result["mi"], "au": result["au"]}


def case_reseed(args, decoder: str, precision: str) -> dict:
    return case_train(args, decoder, "fp32", dropout_seed=1)


CASES = {"matmul": case_matmul, "train": case_train, "reseed": case_reseed, "iwnll": case_iwnll,
         "iwpack": case_iwpack, "miau": case_miau}


def run_child(args) -> None:
    from textsvae.config import ConfigError
    from textsvae.data.corpus import CorpusError

    try:
        _run_case(args)
    except (ConfigError, CorpusError) as exc:  # a bad --data, --preset or --decoders: one line, exit 2
        print(f"perf.py: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_case(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fn = CASES[args.case]
    if args.case == "matmul":
        row = fn(args)
    else:
        before = matmul_rate(torch.float32, PROBE_SIZES)
        _reset_peak_rss()
        row = fn(args, args.decoder, args.precision)
        row["peak_rss_mb"] = max(_peak_rss_mb(), row.pop("work_peak_rss_mb", 0.0))
        row["probe_gflops"] = [before, matmul_rate(torch.float32, PROBE_SIZES)]
    row.setdefault("peak_rss_mb", _peak_rss_mb())
    row.update({"case": args.case, "decoder": args.decoder, "precision": args.precision, "threads": args.threads,
                "preset": args.preset, "torch": torch.__version__})
    print("ROW " + json.dumps(row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ptb")
    p.add_argument("--data", default="../shared/data/ptb")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--decoders", default="standard,skip")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--cases", default="matmul,train,reseed,pack,iwnll,iwpack,miau")
    p.add_argument("--steps", type=int, default=60, help="timed training steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--k", type=int, default=500, help="IW samples")
    p.add_argument("--eval-sentences", type=int, default=200, help="test sentences timed for IW-NLL")
    p.add_argument("--probe-seconds", type=float, default=5.0)
    p.add_argument("--slices", type=int, default=5, help="timed training and IW-NLL cases run in this many slices, "
                   "a short matmul probe after each")
    p.add_argument("--slice-probe-seconds", type=float, default=0.5)
    p.add_argument("--out", default=None, help="write the JSON rows here")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--decoder", default="", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.slices < 1 or args.slice_probe_seconds <= 0:
        p.error("--slices must be >= 1 and --slice-probe-seconds > 0")
    unknown = set(args.cases.split(",")) - set(CASES) - {"pack"}
    if unknown:
        p.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(set(CASES) | {'pack'}))}")
    if set(args.precisions.split(",")) - {"fp32", "bf16"}:
        p.error(f"--precisions takes fp32 and bf16, got '{args.precisions}'")
    if args.case:
        return run_child(args)
    rows = []
    plan = []
    for case in args.cases.split(","):
        if case == "matmul":
            plan.append(("matmul", "", ""))
            continue
        for decoder in args.decoders.split(","):
            for precision in (args.precisions.split(",") if case not in ("miau", "pack", "reseed", "iwpack") else ["fp32"]):
                plan.append((case, decoder, precision))
    base = [sys.executable, __file__, "--preset", args.preset, "--data", args.data, "--threads", str(args.threads),
            "--precisions", args.precisions,
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--k", str(args.k),
            "--eval-sentences", str(args.eval_sentences), "--probe-seconds", str(args.probe_seconds),
            "--slices", str(args.slices), "--slice-probe-seconds", str(args.slice_probe_seconds)]
    for case, decoder, precision in plan:
        print(f"... {case} {decoder} {precision}", file=sys.stderr, flush=True)
        if case == "pack":  # --threads training processes side by side, 1 thread each: the bench's packing
            rows.append(run_packed(base, decoder, args.threads))
        else:
            rows.append(_child_row(base + ["--case", case, "--decoder", decoder, "--precision", precision]))
        if args.out:  # after every case, so a later failure keeps the rows already measured
            atomic_write_text(args.out, json.dumps(rows, indent=2) + "\n")
    print_table(rows)


def _child_row(command: list[str]) -> dict:
    out = subprocess.run(command, capture_output=True, text=True)
    return _parse_child(out.returncode, out.stdout, out.stderr, command)


def _parse_child(returncode: int, stdout: str, stderr: str, command: list[str]) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("ROW ")]
    if returncode == 2 and stderr.strip():  # the child's one-line error about the input
        raise SystemExit(stderr.strip().splitlines()[-1])
    if returncode != 0 or not lines:
        print(stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"failed: {' '.join(command[2:])}")
    return json.loads(lines[-1][4:])


def run_packed(base: list[str], decoder: str, jobs: int) -> dict:
    """`jobs` single-thread training processes at once (as `bench --jobs N` runs them): summed tokens/s."""
    command = list(base)
    command[command.index("--threads") + 1] = "1"
    command += ["--case", "train", "--decoder", decoder, "--precision", "fp32"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(jobs)]
    outputs = [p.communicate() for p in procs]
    rows = [_parse_child(p.returncode, out, err, command) for p, (out, err) in zip(procs, outputs)]
    return {"case": "pack", "decoder": decoder, "precision": "fp32", "threads": 1, "jobs": jobs,
            "tokens_per_s": sum(r["tokens_per_s"] for r in rows), "gflops": sum(r["gflops"] for r in rows),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
            # each process probed one thread while the other ran: their sum is the machine's rate then
            "probe_gflops": [sum(r["probe_gflops"][i] for r in rows) for i in (0, 1)],
            "probe_gflops_during": sum(r["probe_gflops_during"] for r in rows)}


def print_table(rows: list[dict]) -> None:
    probe = next((r for r in rows if r["case"] == "matmul"), None)
    ref = {m["dtype"]: m["gflops"] for m in probe["matmul"]} if probe else {}
    if ref:
        bf16 = f", bf16 {ref['bfloat16']:.1f} GFLOP/s" if "bfloat16" in ref else ""
        print(f"matmul probe ({probe['threads']} threads, ATen CPU capability {probe.get('cpu_capability', '?')}): "
              f"fp32 {ref['float32']:.1f} GFLOP/s{bf16}")
    fp32_train = {r["decoder"]: r for r in rows if r["case"] == "train" and r["precision"] == "fp32"}
    fp32_iw = {r["decoder"]: r for r in rows if r["case"] == "iwnll" and r["precision"] == "fp32"}

    def of_probe(r: dict) -> str:
        """GFLOP/s as a fraction of the row's own fp32 probe (the faster of before/after), else the run's."""
        own = max(r.get("probe_gflops") or [0.0])
        base = own or ref.get("float32")
        return f"{r['gflops'] / base:.0%} of {base:.0f}" if base and "gflops" in r else "-"

    def of_during(r: dict) -> str:
        """GFLOP/s as a fraction of the probes taken between the case's slices (time-weighted)."""
        base = r.get("probe_gflops_during")
        return f"{r['gflops'] / base:.0%} of {base:.0f}" if base else "-"

    def drift(r: dict) -> str:
        base = fp32_train.get(r["decoder"])
        if base is None or r is base:
            return ""
        return f" ({(r['valid_loss_after_steps'] / base['valid_loss_after_steps'] - 1):+.2%} vs fp32)"

    print("| case | decoder | precision | rate | GFLOP/s | of fp32 matmul | of the probe during | peak MB | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["case"] == "matmul":
            continue
        if r["case"] == "train":
            base = fp32_train.get(r["decoder"])
            speedup = r["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
            # the same ratio with each rate divided by its own probe first: the machine's drift taken out
            adjusted = speedup * max(base.get("probe_gflops") or [1]) / max(r.get("probe_gflops") or [1]) if base else speedup
            print(f"| train | {r['decoder']} | {r['precision']} | {r['tokens_per_s']:.0f} tok/s | {r['gflops']:.1f} | "
                  f"{of_probe(r)} | {of_during(r)} | {r['peak_rss_mb']:.0f} | epoch ~{r['epoch_seconds_est']:.0f} s; x{speedup:.2f} of fp32 "
                  f"(x{adjusted:.2f} against the probes); "
                  f"valid loss after {r['steps']} steps {r['valid_loss_after_steps']:.3f}{drift(r)} |")
        elif r["case"] == "reseed":
            print(f"| train, other dropout draws | {r['decoder']} | fp32 | {r['tokens_per_s']:.0f} tok/s | "
                  f"{r['gflops']:.1f} | {of_probe(r)} | {of_during(r)} | {r['peak_rss_mb']:.0f} | the fp32 yardstick: valid loss after "
                  f"{r['steps']} steps {r['valid_loss_after_steps']:.3f}{drift(r)} |")
        elif r["case"] == "pack":
            single = fp32_train[r["decoder"]]["tokens_per_s"] if r["decoder"] in fp32_train else float("nan")
            print(f"| train, {r['jobs']} processes x 1 thread | {r['decoder']} | fp32 | {r['tokens_per_s']:.0f} tok/s "
                  f"(sum) | {r['gflops']:.1f} | {of_probe(r)} | {of_during(r)} | {r['peak_rss_mb']:.0f} each | x{r['tokens_per_s'] / single:.2f} "
                  f"of one process with all threads |")
        elif r["case"] == "iwnll":
            base = fp32_iw.get(r["decoder"])
            speedup = r["sentences_per_s"] / base["sentences_per_s"] if base else float("nan")
            print(f"| IW-NLL K={r['k']} | {r['decoder']} | {r['precision']} | {r['sentences_per_s']:.2f} sent/s | "
                  f"{r['gflops']:.1f} | {of_probe(r)} | {of_during(r)} | {r['peak_rss_mb']:.0f} | whole test split ~{r['full_test_seconds_est'] / 60:.1f} min; "
                  f"x{speedup:.2f} of fp32; "
                  f"iw_nll {r['iw_nll']:.3f} on {r['sentences']} sentences |")
        elif r["case"] == "iwpack":
            base = fp32_iw.get(r["decoder"])
            speedup = r["sentences_per_s"] / base["sentences_per_s"] if base else float("nan")
            same = f"; iw_nll {r['iw_nll']:.3f}" + (f" (one process: {base['iw_nll']:.3f})" if base else "")
            print(f"| IW-NLL K={r['k']}, {r['workers']} processes x 1 thread | {r['decoder']} | fp32 | "
                  f"{r['sentences_per_s']:.2f} sent/s | {r['gflops']:.1f} | {of_probe(r)} | {of_during(r)} | "
                  f"{r['worker_peak_rss_mb']:.0f} each | whole test split ~{r['full_test_seconds_est'] / 60:.1f} min; "
                  f"x{speedup:.2f} of one process with all threads{same} |")
        else:
            print(f"| encode + MI + AU | {r['decoder']} | {r['precision']} | {r['seconds']:.2f} s | - | - | - | "
                  f"{r['peak_rss_mb']:.0f} | {r['sentences']} sentences; encode {r['encode_seconds']:.2f} s, "
                  f"MI+AU {r['mi_au_seconds']:.2f} s |")


if __name__ == "__main__":
    main()
