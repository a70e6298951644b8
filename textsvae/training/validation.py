"""Validation during training, always at beta = 1: Rec, KL, loss = Rec + KL, the ELBO perplexity
bound, and MI and AU on a fixed subset of `monitor_size` sentences so collapse is visible per epoch.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..core.config import RunConfig
from ..core.io import append_jsonl
from ..data.batching import iterate_batches
from ..kernels.metrics import active_units, gaussian_kl, mutual_information

if TYPE_CHECKING:
    from ..methods import Method
    from ..model.models import TextVAE


def validation_metrics(model: "TextVAE", method: "Method", sentences: list[list[int]], config: RunConfig,
             device: torch.device) -> dict[str, float]:
    """Per-sentence means over the split; a fixed seed makes the one-sample Rec repeatable.

    The sums stay on the device until the last batch (one host read, not two per batch on a GPU).
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(config.eval.eval_seed)
    rec_total = torch.zeros((), dtype=torch.float64, device=device)
    kl_total = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    monitor = min(config.train.monitor_size, len(sentences))
    mus, logvars, rows = [], [], []
    with torch.no_grad():
        for batch in iterate_batches(sentences, config.eval.eval_batch_size):
            batch = batch.to(device)
            tokens += batch.n_targets
            if model.is_lm:
                rec_total += (-model.log_px_given_z(batch, None).sum()).double()
                continue
            mu, logvar = method.posterior(model, batch)
            z = model.sample(mu, logvar, generator=gen)
            rec_total += (-model.log_px_given_z(batch, z).sum()).double()
            kl_total += gaussian_kl(mu, logvar).sum().double()
            mus.append(mu)
            logvars.append(logvar)
            rows.append(batch.index)
    model.train(was_training)
    n = len(sentences)
    rec_sum, kl_sum = float(rec_total), float(kl_total)
    out = {"rec": rec_sum / n, "kl": kl_sum / n, "loss": (rec_sum + kl_sum) / n,
           "elbo": -(rec_sum + kl_sum) / n, "ppl_bound": _exp((rec_sum + kl_sum) / tokens)}
    if not model.is_lm and monitor >= 2:  # MI and AU need two sentences (a variance over the subset)
        index = torch.cat(rows)
        keep = index < monitor  # the monitor subset: the split's first `monitor` sentences
        order = torch.argsort(index[keep])  # split order, as in evaluation: MI does not depend on batching
        mu, logvar = torch.cat(mus)[keep][order].double(), torch.cat(logvars)[keep][order].double()
        mi_gen = torch.Generator(device=device).manual_seed(config.eval.eval_seed + 1)
        out["mi"] = mutual_information(mu, logvar, generator=mi_gen)
        out["au"], _ = active_units(mu, config.eval.au_threshold)
        out["monitor_size"] = monitor
    return out


def _exp(x: float) -> float:
    """exp(x), inf instead of OverflowError for a diverged model's perplexity."""
    return math.exp(x) if x < 709.0 else math.inf


def monitor(trainer, beta: float) -> None:
    """Rec, KL, MI and AU on the monitor subset of valid (the first `monitor_size` sentences) at the current
    step, appended to monitor.jsonl and the trackers: collapse as it happens. The training RNG is untouched."""
    subset = trainer.corpus.splits["valid"][: trainer.config.train.monitor_size]
    devices = [trainer.device.index or 0] if trainer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # leaves the training RNG (and so resume) untouched
        valid = validation_metrics(trainer.model, trainer.method, subset, trainer.config, trainer.device)
    s = trainer.state
    row = {"step": s.step, "epoch": s.step / trainer.steps_per_epoch, "beta": beta,
           **{f"valid_{k}": v for k, v in valid.items()}}
    append_jsonl(trainer.run_dir / "monitor.jsonl", row)
    if trainer.tracking is not None:
        trainer.tracking.log_row("monitor", row, s.step, prefix="monitor/")
