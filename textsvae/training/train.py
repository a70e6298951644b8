"""The one training loop: epochs of method steps, validation at beta = 1, the full state checkpointed each
epoch and on Ctrl-C, exact resume.

Its side jobs have their own modules: what happens after each validation (best model, LR rule, stop) is
`lr_rules`', last.pt `checkpoint`'s, the loop state and RNGs `run_state`'s, stop signals
`stop_signals`', the run folder's files `rundir`'s, the device and precision checks `device`'s.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..core.config import EXECUTION_FIELDS, RunConfig, apply_overrides
from ..core.io import append_jsonl, remove_partial_writes
from ..data.batching import bucket_batches, make_batch
from ..data.corpus import Corpus, load_corpus
from ..data.vocab import load_vocab
from ..kernels.device import check_training_precisions, resolve_device
from ..kernels.optim import clip_grad_norm, sparse_embeddings
from ..methods import Method, build_method
from ..model.models import TextVAE, count_parameters
from .lr_rules import LR_RULES, end_of_epoch
from ..core.rundir import (RunError, load_checkpoint, prepare_new_run, read_run_config, refuse_existing_run,
                     truncate_log, write_config, write_state, write_summary)
from ..trackers import RunTracking, parse_track
from . import checkpoint
from .run_state import EpochTotals, TrainState, seed_everything
from .stop_signals import Preempted, StopRequest, stop_signals
from .validation import monitor, validation_metrics

log = logging.getLogger(__name__)

class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


__all__ = ["Preempted", "TrainState", "Trainer", "TrainingDiverged", "epoch_order", "resume_run", "train_run",
           "LR_RULES"]


def epoch_order(n_lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a pure function of (seed, epoch), so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return bucket_batches(n_lengths, batch_size, g)


class Trainer:
    """Holds the model, method, optimiser and state of one run; `fit()` runs the loop."""

    def __init__(self, config: RunConfig, run_dir: str | Path, corpus: Corpus | None = None,
                 method: Method | None = None, vocab=None):
        self.config = config
        self.run_dir = Path(run_dir)
        t = config.train
        parse_track(t.track)   # an unknown tracker or a missing extra fails before any work
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        check_training_precisions(self.device, t.precision, config.eval.eval_precision)
        seed_everything(t.seed)
        self.corpus = corpus or load_corpus(config.data, vocab=vocab, seed=t.seed)
        self._lengths = [len(s) for s in self.corpus.splits["train"]]
        self.steps_per_epoch = math.ceil(len(self._lengths) / t.batch_size)
        self.method = method or build_method(t.method, t.method_params)
        self.model = TextVAE(len(self.corpus.vocab), config.model).to(self.device)
        self.model.set_precision(t.precision)
        sparse_embeddings(self.model, t.optimizer, t.momentum)
        self.method.setup(self)
        self.model.to(self.device)
        self.state = TrainState(lr=t.lr)
        self.optimizer = self.make_optimizer(self.model.parameters(), t.lr)
        self.tracking: RunTracking | None = None   # opened by fit()

    # -- pieces that methods use -------------------------------------------------------
    def make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        t = self.config.train
        if t.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=t.momentum)
        return torch.optim.Adam(params, lr=lr)

    def clip_and_step(self, optimizer: torch.optim.Optimizer, params=None) -> None:
        if self.config.train.clip_grad > 0:
            params = params if params is not None else self.model.parameters()
            clip_grad_norm(params, self.config.train.clip_grad)
        optimizer.step()

    def train_batches(self, epoch: int):
        """Batches of one epoch, on the device."""
        for index in epoch_order(self._lengths, self.config.train.batch_size, self.config.train.seed, epoch):
            yield make_batch(self.corpus.splits["train"], index).to(self.device)

    def random_train_batch(self, generator: torch.Generator):
        """A uniformly drawn training batch (aggressive training's fresh minibatches)."""
        n = len(self.corpus.splits["train"])
        index = torch.randint(n, (self.config.train.batch_size,), generator=generator).tolist()
        return make_batch(self.corpus.splits["train"], index).to(self.device)

    def run_validation(self, split: str = "valid") -> dict[str, float]:
        return validation_metrics(self.model, self.method, self.corpus.splits[split], self.config, self.device)

    # -- run folder ------------------------------------------------------------------
    def prepare_run_dir(self, force: bool) -> None:
        prepare_new_run(self.run_dir, force)
        write_config(self.run_dir, self.config)
        self.corpus.vocab.save(self.run_dir)
        self._write_state("running")

    def _write_state(self, status: str, message: str = "") -> None:
        write_state(self.run_dir, status, self.state.epoch, self.state.step, message)

    def save_checkpoint(self) -> None:
        """last.pt (checkpoint.save_last)."""
        checkpoint.save_last(self)

    def load_full_checkpoint(self, path: Path) -> None:
        """Continue from a last.pt (checkpoint.restore)."""
        checkpoint.restore(self, path)

    # -- the loop --------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        self._write_state("running")
        log.info("model: %s decoder, %d parameters, %d train sentences, %d steps/epoch, device %s",
                 self.config.model.decoder, count_parameters(self.model), len(self._lengths),
                 self.steps_per_epoch, self.device)
        self.tracking = RunTracking(self.config, self.run_dir)
        status = "failed"
        with stop_signals() as stop:
            try:
                while not self.state.done:
                    self._run_epoch(stop)
                    if stop.requested and not self.state.done:
                        self._stop_after_step(stop)
                status = "finished"
            except TrainingDiverged as exc:
                self._write_state("failed", str(exc))
                raise
            except KeyboardInterrupt:
                status = "interrupted"
                if not stop.saved:  # a second Ctrl-C (or one outside the handler)
                    self._write_state("interrupted", "stopped at once by Ctrl-C; last.pt is the last complete checkpoint")
                raise
            finally:
                self.tracking.close(status)
        return self._finish()

    def _stop_after_step(self, stop: StopRequest) -> None:
        """Save last.pt, mark the run interrupted and stop: KeyboardInterrupt for Ctrl-C, Preempted otherwise."""
        self.save_checkpoint()
        message = f"stopped by {stop.by} at step {self.state.step}"
        self._write_state("interrupted", message)
        stop.saved = True
        if stop.by == "Ctrl-C":
            raise KeyboardInterrupt
        raise Preempted(f"{message}; last.pt is saved and resumes it")

    def _finish(self) -> dict[str, Any]:
        summary = write_summary(self.run_dir, self.state, self.device)
        self._write_state("finished", self.state.stop_reason)
        return summary

    def _run_epoch(self, stop: StopRequest) -> None:
        t, s = self.config.train, self.state
        epoch = s.epoch
        self.model.train()
        totals = EpochTotals(self.device, s.partial if s.batch_in_epoch else None)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)  # 1-based step of the first NaN/inf
        start = time.perf_counter()
        desc = f"epoch {epoch + 1 - s.phase_start}/{t.epochs}" + (f" of phase 2 (run epoch {epoch + 1})"
                                                                 if s.phase_start else "")
        with _progress(self.steps_per_epoch, desc, t.progress, initial=s.batch_in_epoch) as bar:  # closed on errors too
            for i, batch in enumerate(self.train_batches(epoch)):
                if i < s.batch_in_epoch:
                    continue
                beta = self.method.beta(s.step, epoch, self.steps_per_epoch)
                out = self.method.train_step(self, batch, beta)
                # no host sync here: remember the first non-finite step on the device
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(out.loss.detach()), s.step + 1, first_bad)
                totals.add(out, len(batch), batch.n_targets, beta)
                s.step += 1
                s.batch_in_epoch = i + 1
                if t.monitor_every and s.step % t.monitor_every == 0:
                    monitor(self, beta)
                if s.step % 50 == 0 or i + 1 == self.steps_per_epoch:  # one host sync every 50 steps
                    self._check_finite(first_bad, epoch)
                    bar.set_postfix(loss=f"{totals.mean('loss'):.2f}", kl=f"{totals.mean('kl'):.2f}", beta=f"{beta:.2f}")
                bar.update(1)
                if stop.requested or (t.max_steps is not None and s.step >= t.max_steps):
                    break
        self._check_finite(first_bad, epoch)
        seconds = time.perf_counter() - start
        s.train_seconds += seconds
        totals.counts["seconds"] += seconds        # the whole epoch's, across a stop mid-epoch
        if stop.requested and s.batch_in_epoch < self.steps_per_epoch:
            s.partial = totals.partial()
            return
        s.partial = {}
        s.batch_in_epoch = 0
        s.epoch += 1
        valid = self.run_validation("valid")
        if not math.isfinite(valid["loss"]):
            raise TrainingDiverged(f"validation loss became {valid['loss']} after epoch {s.epoch} (step {s.step}); "
                                   f"the last good checkpoint is kept")
        counts = totals.counts
        row = {"epoch": s.epoch, "step": s.step, "lr": s.lr, "beta": counts["beta"],
               "train_loss": totals.mean("loss"), "train_rec": totals.mean("rec"),
               "train_kl": totals.mean("kl"), "train_sentences": counts["sentences"],
               "tokens_per_s": counts["tokens"] / max(counts["seconds"], 1e-9), "seconds": counts["seconds"],
               **{f"valid_{k}": v for k, v in valid.items()}}
        end_of_epoch(self, self.method.selection_loss(valid))  # first: best.pt holds the validated model
        self.method.end_epoch(self, valid)
        row.update({f"method_{k}": v for k, v in self.method.state_dict().items()
                    if isinstance(v, (int, float, bool, str))})
        append_jsonl(self.run_dir / "log.jsonl", row)
        log.info("epoch %d: train loss %.3f | valid loss %.3f rec %.3f kl %.3f mi %s au %s ppl %.1f | %.0f tok/s",
                 s.epoch, row["train_loss"], valid["loss"], valid["rec"], valid["kl"],
                 _fmt(valid.get("mi")), valid.get("au", "-"), valid["ppl_bound"], row["tokens_per_s"])
        self.save_checkpoint()
        if self.tracking is not None:   # after last.pt: a resumed run never redoes a step its trackers have
            self.tracking.log_row("epoch", row, s.step)

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        step = int(first_bad)  # the host sync
        if step >= 0:
            raise TrainingDiverged(f"loss became NaN or infinite at step {step} (epoch {epoch + 1}); "
                                   f"the last good checkpoint is kept")

    def restart_model_selection(self) -> None:
        """Forget the best model so far and the plateau count: for a method that changes the model or
        objective mid-run (pretrain-fb's decoder reset), whose later epochs compete only with each other."""
        s = self.state
        s.best_loss, s.best_epoch, s.bad_epochs, s.plateau_loss = math.inf, -1, 0, math.inf

    def reload_best(self) -> None:
        """Load best.pt's weights into the model (the model the LR rule would have reloaded)."""
        self.model.load_state_dict(load_checkpoint(self.run_dir / "best.pt")["model"])

    def restart_phase(self) -> None:
        """Go on as a new run from the current model: the initial LR with no halvings, a fresh optimiser,
        no best model or plateau, and the epoch budget and decay start counted from now (pretrain-fb's
        second run, after its autoencoder run has ended)."""
        s, t = self.state, self.config.train
        s.phase_start, s.lr, s.decays, s.done, s.stop_reason = s.epoch, t.lr, 0, False, ""
        self.restart_model_selection()
        self.optimizer = self.make_optimizer(self.model.parameters(), s.lr)


