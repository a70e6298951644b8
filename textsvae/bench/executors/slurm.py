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

On Slurm the driver reads job states from `squeue` (sacct needs accounting, which many clusters lack),
and a job counts as ended once Slurm says so, not when its result file appears. A job that Slurm
requeues (`scontrol requeue`, pre-emption with PreemptMode=REQUEUE, a node lost) stops on SIGTERM with
last.pt saved and runs again later, resuming its run: the driver says so in one line and waits for it,
dropping the result of the attempt that was stopped. Outside training, a job ignores SIGUSR2 (it would
end evaluation half-done); Slurm's SIGTERM at the time limit stops it.

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
import signal
import subprocess
import threading
import time
from pathlib import Path

from ...core.config import ConfigError
from . import check_settings, missing_package, register_executor
from .base import Executor, ExecutorError, in_flight

log = logging.getLogger(__name__)

DEFAULTS = {"folder": "submitit_logs", "cluster": "", "partition": "", "account": "", "gpus": 0, "cpus": 1,
            "mem_gb": 0.0, "timeout_min": 4320}
CLUSTERS = ("", "slurm", "local", "debug")
POLL_S = 0.5              # how often the driver looks for result files
QUEUE_POLL_S = 5.0        # how often it asks squeue, unless a result file just appeared
RESULT_GRACE_S = 15.0     # how long a result file may lag behind the job's end (a slow shared filesystem)

# squeue's job states: waiting to (re)start, and over; any other (RUNNING, COMPLETING, ...) is under way
QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"})
ENDED = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                   "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED"})
GONE = "GONE"             # no longer known to the controller (ended more than MinJobAge ago)


