"""The helpers the performance scripts in this folder share: the device synchronize, the square-matmul
probe, interleaved best-of timing, the multiply-adds per target token, and the preset's trainer.

Each script imports it as a sibling (`from timing import ...`): running `python benchmarks/perf/X.py`
puts this folder on sys.path. torch and textsvae are imported inside the functions, so a script's
--help starts without them.
"""
from __future__ import annotations

import time


def sync(device) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously); nothing to wait for on the CPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(dtype, sizes=(1024, 2048, 4096), seconds: float = 1.0, device=None) -> float:
    """The best GFLOP/s of square matmuls of these sizes (the most favourable: ratios to it are conservative).

    Each n x n product counts 2 n^3 FLOPs. On a GPU the products are queued 10 at a time and the
    clock read after each synchronize.
    """
    import torch

    device = device or torch.device("cpu")
    group = 10 if device.type == "cuda" else 1
    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
        a @ b
        sync(device)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(group):
                a @ b
            sync(device)
            reps += group
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9)
    return best


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


def macs_per_target(model_cfg, vocab_size: int) -> dict[str, float]:
    """Multiply-adds per target token of each part at this model config.

    encoder LSTM 4 He (E + He) (none for the LM); decoder LSTM layers 4 H (E + nz + H), then
    4 H (H [+ nz] + H) each above the first; output layer (H [+ nz]) x V, where [+ nz] is the skip
    decoder's z fed to every layer above the first and to the output layer.
    """
    from textsvae.core.decoders import decoder_kind

    m, kind = model_cfg, decoder_kind(model_cfg.decoder)
    nz = m.latent_dim if kind.uses_z else 0
    skip_nz = nz if kind.skip else 0
    enc = 4 * m.enc_hidden * (m.emb_dim + m.enc_hidden) if kind.uses_z else 0
    dec = 4 * m.dec_hidden * (m.emb_dim + nz + m.dec_hidden)
    dec += (m.dec_layers - 1) * 4 * m.dec_hidden * (m.dec_hidden + skip_nz + m.dec_hidden)
    out = (m.dec_hidden + skip_nz) * vocab_size
    return {"encoder": enc, "decoder": dec, "output": out}


def preset_trainer(preset: str, data: str, threads: int, decoder: str, precision: str, device: str = "cpu"):
    """(Trainer, config) at the preset, seed 0, no run folder: the set-up of every perf case.

    Raises textsvae's ConfigError or CorpusError for a bad preset, data folder or precision.
    """
    from textsvae.core.config import apply_overrides, preset_config
    from textsvae.training.train import Trainer

    cfg = apply_overrides(preset_config(preset), {
        "data": data, "decoder": decoder, "precision": precision, "eval_precision": precision,
        "progress": False, "threads": threads, "seed": 0, "device": device})
    return Trainer(cfg, "/nonexistent-perf-run"), cfg


def cpu_trainer(script: str, preset: str, data: str, threads: int, decoder: str, precision: str = "fp32"):
    """preset_trainer on the CPU; a bad preset, data folder or precision stops with one line `script: error: ...`."""
    from textsvae.core.config import ConfigError
    from textsvae.data.corpus import CorpusError
    from textsvae.kernels.device import DeviceError

    try:
        return preset_trainer(preset, data, threads, decoder, precision)
    except (ConfigError, CorpusError, DeviceError) as exc:
        raise SystemExit(f"{script}: error: {exc}") from None
