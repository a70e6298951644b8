"""Speed and memory of training and evaluation beside a matmul probe of the same machine, in one run.

    python benchmarks/perf/perf.py --preset ptb --data ptb --threads 2 \
        --decoders standard,skip --precisions fp32,bf16 --out results/perf.json
    python benchmarks/perf/perf.py --device cuda --preset ptb --precisions fp32,bf16 --out perf-gpu.json

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
(a machine's speed can drift within minutes); its ratio is against the faster of the two. The
training and IW-NLL cases run in --slices slices with a shorter probe of the same sizes
(--slice-probe-seconds each) after each, and a second ratio is against those probes'
time-weighted rate during the case.
Rows are JSON; the table printed at the end quotes each rate as a fraction of the fp32 matmul.

With --device cuda the cases run on the GPU: the probes are square fp32 (IEEE, no TF32) and bf16
matmuls on it, every timing ends with a synchronize, peak memory is the GPU's (torch's allocator),
and `pack` and `iwpack`, which pack CPU threads, are left out.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from textsvae.core.io import atomic_write_text
from timing import macs_per_target, matmul_rate, preset_trainer, sync  # a sibling: this folder is on sys.path


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


# square matmul sizes: of the `matmul` case, and of the probes taken in each case's process
MATMUL_SIZES = {"cpu": (1024, 2048, 4096), "cuda": (4096, 8192)}
PROBE_SIZES = {"cpu": (2048, 4096), "cuda": (8192,)}
CPU_ONLY_CASES = {"pack", "iwpack"}  # they pack CPU threads
DEFAULT_CASES = "matmul,train,reseed,pack,iwnll,iwpack,miau"


def _reset_peak(device) -> None:
    _reset_peak_rss()
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> float:
    """Peak memory so far: the GPU's allocated bytes on CUDA, the process's resident set on the CPU."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return _peak_rss_mb()


