"""After each epoch's validation: the best model kept, the learning-rate rule of the peers' code applied
(config.LR_RULES; docs/protocol.md section 6), and the decision to stop. `trainer` is train.Trainer.

Each rule is called after an epoch's validation (best.pt already updated) with that epoch's selection loss
and whether it beat the best so far, and may change the LR or end the run through trainer.state.
"""
from __future__ import annotations

import logging
from typing import Callable

from ..core.rundir import save_checkpoint

log = logging.getLogger("textsvae.training.train")


def plateau_rule(trainer, valid_loss: float, improved: bool) -> None:
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


def skip_vae_rule(trainer, valid_loss: float, improved: bool) -> None:
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


LR_RULES: dict[str, Callable[..., None]] = {"plateau": plateau_rule, "skip-vae": skip_vae_rule}


def end_of_epoch(trainer, valid_loss: float) -> None:
    """Keep the best model (best.pt, the model that is evaluated), apply the run's LR rule (`lr_rule`,
    LR_RULES) and decide whether to stop. Epochs count from the start of the phase (0 but for a method
    that restarts one); once the budget is reached the LR is left alone, since the run ends anyway."""
    t, s = trainer.config.train, trainer.state
    epochs = s.epoch - s.phase_start
    improved = valid_loss < s.best_loss
    if improved:
        s.best_loss, s.best_epoch = valid_loss, s.epoch
        save_checkpoint(trainer.run_dir / "best.pt", trainer.config, trainer.corpus.vocab,
                        model=trainer.model.state_dict(), epoch=s.epoch, method=trainer.method.state_dict())
    if epochs < t.epochs:
        LR_RULES[t.lr_rule](trainer, valid_loss, improved)
    if s.done:
        return
    if epochs >= t.epochs:
        s.done, s.stop_reason = True, f"reached {t.epochs} epochs" + (" of phase 2" if s.phase_start else "")
    elif t.max_steps is not None and s.step >= t.max_steps:
        s.done, s.stop_reason = True, f"reached the budget of {t.max_steps} steps"
