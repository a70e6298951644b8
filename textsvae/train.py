"""The one training loop: epochs of method steps, validation at beta = 1, He et al.'s LR halving,
checkpoints with the full state (written atomically each epoch and on Ctrl-C), exact resume.

Run folder: config.json, vocab.json (+ spm.model), log.jsonl (one row per epoch), last.pt
(full state), best.pt (best validation loss), state.json (status), summary.json (when done).
"""
from __future__ import annotations

import functools
import hashlib
import json
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

from . import __version__
from .config import ConfigError, RunConfig
from .data.batching import bucket_batches, make_batch
from .data.corpus import Corpus, load_corpus
from .data.vocab import load_vocab
from .io import (append_jsonl, atomic_torch_save, atomic_write_json, atomic_write_text, read_jsonl,
                 remove_partial_writes)
from .methods import Method, build_method
from .models import TextVAE, count_parameters
from .optim import clip_grad_norm, sparse_embeddings
from .validation import validate

log = logging.getLogger(__name__)

RUN_FILES = ("config.json", "vocab.json", "spm.model", "log.jsonl", "monitor.jsonl", "last.pt", "best.pt",
             "state.json", "summary.json")


class RunError(RuntimeError):
    """A problem with a run folder or checkpoint (one line for the user)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    epoch: int = 0                 # epochs completed
    step: int = 0                  # optimiser steps taken
    batch_in_epoch: int = 0        # batches of the current epoch already done (Ctrl-C mid-epoch)
    lr: float = 0.0
    decays: int = 0                # LR halvings so far
    bad_epochs: int = 0            # worse epochs in a row (validation loss above plateau_loss)
    plateau_loss: float = math.inf  # the last non-worse validation loss (the plateau rule's reference)
    best_loss: float = math.inf
    best_epoch: int = -1
    done: bool = False
    stop_reason: str = ""
    train_seconds: float = 0.0
    partial: dict[str, float] = field(default_factory=dict)  # sums of the interrupted epoch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise RunError(f"unknown device '{name}' ({str(exc).splitlines()[0]})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device '{name}' requested but CUDA is not available")
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


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise RunError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__})") from None


def warn_if_bf16_is_emulated() -> None:
    """An x86 CPU without AVX-512 (ATen capability "AVX2") has no bf16 matmul kernels: a 512^3 bf16 matmul
    took 187 ms against 3.1 ms in fp32 on the 2-core AVX2 machine (`benchmarks/kernels.py`, 2 threads)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX2":
        log.warning("bf16 autocast on a CPU without AVX-512 (ATen capability %s): bf16 matmuls are emulated "
                    "and much slower than fp32 here; use precision=fp32", capability)


@functools.lru_cache(maxsize=None)
def cpu_lstm_runs_in(precision: str) -> bool:
    """Whether this CPU's LSTM kernels (oneDNN) run forward and backward under `precision` autocast.
    On the 2-core AVX2 machine bf16 and fp16 LSTMs fail ("could not create a primitive descriptor")."""
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
    """A one-line RunError where this CPU's LSTM kernels cannot run in the asked-for autocast precision."""
    if not cpu_lstm_runs_in(precision):
        raise RunError(f"{field_name}={precision} cannot run on this CPU: its LSTM kernels have no {precision} "
                       f"version (ATen CPU capability {torch.backends.cpu.get_cpu_capability()}); "
                       f"use {field_name}=fp32")


