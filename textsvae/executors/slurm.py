"""The Slurm engine, through submitit: one Slurm job per task, at most `jobs` of them queued or running.

Jobs are submitted lazily (a new one when one ends), so `bench` progress shows real submissions and
`jobs` bounds what the grid holds of the cluster; the driver (`textsvae bench` on the login node) must
keep running to submit the rest. A job's log files and pickles go to `folder`.

Settings (`-E key=value` or the benchmark's `[executor]` table):
  folder       where submitit writes each job's logs and pickles (default submitit_logs, relative to
               the working directory)
  cluster      "" (default): Slurm where `srun` exists, else this machine; "slurm"; "local": each job a
               process on this machine (submitit's LocalExecutor, the same code path without Slurm);
               "debug": each job in this process, one at a time
  partition, account   Slurm's --partition and --account ("" = the cluster's default)
  gpus         GPUs per job (0)
  cpus         CPUs per task (1); pass `bench --threads` to match
  mem_gb       memory per job in GB (0 = the cluster's default)
  timeout_min  the time limit (4320 = 3 days); submitit asks Slurm for SIGUSR2 90 s before it, and the
               run stops after its current step, saves last.pt and is resumed by the next `bench`

A job that ends without a result (cancelled, killed, out of memory, its node lost) or whose function
raised is an ExecutorError naming the task, the job id and its log files, raised once the other jobs
are done; runs already finished keep their rows, and the next `bench` resumes the others. If the
driver stops (Ctrl-C, an error), the jobs it still has in flight are cancelled (Slurm sends them SIGTERM:
they save last.pt). A driver killed outright (SIGKILL) leaves its jobs running; their runs' locks keep a
second `bench` from running them twice.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from ..config import ConfigError
from . import check_settings, missing_engine, register_executor
from .base import Executor, ExecutorError

log = logging.getLogger(__name__)

DEFAULTS = {"folder": "submitit_logs", "cluster": "", "partition": "", "account": "", "gpus": 0, "cpus": 1,
            "mem_gb": 0.0, "timeout_min": 4320}
CLUSTERS = ("", "slurm", "local", "debug")
POLL_S = 0.5


def _in_job(fn, task):
    """What a job runs: fn(task), with the suite's INFO log lines in the job's log file."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return fn(task)


class SubmititExecutor(Executor):
    """One submitit job per task, `jobs` in flight; results in the order the jobs end."""

    def __init__(self, jobs: int, executor, cluster: str):
        self.jobs, self._executor, self.cluster = jobs, executor, cluster

    def map_unordered(self, fn, tasks):
        queue, pending, lost = list(tasks), {}, []
        try:
            while queue or pending:
                while queue and len(pending) < self.jobs:
                    task = queue.pop(0)
                    self._executor.update_parameters(name=f"textsvae-{task}".replace(" ", "-"))
                    try:
                        job = self._executor.submit(_in_job, fn, task)
                    except Exception as exc:  # sbatch refused it (partition, account, time limit, ...)
                        why = next((line.strip() for line in str(exc).splitlines() if line.strip()), repr(exc))
                        raise ExecutorError(f"submitting {task} as a {self.cluster} job failed: {why}") from None
                    pending[job] = task
                    log.info("  %s job %s: %s (logs %s)", self.cluster, job.job_id, task, job.paths.stdout)
                    self._started(task)
                done = [job for job in pending if job.done()]
                if not done:
                    time.sleep(POLL_S)
                for job in done:
                    task = pending.pop(job)
                    try:
                        result = job.result()
                    except Exception as exc:  # submitit's UncompletedJobError / FailedJobError
                        lost.append(self._lost(job, task, exc))
                        log.error("%s", lost[-1])
                        continue
                    yield result
        finally:
            if pending:  # the driver stops early: its jobs would run on unsupervised
                log.warning("cancelling %s job(s) %s", self.cluster, ", ".join(j.job_id for j in pending))
                for job in pending:
                    job.cancel(check=False)
        if lost:
            more = f" ({len(lost) - 1} more job(s) lost, see the log)" if len(lost) > 1 else ""
            raise ExecutorError(f"{lost[0]}{more}; finished runs are kept, and the next bench resumes the others")

    def _lost(self, job, task, exc: Exception) -> str:
        import submitit

        if isinstance(exc, submitit.core.utils.FailedJobError):
            what = f"raised {_last_trace_line(str(exc))}"
        else:  # a local job's state is its controller's, FINISHED even when the job process was killed
            state = job.state
            what = "ended without a result" + (f" (state {state})" if state not in ("FINISHED", "UNKNOWN") else "")
        return (f"{self.cluster} job {job.job_id} running {task} {what}; logs: {job.paths.stdout}, "
                f"{job.paths.stderr}")


def _last_trace_line(message: str) -> str:
    """The exception line of the traceback that submitit puts between two lines of dashes."""
    lines = [line.strip() for line in message.splitlines()]
    dashes = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    body = lines[dashes[0] + 1:dashes[1]] if len(dashes) >= 2 else lines
    return next((line for line in reversed(body) if line), "an exception")


@register_executor("slurm")
def slurm_executor(jobs: int, settings: dict) -> Executor:
    """Each task a Slurm job through submitit (see the module docstring for the settings)."""
    s = check_settings("slurm", settings, DEFAULTS)
    if s["cluster"] not in CLUSTERS:
        raise ConfigError(f"executor 'slurm': cluster must be one of slurm, local, debug or empty (auto), "
                          f"got '{s['cluster']}'")
    try:
        import submitit
    except ImportError:
        raise missing_engine("slurm", "submitit", "slurm") from None
    cluster = s["cluster"] or submitit.AutoExecutor.which()
    if cluster == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise ConfigError("executor 'slurm': no sbatch or srun on this machine; -E cluster=local runs the jobs here")
    executor = submitit.AutoExecutor(folder=Path(s["folder"]), cluster=cluster)
    params = {"timeout_min": int(s["timeout_min"]), "cpus_per_task": int(s["cpus"]), "tasks_per_node": 1,
              "nodes": 1}
    if int(s["gpus"]):
        params["gpus_per_node"] = int(s["gpus"])
    if float(s["mem_gb"]):
        params["mem_gb"] = float(s["mem_gb"])
    for key in ("partition", "account"):
        if s[key]:
            params[f"slurm_{key}"] = str(s[key])
    executor.update_parameters(**params)
    return SubmititExecutor(jobs, executor, cluster)
