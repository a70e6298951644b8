"""The one training loop: epochs of method steps, validation at beta = 1, the LR rules of the peers' code
(LR_RULES), the full state checkpointed each epoch and on Ctrl-C, exact resume.

The run folder's files are `rundir`'s; the device and precision checks are `device`'s.
"""
from __future__ import annotations

import logging
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .version import __version__
from .config import EXECUTION_FIELDS, RunConfig, apply_overrides
from .data.batching import bucket_batches, make_batch
from .data.corpus import Corpus, load_corpus
from .data.vocab import load_vocab
from .device import check_training_precisions, resolve_device
from .io import append_jsonl, atomic_write_json, read_jsonl, remove_partial_writes
from .methods import Method, build_method
from .models import TextVAE, count_parameters
from .optim import clip_grad_norm, sparse_embeddings
from .rundir import (RunError, check_checkpoint, load_checkpoint, prepare_new_run, read_run_config,
                     refuse_existing_run, save_checkpoint, truncate_log, write_state)
from .trackers import RunTracking, parse_track
from .validation import validation_metrics

log = logging.getLogger(__name__)

class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Preempted(KeyboardInterrupt):
    """SIGTERM, SIGUSR1 or SIGUSR2 (a scheduler's pre-emption or time-limit warning) stopped the run after
    a step, with last.pt saved and state.json 'interrupted': `resume_run` continues it exactly. Not an
    error (a KeyboardInterrupt, so no `except Exception` marks the run failed)."""