def _in_job(fn, task, slurm: bool = False):
    """What a job runs: fn(task), with the suite's INFO log lines in the job's log file. In a Slurm job, a
    SIGUSR2 that training does not catch is only logged (submitit's handler would raise wherever the job
    is, failing a run mid-evaluation)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if slurm and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR2, _time_limit_warning)
    return fn(task)


def _time_limit_warning(signum, frame) -> None:
    log.warning("SIGUSR2 (Slurm's time-limit warning) outside training: going on; if the time limit stops "
                "the job, the next bench resumes its run")


class SlurmQueue:
    """Job states from `squeue`, asked at most every QUEUE_POLL_S unless forced: {job id: (state, restarts)}."""

    def __init__(self):
        self.states: dict[str, tuple[str, int]] = {}
        self._asked = float("-inf")
        self.answering = True

    def refresh(self, job_ids: list[str], force: bool = False) -> None:
        if not job_ids or (not force and time.monotonic() - self._asked < QUEUE_POLL_S):
            return
        self._asked = time.monotonic()
        command = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}",
                   "--Format=JobID:|,State:|,RestartCnt:|"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            return self._failed(str(exc))
        if done.returncode and "Invalid job id" in done.stderr:    # none of them is known any more
            done.stdout = ""
        elif done.returncode:
            lines = done.stderr.strip().splitlines()
            return self._failed(lines[-1] if lines else f"exit status {done.returncode}")
        if not self.answering:
            log.warning("squeue answers again")
        self.answering = True
        for job_id in job_ids:
            self.states[job_id] = (GONE, self.states.get(job_id, (GONE, 0))[1])
        for line in done.stdout.splitlines():
            fields = line.split("|")
            if len(fields) >= 3 and fields[0] in self.states:
                self.states[fields[0]] = (fields[1].strip(), int(fields[2]) if fields[2].strip().isdigit() else 0)

    def _failed(self, why: str) -> None:
        if self.answering:   # once, not on every poll
            log.warning("squeue failed (%s): until it answers, a job counts as ended when its result file appears", why)
        self.answering = False


class SubmititExecutor(Executor):
    """One submitit job per task, `jobs` in flight; results in the order the jobs end."""

    def __init__(self, jobs: int, executor, cluster: str):
        self.jobs, self._executor, self.cluster = jobs, executor, cluster
        self._queue = SlurmQueue() if cluster == "slurm" else None

    def map_unordered(self, fn, tasks):
        pending, lost = {}, []
        self._restarts: dict[str, int] = {}
        self._ended_since: dict[str, float] = {}
        try:
            for job, task in in_flight(tasks, self.jobs, pending, lambda task: self._submit(fn, task),
                                       self._wait_ended, self._started):
                try:
                    result = self._result(job)
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

    def _submit(self, fn, task):
        self._executor.update_parameters(name=f"textsvae-{task}".replace(" ", "-"))
        try:
            job = self._executor.submit(_in_job, fn, task, self.cluster == "slurm")
        except Exception as exc:  # sbatch refused it (partition, account, time limit, ...)
            why = next((line.strip() for line in str(exc).splitlines() if line.strip()), repr(exc))
            raise ExecutorError(f"submitting {task} as a {self.cluster} job failed: {why}") from None
        log.info("  %s job %s: %s (logs %s)", self.cluster, job.job_id, task, job.paths.stdout)
        return job

    def _wait_ended(self, pending: dict) -> list:
        """The jobs of `pending` that are over, after a poll interval's sleep when none is yet."""
        done = self._ended(pending)
        if not done:
            time.sleep(POLL_S)
        return done

    def _ended(self, pending: dict) -> list:
        """The jobs in `pending` that are over: submitit's view (local, debug), else Slurm's (squeue)."""
        if self._queue is None:
            return [job for job in pending if job.done()]
        results = {job: _result_file(job) for job in pending}
        self._queue.refresh([job.job_id for job in pending], force=any(results.values()))
        return [job for job, task in pending.items() if self._slurm_ended(job, task, results[job])]

    def _slurm_ended(self, job, task, has_result: bool) -> bool:
        """Whether a Slurm job is over. A result file counts once Slurm says the job ended; one that is
        there while the job waits in the queue again is an earlier attempt's (requeued), and is removed."""
        if not self._queue.answering or job.job_id not in self._queue.states:
            return has_result
        state, restarts = self._queue.states[job.job_id]
        if restarts > self._restarts.get(job.job_id, 0):
            self._restarts[job.job_id] = restarts
            log.warning("slurm job %s running %s was requeued by Slurm (restart %d): waiting for it to run again",
                        job.job_id, task, restarts)
        if state in QUEUED:
            if has_result:
                job.paths.result_pickle.unlink(missing_ok=True)
            return False
        if state not in ENDED and state != GONE:
            return False
        if has_result:
            return True
        first = self._ended_since.setdefault(job.job_id, time.monotonic())
        return time.monotonic() - first >= RESULT_GRACE_S

    def _result(self, job):
        if self._queue is not None and not job.paths.result_pickle.exists():
            import submitit   # job.result() would ask sacct for the state, warning where accounting is off

            raise submitit.core.utils.UncompletedJobError(f"job {job.job_id} has no result file")
        return job.result()

    def _lost(self, job, task, exc: Exception) -> str:
        import submitit

        if isinstance(exc, submitit.core.utils.FailedJobError):
            what = f"raised {_last_trace_line(str(exc))}"
        else:  # a local job's state is its controller's, FINISHED even when the job process was killed
            state = self._queue.states.get(job.job_id, ("UNKNOWN", 0))[0] if self._queue else job.state
            what = "ended without a result" + (f" (state {state})" if state not in ("FINISHED", "UNKNOWN", GONE)
                                               else "")
        return (f"{self.cluster} job {job.job_id} running {task} {what}; logs: {job.paths.stdout}, "
                f"{job.paths.stderr}")


def _result_file(job) -> bool:
    folder = job.paths.folder
    try:
        folder.chmod(folder.stat().st_mode)   # refreshes a network filesystem's cached listing (as submitit does)
    except OSError:
        pass
    return job.paths.result_pickle.exists()


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
        raise missing_package("slurm", "submitit", "slurm") from None
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
