"""Stopping a run cleanly: Ctrl-C or a scheduler's signal ends it after the current step with last.pt saved."""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

log = logging.getLogger("textsvae.training.train")

# a first one stops after the current step and saves last.pt; a second Ctrl-C stops at once
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
                     if hasattr(signal, name))


class Preempted(KeyboardInterrupt):
    """SIGTERM, SIGUSR1 or SIGUSR2 (a scheduler's pre-emption or time-limit warning) stopped the run after
    a step, with last.pt saved and state.json 'interrupted': `resume_run` continues it exactly. Not an
    error (a KeyboardInterrupt, so no `except Exception` marks the run failed)."""


@dataclass
class StopRequest:
    """Set by the first stop signal: the loop finishes its step, saves last.pt and stops."""

    requested: bool = False
    saved: bool = False
    by: str = ""                   # "Ctrl-C" or the signal's name

    def on_signal(self, signum, frame) -> None:
        if self.requested:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop now; last.pt is the previous complete checkpoint
                raise KeyboardInterrupt
            return  # a repeated SIGTERM (Slurm may send more than one) must not abort the save
        self.requested = True
        self.by = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        log.warning("%s: stopping after this step and saving last.pt (%s)", self.by,
                    "press again to stop at once" if signum == signal.SIGINT else "resume it later")


@contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """A StopRequest that STOP_SIGNALS set for the duration of the block (in the main thread only: signal
    handlers can be installed nowhere else); the previous handlers come back after it."""
    request = StopRequest()
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, request.on_signal) for sig in STOP_SIGNALS} if main else {}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