def _progress(total: int, desc: str, enabled: bool, initial: int = 0):
    """An epoch's progress over its batches (`progress`: a bar on a terminal, else plain lines)."""
    from ..core.progress import progress

    return progress(total, desc, initial=initial, enabled=enabled, unit="batches")


def _with_execution(config: RunConfig, execution: dict[str, Any]) -> RunConfig:
    allowed = {name for names in EXECUTION_FIELDS.values() for name in names}
    other = sorted(set(execution) - allowed)
    if other:
        raise RunError(f"a resumed run keeps its config; only {', '.join(sorted(allowed))} can change, "
                       f"not {', '.join(other)}")
    return apply_overrides(config, execution)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def train_run(config: RunConfig, run_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Start a new run in run_dir (refused if it already holds one, unless force)."""
    run_dir = Path(run_dir)
    refuse_existing_run(run_dir, force)  # before any work
    trainer = Trainer(config, run_dir)
    trainer.prepare_run_dir(force)
    return trainer.fit()


def resume_run(run_dir: str | Path, execution: dict[str, Any] | None = None) -> dict[str, Any]:
    """Continue an interrupted run from its last.pt, exactly where it stopped. `execution` changes how it
    runs from now on (threads, device, progress, track, ...: config.EXECUTION_FIELDS), saved in config.json."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if execution:
        config = _with_execution(config, execution)
        write_config(run_dir, config)
    try:
        vocab = load_vocab(run_dir)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise RunError(f"{run_dir} has no readable tokenizer (vocab.json / spm.model): {type(exc).__name__}") from None
    remove_partial_writes(run_dir)  # left by a process killed mid-write
    trainer = Trainer(config, run_dir, vocab=vocab)
    if (run_dir / "last.pt").exists():
        trainer.load_full_checkpoint(run_dir / "last.pt")
        if trainer.state.done:
            log.info("%s is already finished (%s)", run_dir, trainer.state.stop_reason)
            return trainer._finish()
    truncate_log(run_dir, trainer.state.epoch)
    truncate_log(run_dir, trainer.state.step, name="monitor.jsonl", key="step")
    return trainer.fit()
