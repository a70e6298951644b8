"""Where benchmark runs execute: a small interface and the local engines (in-process, process pool).

An executor takes a picklable top-level function and a list of picklable tasks, runs
`fn(task)` for each and yields the results as they complete. A cluster engine (Ray, or
Slurm through submitit) is one more subclass of `Executor`; benchmark files do not change.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from abc import ABC, abstractmethod
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Callable, Iterator, Sequence, TypeVar

from .config import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Executor(ABC):
    """Runs fn over tasks; `jobs` of them at a time."""

    jobs: int = 1

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


class SerialExecutor(Executor):
    """Runs tasks one after another in this process (jobs = 1; easiest to debug)."""

    def map_unordered(self, fn, tasks):
        for task in tasks:
            self._started(task)
            yield fn(task)


def _worker_init() -> None:
    # A fresh (spawned) process: quiet logging (results come back as return values).
    logging.basicConfig(level=logging.WARNING, format="%(message)s")


class LocalProcessExecutor(Executor):
    """A pool of `jobs` spawned processes on this machine."""

    def __init__(self, jobs: int):
        self.jobs = jobs

    def map_unordered(self, fn, tasks):
        context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
        pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=context, initializer=_worker_init)
        pending: dict[Future, object] = {}
        queue = list(tasks)
        try:
            while queue or pending:
                while queue and len(pending) < self.jobs:  # submit lazily so progress shows real starts
                    task = queue.pop(0)
                    pending[pool.submit(fn, task)] = task
                    self._started(task)
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.pop(future)
                    yield future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


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


ENGINES = ("local",)


def make_executor(jobs: int, engine: str = "local") -> Executor:
    if engine not in ENGINES:
        raise ConfigError(f"unknown executor '{engine}'; valid executors: {', '.join(ENGINES)}")
    return SerialExecutor() if jobs == 1 else LocalProcessExecutor(jobs)