def probed_slices(work: list, probe_seconds: float, device, sizes) -> tuple[list, float, float, float]:
    """Run each callable of work in turn, with a short fp32 matmul probe before the first and after each.

    Returns (their results, the work's seconds, the probe's GFLOP/s during the work, the peak MB
    so far without the probes' matrices). The rate during the work weights each slice by its
    seconds and rates it by the mean of the probes on either side of it, so that a case on a machine
    whose speed drifts within minutes is compared with that machine at that time. Each slice's clock
    stops after the device has finished its work.
    """
    import torch

    def probe() -> float:
        rate = matmul_rate(torch.float32, sizes, probe_seconds, device)
        _reset_peak(device)  # the probe's matrices are not the case's memory
        return rate

    peak = _peak_mb(device)  # the case's set-up
    rates, results, seconds = [probe()], [], []
    for fn in work:
        start = time.perf_counter()
        results.append(fn())
        sync(device)
        seconds.append(time.perf_counter() - start)
        peak = max(peak, _peak_mb(device))
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

    device = torch.device(args.device)
    dtypes = [torch.float32] + ([torch.bfloat16] if "bf16" in args.precisions.split(",") else [])
    sizes = tuple(args.probe_sizes) if args.probe_sizes else MATMUL_SIZES[device.type]
    row = {"matmul": [{"dtype": str(dtype).replace("torch.", ""),
                       "gflops": matmul_rate(dtype, sizes, args.probe_seconds, device)} for dtype in dtypes],
           "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if device.type == "cuda":
        row["gpu"] = torch.cuda.get_device_name(device)
    return row


def _trainer(args, decoder: str, precision: str):
    return preset_trainer(args.preset, args.data, args.threads, decoder, precision, args.device)


def case_train(args, decoder: str, precision: str, dropout_seed: int | None = None) -> dict:
    import torch

    trainer, cfg = _trainer(args, decoder, precision)
    if dropout_seed is not None:  # the model is already initialised: only the dropout draws change
        torch.manual_seed(dropout_seed)
    macs = macs_per_target(cfg.model, len(trainer.corpus.vocab))
    batches = itertools.chain.from_iterable(map(trainer.train_batches, itertools.count()))  # epoch after epoch
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
    tokens, seconds, probe_during, peak = probed_slices(slices, args.slice_probe_seconds, trainer.device,
                                                        _probe_sizes(args))
    rate = sum(tokens) / seconds
    trainer.model.set_precision("fp32")  # compare precisions on the same fp32 validation
    valid = trainer.run_validation("valid")
    return {"tokens_per_s": rate, "gflops": 6 * sum(macs.values()) * rate / 1e9, "steps": args.steps,
            "seconds": seconds, "probe_gflops_during": probe_during, "work_peak_mb": peak,
            "valid_loss_after_steps": valid["loss"], "epoch_seconds_est": trainer.corpus.tokens("train") / rate,
            "macs_per_token": macs}


def case_iwnll(args, decoder: str, precision: str, workers: int = 1) -> dict:
    from dataclasses import replace

    import torch

    from textsvae.evaluation.scoring import score_sentences

    trainer, cfg = _trainer(args, decoder, precision)
    cfg = replace(cfg, eval=replace(cfg.eval, workers=workers))
    macs = macs_per_target(cfg.model, len(trainer.corpus.vocab))
    sentences = trainer.corpus.splits["test"][: args.eval_sentences]
    trainer.model.eval()

    def score(keys: list[int]):
        """The IW-NLL of these test sentences, each drawing its samples by its place in the split as in one call."""
        return score_sentences(trainer.model, trainer.method, [sentences[i] for i in keys], cfg.eval,
                               trainer.device, iw_samples=args.k, keys=keys).iw_nll

    score(list(range(min(8, len(sentences)))))
    groups = _split(list(range(len(sentences))), args.slices)
    results, seconds, probe_during, peak = probed_slices([lambda g=g: score(g) for g in groups],
                                                         args.slice_probe_seconds, trainer.device, _probe_sizes(args))
    iw_nll = float(torch.cat(results).mean())
    targets = sum(len(s) + 1 for s in sentences)
    n_test = len(trainer.corpus.splits["test"])
    return {"k": args.k, "sentences": len(sentences), "seconds": seconds, "sentences_per_s": len(sentences) / seconds,
            "full_test_seconds_est": seconds * n_test / len(sentences), "test_sentences": n_test,
            "gflops": 2 * (macs["decoder"] + macs["output"]) * targets * args.k / seconds / 1e9,
            "iw_nll": iw_nll, "workers": workers, "probe_gflops_during": probe_during, "work_peak_mb": peak,
            "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if workers > 1 else None}


def case_iwpack(args, decoder: str, precision: str) -> dict:
    """IW-NLL scored by --threads forked processes of one thread each (`eval.workers`)."""
    return case_iwnll(args, decoder, precision, workers=args.threads)


def case_miau(args, decoder: str, precision: str) -> dict:
    """MI and AU over the whole test split: encode every sentence, then the split-level metrics."""
    import torch

    from textsvae.data.batching import iterate_batches
    from textsvae.evaluation.scoring import latent_metrics

    trainer, cfg = _trainer(args, decoder, precision)
    sentences = trainer.corpus.splits["test"]
    trainer.model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        params = [trainer.model.encode(b.to(trainer.device)) for b in iterate_batches(sentences, cfg.eval.eval_batch_size)]
    mu = torch.cat([p[0] for p in params]).double()
    logvar = torch.cat([p[1] for p in params]).double()
    sync(trainer.device)
    encoded = time.perf_counter()
    result = latent_metrics(mu, logvar, cfg.eval, trainer.device)
    sync(trainer.device)
    done = time.perf_counter()
    return {"sentences": len(sentences), "encode_seconds": encoded - start, "mi_au_seconds": done - encoded,
            "seconds": done - start, "mi": result["mi"], "au": result["au"]}


def case_reseed(args, decoder: str, precision: str) -> dict:
    return case_train(args, decoder, "fp32", dropout_seed=1)


CASES = {"matmul": case_matmul, "train": case_train, "reseed": case_reseed, "iwnll": case_iwnll,
         "iwpack": case_iwpack, "miau": case_miau}


def run_child(args) -> None:
    from textsvae.core.config import ConfigError
    from textsvae.core.rundir import RunError
    from textsvae.data.corpus import CorpusError
    from textsvae.kernels.device import DeviceError

    try:
        _run_case(args)
    except (ConfigError, CorpusError, RunError, DeviceError) as exc:  # a bad --data, --preset, --decoders or precision: one line
        print(f"perf.py: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _probe_sizes(args) -> tuple[int, ...]:
    import torch

    return tuple(args.probe_sizes) if args.probe_sizes else PROBE_SIZES[torch.device(args.device).type]


def _run_case(args) -> None:
    import torch

    from textsvae.kernels.device import resolve_device

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)  # on CUDA: fp32 LSTMs in IEEE fp32, as in training
    fn = CASES[args.case]
    if args.case == "matmul":
        row = fn(args)
    else:
        before = matmul_rate(torch.float32, _probe_sizes(args), device=device)
        _reset_peak(device)
        row = fn(args, args.decoder, args.precision)
        peak = max(_peak_mb(device), row.pop("work_peak_mb", 0.0))
        row["peak_gpu_mb" if device.type == "cuda" else "peak_rss_mb"] = peak
        row["probe_gflops"] = [before, matmul_rate(torch.float32, _probe_sizes(args), device=device)]
    row.setdefault("peak_rss_mb", _peak_rss_mb())
    row.update({"case": args.case, "decoder": args.decoder, "precision": args.precision, "threads": args.threads,
                "preset": args.preset, "device": device.type, "torch": torch.__version__})
    print("ROW " + json.dumps(row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ptb")
    p.add_argument("--data", default="ptb", help="a corpus folder or an installed corpus name")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--decoders", default="standard,skip")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--cases", default=None, help=f"default: {DEFAULT_CASES} (on CUDA without "
                   f"{' and '.join(sorted(CPU_ONLY_CASES))})")
    p.add_argument("--steps", type=int, default=60, help="timed training steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--k", type=int, default=500, help="IW samples")
    p.add_argument("--eval-sentences", type=int, default=200, help="test sentences timed for IW-NLL")
    p.add_argument("--probe-seconds", type=float, default=5.0)
    p.add_argument("--slices", type=int, default=5, help="timed training and IW-NLL cases run in this many slices, "
                   "a short matmul probe after each")
    p.add_argument("--slice-probe-seconds", type=float, default=0.5)
    p.add_argument("--probe-sizes", type=int, nargs="+", default=None,
                   help="square matmul sizes of the probes, the matmul case's too (default: the case's "
                   "1024 2048 4096 and each case's 2048 4096 on the CPU; 4096 8192 and 8192 on CUDA)")
    p.add_argument("--out", default=None, help="write the JSON rows here")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--decoder", default="", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.slices < 1 or args.slice_probe_seconds <= 0:
        p.error("--slices must be >= 1 and --slice-probe-seconds > 0")
    if args.probe_sizes and min(args.probe_sizes) < 1:
        p.error("--probe-sizes must be >= 1")
    on_cpu = _device_type(p, args.device) == "cpu"
    if args.cases is None:
        args.cases = ",".join(c for c in DEFAULT_CASES.split(",") if on_cpu or c not in CPU_ONLY_CASES)
    if not on_cpu and CPU_ONLY_CASES & set(args.cases.split(",")):
        p.error(f"the cases {' and '.join(sorted(CPU_ONLY_CASES))} run CPU processes side by side; "
                f"leave them out with --device {args.device}")
    unknown = set(args.cases.split(",")) - set(CASES) - {"pack"}
    if unknown:
        p.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(set(CASES) | {'pack'}))}")
    if set(args.precisions.split(",")) - {"fp32", "bf16"}:
        p.error(f"--precisions takes fp32 and bf16, got '{args.precisions}'")
    if args.case:
        return run_child(args)
    try:
        from textsvae.kernels.device import DeviceError, resolve_device

        resolve_device(args.device)
    except DeviceError as exc:
        p.error(str(exc))
    rows = []
    plan = []
    for case in args.cases.split(","):
        if case == "matmul":
            plan.append(("matmul", "", ""))
            continue
        for decoder in args.decoders.split(","):
            for precision in (args.precisions.split(",") if case not in ("miau", "reseed", "iwpack") else ["fp32"]):
                plan.append((case, decoder, precision))
    base = [sys.executable, __file__, "--preset", args.preset, "--data", args.data, "--threads", str(args.threads),
            "--precisions", args.precisions,
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--k", str(args.k),
            "--eval-sentences", str(args.eval_sentences), "--probe-seconds", str(args.probe_seconds),
            "--slices", str(args.slices), "--slice-probe-seconds", str(args.slice_probe_seconds),
            "--device", args.device, "--cases", args.cases]
    if args.probe_sizes:
        base += ["--probe-sizes", *map(str, args.probe_sizes)]
    for case, decoder, precision in plan:
        print(f"... {case} {decoder} {precision}", file=sys.stderr, flush=True)
        if case == "pack":  # --threads training processes side by side, 1 thread each: the bench's packing
            rows.append(run_packed(base, decoder, precision, args.threads))
        else:
            rows.append(_child_row(base + ["--case", case, "--decoder", decoder, "--precision", precision]))
        if args.out:  # after every case, so a later failure keeps the rows already measured
            atomic_write_text(args.out, json.dumps(rows, indent=2) + "\n")
    print_table(rows)


def _device_type(p: argparse.ArgumentParser, name: str) -> str:
    import torch

    try:
        kind = torch.device(name).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda[:N], got '{name}'")
    return kind


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


def run_packed(base: list[str], decoder: str, precision: str, jobs: int) -> dict:
    """`jobs` single-thread training processes at once (as `bench --jobs N` runs them): summed tokens/s."""
    command = list(base)
    command[command.index("--threads") + 1] = "1"
    command += ["--case", "train", "--decoder", decoder, "--precision", precision]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(jobs)]
    outputs = [p.communicate() for p in procs]
    rows = [_parse_child(p.returncode, out, err, command) for p, (out, err) in zip(procs, outputs)]
    return {"case": "pack", "decoder": decoder, "precision": precision, "threads": 1, "jobs": jobs,
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
        where = (f"{probe['gpu']}, fp32 without TF32" if "gpu" in probe else
                 f"{probe['threads']} threads, ATen CPU capability {probe.get('cpu_capability', '?')}")
        print(f"matmul probe ({where}): fp32 {ref['float32']:.1f} GFLOP/s{bf16}")
    train = {(r["decoder"], r["precision"]): r for r in rows if r["case"] == "train"}
    fp32_train = {decoder: r for (decoder, precision), r in train.items() if precision == "fp32"}
    fp32_iw = {r["decoder"]: r for r in rows if r["case"] == "iwnll" and r["precision"] == "fp32"}

    def of_probe(r: dict) -> str:
        """GFLOP/s as a fraction of the row's own fp32 probe (the faster of before/after), else the run's."""
        own = max(r.get("probe_gflops") or [0.0])
        base = own or ref.get("float32")
        return f"{r['gflops'] / base:.0%} of {base:.0f}" if base and "gflops" in r else "-"

    def peak(r: dict) -> str:
        """The GPU's peak allocated MB on CUDA, else the process's peak resident set."""
        return f"{r['peak_gpu_mb']:.0f} GPU" if "peak_gpu_mb" in r else f"{r['peak_rss_mb']:.0f}"

    def of_bf16(r: dict) -> str:
        """For a bf16 row: its GFLOP/s as a fraction of the run's bf16 matmul probe."""
        if r["precision"] != "bf16" or "bfloat16" not in ref:
            return ""
        return f"; {r['gflops'] / ref['bfloat16']:.0%} of the bf16 matmul"

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
                  f"{of_probe(r)} | {of_during(r)} | {peak(r)} | epoch ~{r['epoch_seconds_est']:.0f} s; x{speedup:.2f} of fp32 "
                  f"(x{adjusted:.2f} against the probes); "
                  f"valid loss after {r['steps']} steps {r['valid_loss_after_steps']:.3f}{drift(r)}{of_bf16(r)} |")
        elif r["case"] == "reseed":
            print(f"| train, other dropout draws | {r['decoder']} | fp32 | {r['tokens_per_s']:.0f} tok/s | "
                  f"{r['gflops']:.1f} | {of_probe(r)} | {of_during(r)} | {peak(r)} | the fp32 yardstick: valid loss after "
                  f"{r['steps']} steps {r['valid_loss_after_steps']:.3f}{drift(r)} |")
        elif r["case"] == "pack":
            one = train.get((r["decoder"], r["precision"]))
            single = one["tokens_per_s"] if one else float("nan")
            print(f"| train, {r['jobs']} processes x 1 thread | {r['decoder']} | {r['precision']} | {r['tokens_per_s']:.0f} tok/s "
                  f"(sum) | {r['gflops']:.1f} | {of_probe(r)} | {of_during(r)} | {r['peak_rss_mb']:.0f} each | x{r['tokens_per_s'] / single:.2f} "
                  f"of one process with all threads |")
        elif r["case"] == "iwnll":
            base = fp32_iw.get(r["decoder"])
            speedup = r["sentences_per_s"] / base["sentences_per_s"] if base else float("nan")
            print(f"| IW-NLL K={r['k']} | {r['decoder']} | {r['precision']} | {r['sentences_per_s']:.2f} sent/s | "
                  f"{r['gflops']:.1f} | {of_probe(r)} | {of_during(r)} | {peak(r)} | whole test split ~{r['full_test_seconds_est'] / 60:.1f} min; "
                  f"x{speedup:.2f} of fp32; "
                  f"iw_nll {r['iw_nll']:.3f} on {r['sentences']} sentences{of_bf16(r)} |")
        elif r["case"] == "iwpack":
            base = fp32_iw.get(r["decoder"])
            speedup = r["sentences_per_s"] / base["sentences_per_s"] if base else float("nan")
            same = f"; iw_nll {r['iw_nll']:.3f}" + (f" (one process: {base['iw_nll']:.3f})" if base else "")
            print(f"| IW-NLL K={r['k']}, {r['workers']} processes x 1 thread | {r['decoder']} | fp32 | "
                  f"{r['sentences_per_s']:.2f} sent/s | {r['gflops']:.1f} | {of_probe(r)} | {of_during(r)} | "
                  f"{r['worker_peak_rss_mb'] or r['peak_rss_mb']:.0f} each | whole test split ~{r['full_test_seconds_est'] / 60:.1f} min; "
                  f"x{speedup:.2f} of one process with all threads{same} |")
        else:
            print(f"| encode + MI + AU | {r['decoder']} | {r['precision']} | {r['seconds']:.2f} s | - | - | - | "
                  f"{peak(r)} | {r['sentences']} sentences; encode {r['encode_seconds']:.2f} s, "
                  f"MI+AU {r['mi_au_seconds']:.2f} s |")


if __name__ == "__main__":
    main()
