"""The local engines: in this process (one job) or a pool of spawned processes on this machine."""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from . import register_executor
from .base import Executor


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


@register_executor("local")
def local_executor(jobs: int) -> Executor:
    """One job: in this process; more: a pool of that many spawned processes."""
    return SerialExecutor() if jobs == 1 else LocalProcessExecutor(jobs)
