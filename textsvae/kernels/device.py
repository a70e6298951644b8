"""The device a run computes on and the precisions its CPU can run: resolved and checked before any work."""
from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """An unknown or unavailable device, or a precision this machine cannot run (one line for the user)."""


def resolve_device(name: str) -> torch.device:
    """'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N', ...; a CUDA device gets IEEE fp32 LSTMs."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(f"unknown device '{name}' ({str(exc).splitlines()[0]})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device '{name}' requested but CUDA is not available")
    if device.type == "cuda":
        exact_fp32_lstms()
    return device


def exact_fp32_lstms() -> None:
    """Make cuDNN's fp32 LSTMs compute in IEEE fp32. torch's default lets them use TF32 tensor cores
    (10-bit mantissas), so "fp32" on a GPU would not be the CPU's fp32; bf16 autocast is the fast opt-in."""
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if rnn is not None and hasattr(rnn, "fp32_precision"):   # torch >= 2.9
        rnn.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False


def warn_if_bf16_is_emulated() -> None:
    """An x86 CPU without AVX-512 (ATen capability "AVX2") has no bf16 matmul kernels, so bf16 autocast
    there runs emulated matmuls (`benchmarks/perf/kernels.py` measures them against fp32)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX2":
        log.warning("bf16 autocast on a CPU without AVX-512 (ATen capability %s): bf16 matmuls are emulated "
                    "and much slower than fp32 here; use precision=fp32", capability)


@functools.lru_cache(maxsize=None)
def cpu_lstm_runs_in(precision: str) -> bool:
    """Whether this CPU's LSTM kernels (oneDNN) run forward and backward under `precision` autocast
    (AVX2-only CPUs have no bf16 or fp16 LSTM: "could not create a primitive descriptor")."""
    if precision == "fp32":
        return True
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with torch.random.fork_rng(devices=[]):      # the probe's weights draw nothing from the run's seed
        lstm = torch.nn.LSTM(4, 4, batch_first=True)
        try:
            with torch.autocast("cpu", dtype=dtype):
                out, _ = lstm(torch.zeros(1, 2, 4))
            out.float().sum().backward()
        except RuntimeError:
            return False
    return True


def check_cpu_precision(field_name: str, precision: str) -> None:
    """A one-line DeviceError where this CPU's LSTM kernels cannot run in the asked-for autocast precision."""
    if not cpu_lstm_runs_in(precision):
        raise DeviceError(f"{field_name}={precision} cannot run on this CPU: its LSTM kernels have no {precision} "
                          f"version (ATen CPU capability {torch.backends.cpu.get_cpu_capability()}); "
                          f"use {field_name}=fp32")


def check_training_precisions(device: torch.device, precision: str, eval_precision: str) -> None:
    """Before any work: refuse precisions this CPU cannot run, warn where bf16 would be emulated."""
    if device.type != "cpu":
        return
    check_cpu_precision("precision", precision)
    check_cpu_precision("eval_precision", eval_precision)
    if "bf16" in (precision, eval_precision):
        warn_if_bf16_is_emulated()
