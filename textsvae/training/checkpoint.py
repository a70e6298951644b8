"""A run's whole training state in last.pt, saved each epoch and on a stop, restored by `resume_run`.

best.pt (the model that is evaluated) and the file format are `rundir`'s; this module says what a
resumed run needs: model, optimiser, method state, loop state and the random generators of a train.Trainer.
"""
from __future__ import annotations

from pathlib import Path

from ..core.rundir import RunError, check_checkpoint, load_checkpoint, save_checkpoint
from .run_state import TrainState, rng_state, set_rng_state

FULL_KEYS = {"model", "optimizer", "state", "rng"}


def save_last(trainer) -> None:
    """last.pt: everything a resumed run needs to continue exactly."""
    save_checkpoint(trainer.run_dir / "last.pt", trainer.config, trainer.corpus.vocab,
                    model=trainer.model.state_dict(), optimizer=trainer.optimizer.state_dict(),
                    method=trainer.method.state_dict(), state=trainer.state.__dict__, rng=rng_state())


def restore(trainer, path: Path) -> None:
    """Restore model, optimiser, method, loop state and RNGs from path; a checkpoint of another run is refused."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not FULL_KEYS <= set(ckpt):
        raise RunError(f"checkpoint {path} is not a full training checkpoint (a best.pt or a foreign file?)")
    check_checkpoint(ckpt, path, trainer.corpus.vocab, trainer.config)
    try:
        trainer.model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise RunError(f"checkpoint {path} does not match the model config: {str(exc).splitlines()[0]}") from None
    try:
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        trainer.method.load_state_dict(ckpt.get("method", {}))
        trainer.state = TrainState(**ckpt["state"])
        set_rng_state(ckpt["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RunError(f"checkpoint {path} does not fit this run ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