class Trainer:
    """Holds the model, method, optimiser and state of one run; `fit()` runs the loop."""

    def __init__(self, config: RunConfig, run_dir: str | Path, corpus: Corpus | None = None,
                 method: Method | None = None, vocab=None):
        self.config = config
        self.run_dir = Path(run_dir)
        t = config.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        if self.device.type == "cpu":
            check_cpu_precision("precision", t.precision)
            check_cpu_precision("eval_precision", config.eval.eval_precision)
        seed_everything(t.seed)
        self.corpus = corpus or load_corpus(config.data, vocab=vocab, seed=t.seed)
        self.method = method or build_method(t.method, t.method_params)
        self.model = TextVAE(len(self.corpus.vocab), config.model).to(self.device)
        self.model.set_precision(t.precision)
        sparse_embeddings(self.model, t.optimizer, t.momentum)
        if self.device.type == "cpu" and "bf16" in (t.precision, config.eval.eval_precision):
            warn_if_bf16_is_emulated()
        self.method.setup(self)
        self.model.to(self.device)
        self.state = TrainState(lr=t.lr)
        self.optimizer = self.make_optimizer(self.model.parameters(), t.lr)
        self.steps_per_epoch = math.ceil(len(self.corpus.splits["train"]) / t.batch_size)
        self._lengths = [len(s) for s in self.corpus.splits["train"]]

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

    def validate(self, split: str = "valid") -> dict[str, float]:
        return validate(self.model, self.method, self.corpus.splits[split], self.config, self.device)

    # -- run folder ------------------------------------------------------------------
    def prepare_run_dir(self, force: bool) -> None:
        d = self.run_dir
        if d.exists() and any((d / f).exists() for f in RUN_FILES):
            if not force:
                raise RunError(f"{d} already holds a run; use --resume to continue it or --force to overwrite it")
            # the old run's files, its evaluations and any temporaries a kill left behind
            stale = [d / f for f in RUN_FILES] + list(d.glob("eval_*.json")) + list(d.glob(".*.tmp"))
            for f in stale:
                f.unlink(missing_ok=True)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "config.json", self.config.to_dict())
        self.corpus.vocab.save(d)
        self._write_state("running")

    def _write_state(self, status: str, message: str = "") -> None:
        atomic_write_json(self.run_dir / "state.json", {
            "status": status, "message": message, "epoch": self.state.epoch, "step": self.state.step,
            "version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def save_checkpoint(self, name: str = "last.pt") -> None:
        atomic_torch_save(self.run_dir / name, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(), "state": self.state.__dict__, "rng": _rng_state(),
            "config": self.config.to_dict(), "vocab_size": len(self.corpus.vocab),
            "vocab_digest": vocab_digest(self.corpus.vocab)})

    def load_full_checkpoint(self, path: Path) -> None:
        """Restore model, optimiser, method, loop state and RNGs; a checkpoint of another run is refused."""
        ckpt = load_checkpoint(path)
        if not isinstance(ckpt, dict) or not {"model", "optimizer", "state", "rng"} <= set(ckpt):
            raise RunError(f"checkpoint {path} is not a full training checkpoint (a best.pt or a foreign file?)")
        if ckpt.get("vocab_size") != len(self.corpus.vocab):
            raise RunError(f"checkpoint {path} has vocabulary size {ckpt.get('vocab_size')}, "
                           f"the run's vocabulary has {len(self.corpus.vocab)}")
        if ckpt.get("vocab_digest", vocab_digest(self.corpus.vocab)) != vocab_digest(self.corpus.vocab):
            raise RunError(f"checkpoint {path} was trained with another vocabulary than {path.parent}/vocab.json")
        if "config" in ckpt and ckpt["config"] != self.config.to_dict():
            changed = _changed_fields(ckpt["config"], self.config.to_dict())
            raise RunError(f"checkpoint {path} was written with another config than {path.parent}/config.json "
                           f"(differs in: {', '.join(changed)})")
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
        interrupted = {"flag": False, "saved": False}

        def on_sigint(signum, frame):
            if interrupted["flag"]:  # a second Ctrl-C: stop now; last.pt is the previous complete checkpoint
                raise KeyboardInterrupt
            interrupted["flag"] = True
            log.warning("Ctrl-C: stopping after this step and saving last.pt (press again to stop at once)")

        previous = signal.signal(signal.SIGINT, on_sigint) if _in_main_thread() else None
        try:
            while not self.state.done:
                self._run_epoch(interrupted)
                if interrupted["flag"] and not self.state.done:
                    self.save_checkpoint()
                    self._write_state("interrupted", f"stopped by Ctrl-C at step {self.state.step}")
                    interrupted["saved"] = True
                    raise KeyboardInterrupt
        except TrainingDiverged as exc:
            self._write_state("failed", str(exc))
            raise
        except KeyboardInterrupt:
            if not interrupted.get("saved"):  # a second Ctrl-C (or one outside the handler)
                self._write_state("interrupted", "stopped at once by Ctrl-C; last.pt is the last complete checkpoint")
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
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
        bar = _progress(self.steps_per_epoch, f"epoch {epoch + 1}/{t.epochs}", t.progress, initial=s.batch_in_epoch)
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
                if bar is not None:
                    bar.set_postfix(loss=f"{float(sums['loss']) / counts['sentences']:.2f}",
                                    kl=f"{float(sums['kl']) / counts['sentences']:.2f}", beta=f"{beta:.2f}")
            if bar is not None:
                bar.update(1)
            if interrupted["flag"] or (t.max_steps is not None and s.step >= t.max_steps):
                break
        if bar is not None:
            bar.close()
        self._check_finite(first_bad, epoch)
        seconds = time.perf_counter() - start
        s.train_seconds += seconds
        if interrupted["flag"] and s.batch_in_epoch < self.steps_per_epoch:
            s.partial = {**{k: float(v) for k, v in sums.items()}, **counts}
            return
        s.partial = {}
        s.batch_in_epoch = 0
        s.epoch += 1
        valid = self.validate("valid")
        if not math.isfinite(valid["loss"]):
            raise TrainingDiverged(f"validation loss became {valid['loss']} after epoch {s.epoch} (step {s.step}); "
                                   f"the last good checkpoint is kept")
        n = max(counts["sentences"], 1)
        row = {"epoch": s.epoch, "step": s.step, "lr": s.lr, "beta": counts["beta"],
               "train_loss": float(sums["loss"]) / n, "train_rec": float(sums["rec"]) / n,
               "train_kl": float(sums["kl"]) / n, "train_sentences": counts["sentences"],
               "tokens_per_s": counts["tokens"] / max(seconds, 1e-9), "seconds": seconds,
               **{f"valid_{k}": v for k, v in valid.items()}}
        self._after_validation(valid["loss"])  # first, so best.pt holds the model that was validated
        self.method.end_epoch(self, valid)
        row.update({f"method_{k}": v for k, v in self.method.state_dict().items()
                    if isinstance(v, (int, float, bool, str))})
        append_jsonl(self.run_dir / "log.jsonl", row)
        log.info("epoch %d: train loss %.3f | valid loss %.3f rec %.3f kl %.3f mi %s au %s ppl %.1f | %.0f tok/s",
                 s.epoch, row["train_loss"], valid["loss"], valid["rec"], valid["kl"],
                 _fmt(valid.get("mi")), valid.get("au", "-"), valid["ppl_bound"], row["tokens_per_s"])
        self.save_checkpoint()

    def _monitor(self, beta: float) -> None:
        """Rec, KL, MI and AU on the monitor subset of valid, appended to monitor.jsonl (collapse as it happens)."""
        subset = self.corpus.splits["valid"][: self.config.train.monitor_size]
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # leaves the training RNG (and so resume) untouched
            valid = validate(self.model, self.method, subset, self.config, self.device)
        s = self.state
        append_jsonl(self.run_dir / "monitor.jsonl", {
            "step": s.step, "epoch": s.step / self.steps_per_epoch, "beta": beta,
            **{f"valid_{k}": v for k, v in valid.items()}})

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

    def _after_validation(self, valid_loss: float) -> None:
        """Keep the best model (best.pt); the LR rule of He et al.'s and Li et al.'s code; decide whether to stop.

        An epoch is worse when its validation loss exceeds the last non-worse epoch's. After
        `decay_patience` worse epochs in a row, once more than `decay_start_epoch` epochs are done,
        best.pt is reloaded and the LR halved, and that epoch's loss becomes the reference. The
        `max_decays`-th such plateau ends the run (their code breaks right after that halving);
        best.pt is the model that is evaluated.
        """
        t, s = self.config.train, self.state
        if valid_loss < s.best_loss:
            s.best_loss, s.best_epoch = valid_loss, s.epoch
            atomic_torch_save(self.run_dir / "best.pt", {"model": self.model.state_dict(), "epoch": s.epoch,
                                                         "config": self.config.to_dict(),
                                                         "vocab_size": len(self.corpus.vocab),
                                                         "vocab_digest": vocab_digest(self.corpus.vocab),
                                                         "method": self.method.state_dict()})
        if valid_loss <= s.plateau_loss:
            s.plateau_loss, s.bad_epochs = valid_loss, 0
        else:
            s.bad_epochs += 1
        if s.epoch > t.decay_start_epoch and s.bad_epochs >= t.decay_patience and s.epoch < t.epochs:
            s.decays += 1
            s.bad_epochs, s.plateau_loss = 0, valid_loss
            if s.decays >= t.max_decays:
                s.done, s.stop_reason = True, f"stopped at validation plateau {s.decays} (max_decays={t.max_decays})"
                return
            s.lr /= 2
            best = load_checkpoint(self.run_dir / "best.pt")
            self.model.load_state_dict(best["model"])
            # the method's state is not rolled back: phases (aggressive, pretrain-fb) only move
            # forward, as in He et al.'s code, where only the model is reloaded
            self.optimizer = self.make_optimizer(self.model.parameters(), s.lr)
            log.info("validation plateau: reloaded epoch %d, LR halved to %g", best["epoch"], s.lr)
        if s.epoch >= t.epochs:
            s.done, s.stop_reason = True, f"reached {t.epochs} epochs"
        elif t.max_steps is not None and s.step >= t.max_steps:
            s.done, s.stop_reason = True, f"reached the budget of {t.max_steps} steps"

    def _summary(self) -> dict[str, Any]:
        rows = read_jsonl(self.run_dir / "log.jsonl")
        best = next((r for r in rows if r["epoch"] == self.state.best_epoch), rows[-1] if rows else {})
        return {"epochs": self.state.epoch, "steps": self.state.step, "stop_reason": self.state.stop_reason,
                "best_epoch": self.state.best_epoch, "train_seconds": self.state.train_seconds,
                "best_valid": {k[6:]: v for k, v in best.items() if k.startswith("valid_")},
                "last": rows[-1] if rows else {}, "device": str(self.device), "version": __version__}


def vocab_digest(vocab) -> str:
    """sha256 of the token list: two vocabularies of the same size still differ here."""
    return hashlib.sha256("\n".join(vocab.tokens).encode("utf-8")).hexdigest()


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(f"{section}.{k}" for section in set(old) | set(new)
                  for k in set(old.get(section, {})) | set(new.get(section, {}))
                  if old.get(section, {}).get(k) != new.get(section, {}).get(k))


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _progress(total: int, desc: str, enabled: bool, initial: int = 0):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True, mininterval=1.0)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def train_run(config: RunConfig, run_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Start a new run in run_dir (refused if it already holds one, unless force)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any((run_dir / f).exists() for f in RUN_FILES) and not force:
        raise RunError(f"{run_dir} already holds a run; use --resume to continue it or --force to overwrite it")
    trainer = Trainer(config, run_dir)
    trainer.prepare_run_dir(force)
    return trainer.fit()


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The RunConfig saved in a run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise RunError(f"{run_dir} holds no run (no config.json)")
    try:
        return RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise RunError(f"{run_dir}/config.json is unreadable ({type(exc).__name__})") from None
    except ConfigError as exc:
        raise RunError(f"{run_dir}/config.json: {exc}") from None


def resume_run(run_dir: str | Path) -> dict[str, Any]:
    """Continue an interrupted run from its last.pt, exactly where it stopped."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
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
    _truncate_log(run_dir, trainer.state.epoch)
    _truncate_log(run_dir, trainer.state.step, name="monitor.jsonl", key="step")
    return trainer.fit()


def _truncate_log(run_dir: Path, done: int, name: str = "log.jsonl", key: str = "epoch") -> None:
    """Drop log rows written after the checkpoint (row[key] > done), and a torn last line (a kill mid-write)."""
    path = run_dir / name
    if not path.exists():
        return
    rows = read_jsonl(path)
    kept = [r for r in rows if isinstance(r, dict) and isinstance(r.get(key), int) and r[key] <= done]
    if len(kept) != len(path.read_text(encoding="utf-8").splitlines()):
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
