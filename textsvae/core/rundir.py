"""A run folder's files: what they are, the guard against overwriting one, the config, the checkpoints.

config.json, vocab.json (+ spm.model), log.jsonl (one row per epoch), monitor.jsonl, last.pt (the
full training state), best.pt (the best validated model), state.json (status), summary.json (when
done), eval_<split>_k<K>.json (evaluations), trackers.json and tensorboard/ (experiment trackers, see
`trackers`). Every file is written atomically (`io`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, RunConfig, without_execution_fields
from .io import atomic_torch_save, atomic_write_json, atomic_write_text, read_jsonl
from .version import __version__

RUN_FILES = ("config.json", "vocab.json", "spm.model", "log.jsonl", "monitor.jsonl", "last.pt", "best.pt",
             "state.json", "summary.json", "trackers.json")
RUN_FOLDERS = ("tensorboard",)   # a new run's tracker files would mix with the old run's


class RunError(RuntimeError):
    """A problem with a run folder or checkpoint (one line for the user)."""


def holds_run(run_dir: Path) -> bool:
    return run_dir.exists() and any((run_dir / f).exists() for f in RUN_FILES)


def refuse_existing_run(run_dir: Path, force: bool) -> None:
    """The one-line refusal of a folder that already holds a run, unless force."""
    if not force and holds_run(run_dir):
        raise RunError(f"{run_dir} already holds a run; use --resume to continue it or --force to overwrite it")


def prepare_new_run(run_dir: Path, force: bool) -> None:
    """Refuse a folder that already holds a run unless force; with force, delete that run's files,
    its evaluations and the temporaries a kill left behind."""
    refuse_existing_run(run_dir, force)
    if holds_run(run_dir):
        stale = [run_dir / f for f in RUN_FILES] + list(run_dir.glob("eval_*.json")) + list(run_dir.glob(".*.tmp"))
        for f in stale:
            f.unlink(missing_ok=True)
        for folder in RUN_FOLDERS:
            shutil.rmtree(run_dir / folder, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_state(run_dir: str | Path) -> dict[str, Any]:
    """state.json: status, message, epoch, step, version, time; {} when absent or unreadable."""
    return _read_json(Path(run_dir) / "state.json")


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """summary.json of a finished run (see write_summary); {} when absent or unreadable."""
    return _read_json(Path(run_dir) / "summary.json")


def read_config_dict(run_dir: str | Path) -> dict[str, Any]:
    """config.json as saved, unchecked (for display); {} when absent or unreadable. read_run_config checks it."""
    return _read_json(Path(run_dir) / "config.json")


def has_config(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "config.json").exists()


def write_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write_json(run_dir / "config.json", config.to_dict())


def write_state(run_dir: Path, status: str, epoch: int, step: int, message: str = "") -> None:
    atomic_write_json(run_dir / "state.json", {
        "status": status, "message": message, "epoch": epoch, "step": step,
        "version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def write_summary(run_dir: Path, state, device) -> dict[str, Any]:
    """summary.json of a finished run from its TrainState and log.jsonl: epochs, steps, why it stopped, the
    best epoch and its validation metrics, the last epoch's row, device and version. Returns it."""
    rows = read_jsonl(run_dir / "log.jsonl")
    best = next((r for r in rows if r["epoch"] == state.best_epoch), rows[-1] if rows else {})
    summary = {"epochs": state.epoch, "steps": state.step, "stop_reason": state.stop_reason,
               "best_epoch": state.best_epoch, "train_seconds": state.train_seconds,
               "best_valid": {k[6:]: v for k, v in best.items() if k.startswith("valid_")},
               "last": rows[-1] if rows else {}, "device": str(device), "version": __version__}
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


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


# -- checkpoints -------------------------------------------------------------------------------------
def vocab_digest(vocab) -> str:
    """sha256 of the token list: two vocabularies of the same size still differ here."""
    return hashlib.sha256("\n".join(vocab.tokens).encode("utf-8")).hexdigest()


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise RunError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__})") from None


def save_checkpoint(path: Path, config: RunConfig, vocab, **content: Any) -> None:
    """Write a checkpoint with what identifies its run: the config, the vocabulary's size and digest."""
    atomic_torch_save(path, {**content, "config": config.to_dict(), "vocab_size": len(vocab),
                             "vocab_digest": vocab_digest(vocab)})


def check_checkpoint(ckpt: dict[str, Any], path: Path, vocab, config: RunConfig | None = None) -> None:
    """Refuse a checkpoint written for another vocabulary (or, when given, another config) than the run
    folder's; a checkpoint without a digest or config, from an older version, is checked on what it has."""
    if ckpt.get("vocab_size") != len(vocab):
        raise RunError(f"checkpoint {path} has vocabulary size {ckpt.get('vocab_size')}, "
                       f"the run's vocabulary has {len(vocab)}")
    if ckpt.get("vocab_digest", vocab_digest(vocab)) != vocab_digest(vocab):
        raise RunError(f"checkpoint {path} was trained with another vocabulary than {path.parent}/vocab.json")
    if config is not None and "config" in ckpt:
        saved, current = _computed_fields(ckpt["config"]), _computed_fields(config.to_dict())
        if saved != current:
            raise RunError(f"checkpoint {path} was written with another config than {path.parent}/config.json "
                           f"(differs in: {', '.join(changed_fields(saved, current))})")


def _computed_fields(d: dict[str, Any]) -> dict[str, Any]:
    """What a config computes: defaults filled in for fields added since it was written, execution-only
    fields (threads, device, trackers, ...) left out, since a resumed run may change them."""
    try:
        d = RunConfig.from_dict(d).to_dict()
    except (ConfigError, TypeError, AttributeError):
        pass
    return without_execution_fields(d)


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'section.key' of every config field whose value differs between two config dicts."""
    return sorted(f"{section}.{k}" for section in set(old) | set(new)
                  for k in set(old.get(section, {})) | set(new.get(section, {}))
                  if old.get(section, {}).get(k) != new.get(section, {}).get(k))


def truncate_log(run_dir: Path, done: int, name: str = "log.jsonl", key: str = "epoch") -> None:
    """Drop log rows written after the checkpoint (row[key] > done), and a torn last line (a kill mid-write)."""
    path = run_dir / name
    if not path.exists():
        return
    rows = read_jsonl(path)
    kept = [r for r in rows if isinstance(r, dict) and isinstance(r.get(key), int) and r[key] <= done]
    if len(kept) != len(path.read_text(encoding="utf-8").splitlines()):
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
