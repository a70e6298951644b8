"""`textsvae` with each run's VAE training steps slowed and logged, for the tests against a real Slurm:
a job then trains long enough to be requeued, cancelled or timed out mid-run, and the log shows which
steps each job process trained (a step trained twice means a run restarted or ran twice).

    python tests/slurm_driver.py STEP_LOG SECONDS_PER_STEP bench NAME ...   (then textsvae's arguments)

Each step appends `run_id step pid` to STEP_LOG, then sleeps; the numbers trained do not change.
"""
from __future__ import annotations

import functools
import sys


def slowed_execute_run(task, execute_run, step_log: str, seconds: float):
    """execute_run(task), with every VAE step of the run logged to step_log and followed by a sleep."""
    import os
    import time

    from textsvae.methods import REGISTRY

    vae = REGISTRY["vae"]
    original = vae.train_step

    def step(self, trainer, batch, beta):
        out = original(self, trainer, batch, beta)
        with open(step_log, "a") as f:
            f.write(f"{task.spec.run_id} {trainer.state.step} {os.getpid()}\n")
        time.sleep(seconds)
        return out

    vae.train_step = step
    try:
        return execute_run(task)
    finally:
        vae.train_step = original


def trained_steps(step_log) -> dict[str, list[tuple[int, int]]]:
    """{run id: [(step, pid), ...]} in the order STEP_LOG has them."""
    out: dict[str, list[tuple[int, int]]] = {}
    for line in open(step_log).read().splitlines():
        run, step, pid = line.split()
        out.setdefault(run, []).append((int(step), int(pid)))
    return out


def main(argv: list[str]) -> None:
    from textsvae.bench import runner
    from textsvae.cli import main as cli_main

    step_log, seconds = argv[0], float(argv[1])
    runner.execute_run = functools.partial(slowed_execute_run, execute_run=runner.execute_run, step_log=step_log,
                                          seconds=seconds)
    sys.argv = ["textsvae", *argv[2:]]
    cli_main()


if __name__ == "__main__":
    main(sys.argv[1:])