# fit's handler: a first one stops after the current step and saves last.pt; a second Ctrl-C stops at once
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
                     if hasattr(signal, name))


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    epoch: int = 0                 # epochs completed
    step: int = 0                  # optimiser steps taken
    batch_in_epoch: int = 0        # batches of the current epoch already done (Ctrl-C mid-epoch)
    lr: float = 0.0
    decays: int = 0                # LR halvings so far (skip-vae: > 0 once it halves every epoch)
    bad_epochs: int = 0            # worse epochs in a row (validation loss above plateau_loss)
    plateau_loss: float = math.inf  # the last non-worse validation loss (the plateau rule's reference)
    best_loss: float = math.inf
    best_epoch: int = -1
    done: bool = False
    stop_reason: str = ""
    phase_start: int = 0           # epochs completed when this phase began (the LR rule and budget count from it)
    train_seconds: float = 0.0
    partial: dict[str, float] = field(default_factory=dict)  # sums of the interrupted epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
        atomic_write_json(self.run_dir / "config.json", self.config.to_dict())
        self.corpus.vocab.save(self.run_dir)
        self._write_state("running")

    def _write_state(self, status: str, message: str = "") -> None:
        write_state(self.run_dir, status, self.state.epoch, self.state.step, message)

    def save_checkpoint(self) -> None:
        """last.pt: everything a resumed run needs to continue exactly."""
        save_checkpoint(self.run_dir / "last.pt", self.config, self.corpus.vocab, model=self.model.state_dict(),
                        optimizer=self.optimizer.state_dict(), method=self.method.state_dict(),
                        state=self.state.__dict__, rng=_rng_state())

    def load_full_checkpoint(self, path: Path) -> None:
        """Restore model, optimiser, method, loop state and RNGs; a checkpoint of another run is refused."""
        ckpt = load_checkpoint(path)
        if not isinstance(ckpt, dict) or not {"model", "optimizer", "state", "rng"} <= set(ckpt):
            raise RunError(f"checkpoint {path} is not a full training checkpoint (a best.pt or a foreign file?)")
        check_checkpoint(ckpt, path, self.corpus.vocab, self.config)
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise RunError(f"checkpoint {path} does not match the model config: "
                           f"{str(exc).splitlines()[0]}") from None
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.method.load_state_dict(ckpt.get("method", {}))
            self.state = TrainState(**ckpt["state"])
            _set_rng_state(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise RunError(f"checkpoint {path} does not fit this run ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None

    # -- the loop --------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        self._write_state("running")
        log.info("model: %s decoder, %d parameters, %d train sentences, %d steps/epoch, device %s",
                 self.config.model.decoder, count_parameters(self.model), len(self._lengths),
                 self.steps_per_epoch, self.device)
        interrupted = {"flag": False, "saved": False, "signal": ""}

        def on_signal(signum, frame):
            if interrupted["flag"]:
                if signum == signal.SIGINT:  # a second Ctrl-C: stop now; last.pt is the previous complete checkpoint
                    raise KeyboardInterrupt
                return  # a repeated SIGTERM (Slurm may send more than one) must not abort the save
            interrupted.update(flag=True, signal="Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)
            log.warning("%s: stopping after this step and saving last.pt (%s)", interrupted["signal"],
                        "press again to stop at once" if signum == signal.SIGINT else "resume it later")

        self.tracking = RunTracking(self.config, self.run_dir)
        status = "failed"
        previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS} if _in_main_thread() else {}
        try:
            while not self.state.done:
                self._run_epoch(interrupted)
                if interrupted["flag"] and not self.state.done:
                    self.save_checkpoint()
                    by = interrupted["signal"]
                    self._write_state("interrupted", f"stopped by {by} at step {self.state.step}")
                    interrupted["saved"] = True
                    if by == "Ctrl-C":
                        raise KeyboardInterrupt
                    raise Preempted(f"stopped by {by} at step {self.state.step}; last.pt is saved and resumes it")
            status = "finished"
        except TrainingDiverged as exc:
            self._write_state("failed", str(exc))
            raise
        except KeyboardInterrupt:
            status = "interrupted"
            if not interrupted.get("saved"):  # a second Ctrl-C (or one outside the handler)
                self._write_state("interrupted", "stopped at once by Ctrl-C; last.pt is the last complete checkpoint")
            raise
        finally:
            self.tracking.close(status)
            for sig, handler in previous.items():
                if handler is not None:
                    signal.signal(sig, handler)
        return self._finish()

    def _finish(self) -> dict[str, Any]:
        summary = self._summary()
        atomic_write_json(self.run_dir / "summary.json", summary)
        self._write_state("finished", self.state.stop_reason)
        return summary

    def _run_epoch(self, interrupted: dict[str, bool]) -> None:
        t, s = self.config.train, self.state
        epoch = s.epoch
        self.model.train()
        sums = {k: torch.zeros((), dtype=torch.float64, device=self.device) for k in ("rec", "kl", "loss")}
        counts = {"sentences": 0, "tokens": 0, "beta": 0.0}
        if s.batch_in_epoch and s.partial:  # resuming mid-epoch: carry the sums of the done part
            for k in sums:
                sums[k] += s.partial.get(k, 0.0)
            counts = {k: s.partial.get(k, 0) for k in counts}
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
                sums["rec"] += out.rec.detach().sum()
                sums["kl"] += out.kl.detach().sum()
                sums["loss"] += out.loss.detach() * len(batch)
                counts["sentences"] += len(batch)
                counts["tokens"] += batch.n_targets
                counts["beta"] = beta
                s.step += 1
                s.batch_in_epoch = i + 1
                if t.monitor_every and s.step % t.monitor_every == 0:
                    self._monitor(beta)
                if s.step % 50 == 0 or i + 1 == self.steps_per_epoch:  # one host sync every 50 steps
                    self._check_finite(first_bad, epoch)
                    bar.set_postfix(loss=f"{float(sums['loss']) / counts['sentences']:.2f}",
                                    kl=f"{float(sums['kl']) / counts['sentences']:.2f}", beta=f"{beta:.2f}")
                bar.update(1)
                if interrupted["flag"] or (t.max_steps is not None and s.step >= t.max_steps):
                    break
        self._check_finite(first_bad, epoch)
        seconds = time.perf_counter() - start
        s.train_seconds += seconds
        if interrupted["flag"] and s.batch_in_epoch < self.steps_per_epoch:
            s.partial = {**{k: float(v) for k, v in sums.items()}, **counts}
            return
        s.partial = {}
        s.batch_in_epoch = 0
        s.epoch += 1
        valid = self.run_validation("valid")
        if not math.isfinite(valid["loss"]):
            raise TrainingDiverged(f"validation loss became {valid['loss']} after epoch {s.epoch} (step {s.step}); "
                                   f"the last good checkpoint is kept")
        n = max(counts["sentences"], 1)
        row = {"epoch": s.epoch, "step": s.step, "lr": s.lr, "beta": counts["beta"],
               "train_loss": float(sums["loss"]) / n, "train_rec": float(sums["rec"]) / n,
               "train_kl": float(sums["kl"]) / n, "train_sentences": counts["sentences"],
               "tokens_per_s": counts["tokens"] / max(seconds, 1e-9), "seconds": seconds,
               **{f"valid_{k}": v for k, v in valid.items()}}
        self._after_validation(self.method.selection_loss(valid))  # first: best.pt holds the validated model
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

    def _monitor(self, beta: float) -> None:
        """Rec, KL, MI and AU on the monitor subset of valid, appended to monitor.jsonl (collapse as it happens)."""
        subset = self.corpus.splits["valid"][: self.config.train.monitor_size]
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # leaves the training RNG (and so resume) untouched
            valid = validation_metrics(self.model, self.method, subset, self.config, self.device)
        s = self.state
        row = {"step": s.step, "epoch": s.step / self.steps_per_epoch, "beta": beta,
               **{f"valid_{k}": v for k, v in valid.items()}}
        append_jsonl(self.run_dir / "monitor.jsonl", row)
        if self.tracking is not None:
            self.tracking.log_row("monitor", row, s.step, prefix="monitor/")

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

    def _after_validation(self, valid_loss: float) -> None:
        """Keep the best model (best.pt, the model that is evaluated), apply the run's LR rule
        (`lr_rule`, LR_RULES) and decide whether to stop. Epochs count from the start of the phase (0
        but for a method that restarts one); once the budget is reached the LR is left alone, since the
        run ends anyway."""
        t, s = self.config.train, self.state
        epochs = s.epoch - s.phase_start
        improved = valid_loss < s.best_loss
        if improved:
            s.best_loss, s.best_epoch = valid_loss, s.epoch
            save_checkpoint(self.run_dir / "best.pt", self.config, self.corpus.vocab,
                            model=self.model.state_dict(), epoch=s.epoch, method=self.method.state_dict())
        if epochs < t.epochs:
            LR_RULES[t.lr_rule](self, valid_loss, improved)
        if s.done:
            return
        if epochs >= t.epochs:
            s.done, s.stop_reason = True, f"reached {t.epochs} epochs" + (" of phase 2" if s.phase_start else "")
        elif t.max_steps is not None and s.step >= t.max_steps:
            s.done, s.stop_reason = True, f"reached the budget of {t.max_steps} steps"

    def _summary(self) -> dict[str, Any]:
        rows = read_jsonl(self.run_dir / "log.jsonl")
        best = next((r for r in rows if r["epoch"] == self.state.best_epoch), rows[-1] if rows else {})
        return {"epochs": self.state.epoch, "steps": self.state.step, "stop_reason": self.state.stop_reason,
                "best_epoch": self.state.best_epoch, "train_seconds": self.state.train_seconds,
                "best_valid": {k[6:]: v for k, v in best.items() if k.startswith("valid_")},
                "last": rows[-1] if rows else {}, "device": str(self.device), "version": __version__}


# -- the LR rules (config.LR_RULES; docs/protocol.md section 6) ---------------------------------------
# Each is called after an epoch's validation (best.pt already updated) with that epoch's selection loss
# and whether it beat the best so far, and may change the LR or end the run through trainer.state.

def plateau_rule(trainer: Trainer, valid_loss: float, improved: bool) -> None:
    """He et al.'s and Li et al.'s VAE rule (jxhe/vae-lagging-encoder text.py, bohanli/vae-pretraining-encoder
    text_anneal_fb.py); with decay_start_epoch = 0 and decay_patience = 2 also Li et al.'s LM rule (lm.py).

    An epoch is worse when its validation loss exceeds the last non-worse epoch's. After
    `decay_patience` worse epochs in a row, once more than `decay_start_epoch` epochs are done,
    best.pt is reloaded, the LR halved with a fresh optimiser, and that epoch's loss becomes the
    reference. The `max_decays`-th such plateau ends the run (their code breaks right after that
    halving, so its LR is never trained).
    """
    t, s = trainer.config.train, trainer.state
    if valid_loss <= s.plateau_loss:
        s.plateau_loss, s.bad_epochs = valid_loss, 0
    else:
        s.bad_epochs += 1
    if s.epoch - s.phase_start <= t.decay_start_epoch or s.bad_epochs < t.decay_patience:
        return
    s.decays += 1
    s.bad_epochs, s.plateau_loss = 0, valid_loss
    if s.decays >= t.max_decays:
        s.done, s.stop_reason = True, f"stopped at validation plateau {s.decays} (max_decays={t.max_decays})"
        return
    s.lr /= 2
    # the method's state is not rolled back: phases (aggressive, pretrain-fb) only move forward, as in
    # He et al.'s code, where only the model is reloaded
    trainer.reload_best()
    trainer.optimizer = trainer.make_optimizer(trainer.model.parameters(), s.lr)
    log.info("validation plateau: reloaded epoch %d, LR halved to %g", s.best_epoch, s.lr)


def skip_vae_rule(trainer: Trainer, valid_loss: float, improved: bool) -> None:
    """Skip-VAE's rule (yoonkim/skip-vae, train_text_skip.py).

    The decay starts at the first epoch, counted from 1, at or after epoch `decay_start_epoch` whose
    validation loss is not below the best so far: the LR is halved after that epoch and after every
    later one, improving or not, in the same optimiser and without reloading best.pt. The run ends
    when the halved LR would fall below `min_lr` (their code breaks before training at it).
    """
    t, s = trainer.config.train, trainer.state
    decaying = s.decays > 0 or (not improved and s.epoch - s.phase_start >= t.decay_start_epoch)
    if not decaying:
        return
    s.decays += 1
    if s.lr / 2 < t.min_lr:
        s.done, s.stop_reason = True, f"stopped at halving {s.decays}: LR {s.lr / 2:g} < min_lr={t.min_lr:g}"
        return
    s.lr /= 2
    for group in trainer.optimizer.param_groups:   # their code sets the LR in place: optimiser state kept
        group["lr"] = s.lr
    log.info("LR halved to %g (skip-vae rule)", s.lr)


LR_RULES = {"plateau": plateau_rule, "skip-vae": skip_vae_rule}


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _progress(total: int, desc: str, enabled: bool, initial: int = 0):
    """An epoch's progress over its batches (`progress`: a bar on a terminal, else plain lines)."""
    from .progress import progress

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
        atomic_write_json(run_dir / "config.json", config.to_dict())
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
