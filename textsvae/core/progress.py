"""Progress of a long loop: a tqdm bar on a terminal, plain periodic lines in a log file or under CI.

The environment chooses the display:
  TEXTSVAE_PROGRESS        off: nothing; lines: plain lines even on a terminal; unset or auto: a bar when
                           the stream is a terminal and CI is not set, else plain lines
  TEXTSVAE_PROGRESS_EVERY  seconds between two plain lines (default 30; 0: a line at every update)
A plain line reads `epoch 3/40: 1200/2000 batches (60%), 5.1 batches/s, eta 2m37s, loss=104.2`; close()
writes a last one (`took` instead of `eta`) after any earlier line, so a loop shorter than the period
prints nothing. Lines go to `stream` when one is given, else to this module's logger at INFO, so they
land wherever the process logs.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import IO, Any, Iterator

log = logging.getLogger(__name__)

DEFAULT_EVERY_S = 30.0
MODES = ("auto", "lines", "off")
_lines_only = False          # set by `lines_only()`


class Progress:
    """The interface, and what `off` gives: every call does nothing."""

    n: int = 0

    def update(self, n: int = 1) -> None:
        """Count n more items done."""

    def set_postfix(self, **values: Any) -> None:
        """Show these values (loss=..., failed=...) after the counts."""

    def close(self) -> None:
        """End the display; a second call does nothing."""

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LineProgress(Progress):
    """Plain lines: at most one per `every` seconds of updates, and one at close if any came before."""

    def __init__(self, total: int | None, desc: str, initial: int, unit: str, stream: IO[str] | None,
                 every: float):
        self.total, self.desc, self.unit, self.stream, self.every = total, desc, unit, stream, every
        self.n = self._first = initial
        self._start = self._last = time.monotonic()
        self._postfix: dict[str, Any] = {}
        self._closed = self._written = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._write(self.line(now))

    def set_postfix(self, **values: Any) -> None:
        self._postfix = values

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._written:
                self._write(self.line(time.monotonic(), final=True))

    def line(self, now: float, final: bool = False) -> str:
        """`desc: n/total unit (p%), rate unit/s, eta T[, key=value ...]`."""
        seconds = now - self._start
        rate = (self.n - self._first) / seconds if seconds > 0 else 0.0
        count = (f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)" if self.total
                 else f"{self.n} {self.unit}")
        parts = [f"{self.desc}: {count}", f"{_rate(rate)} {self.unit}/s"]
        if final:
            parts.append(f"took {_duration(seconds)}")
        elif self.total and rate > 0 and self.n < self.total:
            parts.append(f"eta {_duration(max(self.total - self.n, 0) / rate)}")
        parts += [f"{k}={_value(v)}" for k, v in self._postfix.items()]
        return ", ".join(parts)

    def _write(self, line: str) -> None:
        self._written = True
        if self.stream is None:
            log.info("%s", line)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()


class BarProgress(Progress):
    """A tqdm bar; while it is open, log lines to the terminal are written above it, not through it."""

    def __init__(self, total: int | None, desc: str, initial: int, unit: str, stream: IO[str]):
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()
        self._bar = tqdm(total=total, desc=desc, initial=initial, unit=unit, leave=False,
                         dynamic_ncols=True, mininterval=1.0, file=stream)
        self._closed = False

    @property
    def n(self) -> int:
        return self._bar.n

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bar.close()
            self._redirect.__exit__(None, None, None)


def progress(total: int | None, desc: str, *, initial: int = 0, enabled: bool = True,
             stream: IO[str] | None = None, unit: str = "it") -> Progress:
    """The progress display of a loop over `total` items of which `initial` are done (a resumed loop).

    stream: where a bar is drawn (default sys.stderr) and, when given, where plain lines go."""
    chosen = display_mode(stream if stream is not None else sys.stderr) if enabled else "off"
    if chosen == "off":
        return Progress()
    if chosen == "bar":
        return BarProgress(total, desc, initial, unit, stream if stream is not None else sys.stderr)
    return LineProgress(total, desc, initial, unit, stream, every_seconds())


def display_mode(stream: IO[str]) -> str:
    """'off', 'bar' or 'lines' for a display on `stream`, from the environment (see the module's doc)."""
    setting = os.environ.get("TEXTSVAE_PROGRESS", "auto").strip().lower() or "auto"
    if setting not in MODES:
        log.warning("TEXTSVAE_PROGRESS=%s is not one of %s: using auto", setting, ", ".join(MODES))
        setting = "auto"
    if setting != "auto":
        return setting
    if _lines_only or _under_ci() or not _is_terminal(stream):
        return "lines"
    return "bar"


def every_seconds() -> float:
    """TEXTSVAE_PROGRESS_EVERY as seconds >= 0 (default 30)."""
    raw = os.environ.get("TEXTSVAE_PROGRESS_EVERY", "").strip()
    if not raw:
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        log.warning("TEXTSVAE_PROGRESS_EVERY=%s is not a number of seconds >= 0: using %g", raw, DEFAULT_EVERY_S)
        return DEFAULT_EVERY_S
    return value


@contextmanager
def lines_only() -> Iterator[None]:
    """Within it, `progress` shows plain lines where it would draw a bar (a bench worker, whose output
    belongs in a log, beside the bench's own bar)."""
    global _lines_only
    before, _lines_only = _lines_only, True
    try:
        yield
    finally:
        _lines_only = before


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


def _rate(rate: float) -> str:
    """2.3, 0.041, 1234."""
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 1 or rate == 0 else f"{rate:.2g}"


def _duration(seconds: float) -> str:
    """37s, 2m37s, 1h02m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
