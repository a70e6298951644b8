"""The executor interface and the division of a machine's cores among parallel jobs."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Callable, Hashable, Iterable, Iterator, Sequence, TypeVar

from ...core.config import ConfigError

T = TypeVar("T")
R = TypeVar("R")


class ExecutorError(RuntimeError):
    """An engine lost a task (a worker killed, a job cancelled): one line for the user."""


class Executor(ABC):
    """Runs fn over tasks; `jobs` of them at a time."""

    jobs: int = 1
    in_process: bool = False   # tasks run in this process, so a signal that stops one is meant for the whole grid

    @abstractmethod
    def map_unordered(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        """Yield fn(task) for every task, in completion order; fn handles its own errors."""

    def on_start(self, callback: Callable[[T], None]) -> None:
        """Register a callback called when a task is handed to a worker (for progress)."""
        self._on_start = callback

    def _started(self, task) -> None:
        callback = getattr(self, "_on_start", None)
        if callback is not None:
            callback(task)


H = TypeVar("H", bound=Hashable)


def in_flight(tasks: Sequence[T], jobs: int, pending: dict[H, T], submit: Callable[[T], H],
              ended: Callable[[dict[H, T]], Iterable[H]], started: Callable[[T], None]) -> Iterator[tuple[H, T]]:
    """At most `jobs` tasks in flight, submitted lazily (so progress shows real starts): `submit(task)`
    gives a handle while fewer than `jobs` are pending, then (handle, task) is yielded for each handle
    `ended(pending)` reports over. `pending` (handle -> task) is the caller's, so when the caller stops
    early it still names what is running, to cancel."""
    queue = list(tasks)
    while queue or pending:
        while queue and len(pending) < jobs:
            task = queue.pop(0)
            pending[submit(task)] = task
            started(task)
        for handle in list(ended(pending)):
            yield handle, pending.pop(handle)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_jobs(value: str | int | None, n_tasks: int, gpu: bool) -> int:
    """`auto` (or None): one job on a GPU, else min(cores, tasks); otherwise a positive integer."""
    if value is None or str(value).lower() == "auto":
        return 1 if gpu else max(1, min(available_cores(), n_tasks))
    try:
        jobs = int(value)
    except ValueError:
        raise ConfigError(f"--jobs must be a positive integer or 'auto', got '{value}'") from None
    if jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer or 'auto', got '{value}'")
    return jobs


def threads_per_job(jobs: int) -> int:
    """Divide the cores among parallel jobs: cores // jobs, at least 1."""
    return max(1, available_cores() // jobs)
