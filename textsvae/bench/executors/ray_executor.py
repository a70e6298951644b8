"""The Ray engine: one Ray task per run, on a local Ray instance or an existing cluster (`pip install 'textsvae[ray]'`).

Settings (`[executor]` table or `bench -E key=value`):
  address   ""  starts a local Ray instance with this machine's cores and shuts it down at the end;
            "auto" or "ray://host:port" joins a running cluster (never shut down; this driver just disconnects).
            A Ray already initialised in this process (`ray.init()` by the caller) is used as it is, and left running.
  num_cpus  CPUs Ray reserves per run (default 1). Ray does not know the run's threads: `bench --threads`
            sets torch's threads inside the task, so give num_cpus the same number to keep cores unshared.
  num_gpus  GPUs per run (default 0; a fraction shares one GPU among runs).
At most `jobs` runs are submitted at a time; a run whose Ray reservation is not free yet waits in Ray's
queue, so on a local instance at most cores // num_cpus run at once. On a cluster, every node needs this
package installed and the results folder on a shared filesystem.
"""
from __future__ import annotations

import logging
import numbers

from ...core.config import ConfigError
from . import check_settings, missing_package, register_executor
from .base import Executor, ExecutorError, available_cores, in_flight

log = logging.getLogger(__name__)

DEFAULTS = {"address": "", "num_cpus": 1.0, "num_gpus": 0.0}


def _run_quiet(fn, task):
    """In the Ray worker: quiet logging as the local engine's workers have (results come back as return
    values), then fn(task). Threads are fn's business (execute_run sets torch's from the run config)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    return fn(task)


def _lost(ray, exc: BaseException) -> bool:
    """Whether a ray.get error means the task was lost (worker or node died, cancelled, out of memory)
    rather than fn raising: a RayTaskError is fn's own exception unless it wraps one of Ray's."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        return isinstance(cause, ray.exceptions.RayError) or not isinstance(cause, Exception)
    return isinstance(exc, ray.exceptions.RayError)


class RayExecutor(Executor):
    """`jobs` runs at a time as Ray tasks, results in completion order (ray.wait)."""

    def __init__(self, ray, jobs: int, address: str, num_cpus: float, num_gpus: float):
        self.ray, self.jobs, self.address = ray, jobs, address
        self.num_cpus, self.num_gpus = num_cpus, num_gpus

    def _connect(self) -> bool:
        """Initialise Ray unless it is already; True if this call started or joined it (ours to shut down)."""
        ray = self.ray
        if ray.is_initialized():
            log.debug("ray: using the Ray already initialised in this process")
            return False
        if not self.address:
            ray.init(address="local", num_cpus=available_cores(), include_dashboard=False)  # not $RAY_ADDRESS
            cpus = ray.cluster_resources().get("CPU", 0)
            if self.num_cpus > cpus:
                ray.shutdown()
                raise ConfigError(f"executor 'ray': num_cpus={self.num_cpus:g} per run, but the local Ray "
                                  f"instance has {cpus:g} CPUs")
            return True
        try:
            ray.init(address=self.address)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ... here
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(f"executor 'ray': could not join the Ray cluster at '{self.address}': "
                              f"{message}") from None
        return True    # joined: ray.shutdown only disconnects this driver, the cluster keeps running

    def map_unordered(self, fn, tasks):
        ray = self.ray
        ours = self._connect()
        remote = ray.remote(_run_quiet).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)
        pending: dict = {}           # ObjectRef -> task

        def submit(task):
            ref = remote.remote(fn, task)
            log.debug("ray task %s: %s", ref.task_id().hex(), task)
            return ref

        try:
            for ref, task in in_flight(tasks, self.jobs, pending, submit,
                                       lambda p: ray.wait(list(p), num_returns=1)[0],   # Ctrl-C interrupts it
                                       self._started):
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - sorted by _lost
                    if not _lost(ray, exc):
                        raise
                    raise ExecutorError(f"a Ray worker was lost while running {task} ({type(exc).__name__}); "
                                        f"finished runs are kept, and the next bench resumes the others") from None
                yield result
        finally:
            for ref in pending:      # interrupted or failed: leave no run going unsupervised, holding its lock
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or its worker gone
                    pass
            if ours:
                ray.shutdown()


@register_executor("ray")
def ray_executor(jobs: int, settings: dict) -> Executor:
    """Ray tasks on a local Ray instance (address "") or a cluster (address "auto" or "ray://host:port")."""
    config = check_settings("ray", settings, DEFAULTS)
    for key in ("num_cpus", "num_gpus"):
        value = config[key]
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"executor 'ray': {key} must be a number >= 0, got '{value}'")
    if not isinstance(config["address"], str):
        raise ConfigError(f"executor 'ray': address must be a string, got '{config['address']}'")
    try:
        import ray
    except ImportError:
        raise missing_package("ray", "ray", "ray") from None
    return RayExecutor(ray, jobs, config["address"].strip(), float(config["num_cpus"]), float(config["num_gpus"]))
