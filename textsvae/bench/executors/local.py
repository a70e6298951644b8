"""The local engines: in this process (one job) or a pool of spawned processes on this machine."""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ...core.config import ConfigError
from . import check_settings, register_executor
from .base import Executor, ExecutorError, in_flight


class SerialExecutor(Executor):
    """Runs tasks one after another in this process (jobs = 1; easiest to debug)."""

    in_process = True

    def map_unordered(self, fn, tasks):
        for task in tasks:
            self._started(task)
            yield fn(task)


PR_SET_PDEATHSIG = 1      # prctl(2): the signal this process gets when the thread that made it exits
PARENT_POLL_S = 1.0


def _worker_init(parent: int, gpus: tuple[str, ...] = (), counter=None) -> None:
    """A fresh (spawned) worker: quiet logging (results come back as return values), and it ends with
    its parent: a `bench` killed outright leaves no worker running unsupervised, holding its run's lock.
    The run then resumes from its last checkpoint, and its lock (a dead pid) is taken over.
    With `gpus`, worker i sees only GPU gpus[i mod len(gpus)] (CUDA_VISIBLE_DEVICES, set before torch
    is imported), so several jobs share a GPU when there are more jobs than GPUs."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if gpus:
        with counter.get_lock():
            index, counter.value = counter.value, counter.value + 1
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:           # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()   # where prctl does not exist


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


class LocalProcessExecutor(Executor):
    """A pool of `jobs` spawned processes on this machine; with `gpus`, each worker has its own GPU."""

    def __init__(self, jobs: int, gpus: tuple[str, ...] = ()):
        self.jobs, self.gpus = jobs, gpus

    def map_unordered(self, fn, tasks):
        context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
        counter = context.Value("i", 0)
        pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=context, initializer=_worker_init,
                                   initargs=(os.getpid(), self.gpus, counter))
        pending: dict[Future, object] = {}
        try:
            for future, task in in_flight(tasks, self.jobs, pending, lambda task: pool.submit(fn, task),
                                          lambda p: wait(p, return_when=FIRST_COMPLETED)[0], self._started):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise ExecutorError(f"a worker process died while running {task}; finished runs are "
                                        f"kept, and the next bench resumes the others") from None
                yield result
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


@register_executor("local")
def local_executor(jobs: int, settings: dict) -> Executor:
    """One job: in this process; more, or any `gpus` ("0,1,2,3"): a pool of that many spawned processes."""
    gpus = str(check_settings("local", settings, {"gpus": ""})["gpus"])
    devices = tuple(g.strip() for g in gpus.split(",") if g.strip())
    if any(not g.isdigit() for g in devices):
        raise ConfigError(f"executor 'local': gpus must be GPU indices like 0,1,2,3, got '{gpus}'")
    return SerialExecutor() if jobs == 1 and not devices else LocalProcessExecutor(jobs, devices)
