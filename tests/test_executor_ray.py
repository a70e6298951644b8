"""The Ray engine (`textsvae[ray]`): one local Ray instance for the module (2 CPUs), which the engine
finds initialised and uses without shutting it down; real tiny runs give the local engine's numbers."""
from __future__ import annotations

import operator
import sys

import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")

from textsvae.bench.executors import ExecutorError, make_executor  # noqa: E402
from textsvae.bench.grid import load_benchmark  # noqa: E402
from textsvae.bench.results import load_results  # noqa: E402
from textsvae.bench.runner import run_benchmark  # noqa: E402
from textsvae.cli import cli  # noqa: E402
from textsvae.core.config import ConfigError  # noqa: E402

# three real (tiny) runs: 2 optimiser steps on 100 synthetic sentences, K = 2, two splits
TINY3 = """
description = "tiny ray benchmark"
preset = "tiny"
seeds = [0, 1, 2]
decoders = ["standard"]
eval_splits = ["test", "valid"]
metrics = ["iw_nll", "kl", "mi", "au", "ppl"]
[settings]
synthetic_train = 100
epochs = 1
max_steps = 2
iw_samples = 2
monitor_size = 10
[[methods]]
method = "vae"
"""


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local Ray instance for every test here; the engine must use it and leave it running."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()


def test_ray_maps_every_task_and_leaves_a_caller_s_ray_running():
    executor = make_executor(2, "ray", {})
    started = []
    executor.on_start(started.append)
    assert sorted(executor.map_unordered(operator.neg, [1, 2, 3, 4])) == [-4, -3, -2, -1]
    assert sorted(started) == [1, 2, 3, 4]
    assert ray.is_initialized()


def test_a_dead_worker_is_one_line_naming_the_task():
    import os

    with pytest.raises(ExecutorError, match=r"^a Ray worker was lost while running 3 \(WorkerCrashedError\); "
                       r"finished runs are kept"):
        list(make_executor(1, "ray", {}).map_unordered(os._exit, [3]))      # the worker exits with status 3
    assert ray.is_initialized()


class FakeRay:
    """Enough of Ray's API to watch the engine start, cancel and shut down (real Ray: ~15 s to start)."""

    exceptions = ray.exceptions

    def __init__(self, initialised: bool):
        self.initialised, self.calls, self.results = initialised, [], {}

    def is_initialized(self):
        return self.initialised

    def init(self, address=None, **kwargs):
        self.initialised = True
        self.calls.append(("init", address))

    def shutdown(self):
        self.initialised = False
        self.calls.append(("shutdown",))

    def cluster_resources(self):
        return {"CPU": 2.0}

    def remote(self, fn):
        fake = self

        class Ref(int):
            def task_id(self):
                return bytes([self])

        class Remote:
            def options(self, **kwargs):
                return self

            def remote(self, f, task):
                ref = Ref(len(fake.results))
                fake.results[ref] = fn(f, task)
                return ref
        return Remote()

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return self.results[ref]

    def cancel(self, ref, force):
        self.calls.append(("cancel", int(ref)))


def test_the_engine_shuts_down_only_the_ray_it_started_and_cancels_on_interrupt():
    from textsvae.bench.executors.ray_executor import RayExecutor

    fake = FakeRay(initialised=False)                    # address "": a local instance, ours to stop
    assert sorted(RayExecutor(fake, 2, "", 1.0, 0.0).map_unordered(operator.neg, [1, 2, 3])) == [-3, -2, -1]
    assert fake.calls == [("init", "local"), ("shutdown",)]
    fake = FakeRay(initialised=False)                    # interrupted after the first result
    results = RayExecutor(fake, 2, "", 1.0, 0.0).map_unordered(operator.neg, [1, 2, 3])
    assert next(results) == -1
    results.close()
    assert fake.calls == [("init", "local"), ("cancel", 1), ("shutdown",)]
    fake = FakeRay(initialised=False)                    # a cluster joined: this driver disconnects
    assert list(RayExecutor(fake, 1, "auto", 1.0, 0.0).map_unordered(operator.neg, [1])) == [-1]
    assert fake.calls == [("init", "auto"), ("shutdown",)]
    fake = FakeRay(initialised=True)                     # the caller's Ray: used, never shut down
    assert list(RayExecutor(fake, 1, "", 1.0, 0.0).map_unordered(operator.neg, [1])) == [-1]
    assert fake.calls == [] and fake.initialised
    with pytest.raises(ConfigError, match="num_cpus=4 per run, but the local Ray instance has 2 CPUs"):
        next(RayExecutor(FakeRay(initialised=False), 1, "", 4.0, 0.0).map_unordered(operator.neg, [1]))


def test_a_tiny_grid_under_ray_gives_the_local_rows(tmp_path, write_bench):
    bdir = write_bench(tmp_path / "b", "tiny3", TINY3)
    bench = load_benchmark("tiny3", bdir)
    assert len(bench.runs) == 3
    report = run_benchmark(bench, tmp_path / "ray", jobs=2, threads=1, executor="ray")
    assert len(report.finished) == 3 and not report.failed and not report.busy
    run_benchmark(bench, tmp_path / "local", jobs=2, threads=1, executor="local")
    key = ["run_id", "split", "metric"]
    on_ray, local = (load_results(tmp_path / name).sort_values(key).reset_index(drop=True)[key + ["value"]]
                     for name in ("ray", "local"))
    assert set(on_ray.run_id) == {r.run_id for r in bench.runs} and set(on_ray.split) == {"test", "valid"}
    assert on_ray.equals(local)      # deterministic on CPU: exactly the same numbers


def test_cli_bench_on_ray_prints_the_table(tmp_path, write_bench):
    one = TINY3.replace("seeds = [0, 1, 2]", "seeds = [0]").replace('["test", "valid"]', '["test"]')
    bdir = write_bench(tmp_path / "b", "tiny1", one)
    out = CliRunner().invoke(cli, ["bench", "tiny1", "--benchmarks-dir", str(bdir), "--results",
                                   str(tmp_path / "r"), "--threads", "1", "--jobs", "1", "--executor", "ray"])
    assert out.exit_code == 0, out.output
    assert "tiny1: 1 run(s) finished" in out.output and "| vae | standard | 1 |" in out.output


def test_bad_settings_and_missing_ray_are_one_line(tmp_path, monkeypatch):
    out = CliRunner().invoke(cli, ["bench", "quick", "--executor", "ray", "-E", "nope=1", "--results",
                                   str(tmp_path / "r")])
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1, out.output
    assert "unknown setting(s) nope for executor 'ray'; valid settings: address, num_cpus, num_gpus" in out.output
    with pytest.raises(ConfigError, match="num_cpus must be a number >= 0"):
        make_executor(1, "ray", {"num_cpus": "-1"})
    monkeypatch.setitem(sys.modules, "ray", None)      # `import ray` fails as it does without the extra
    with pytest.raises(ConfigError, match=r"executor 'ray' needs the ray package: pip install 'textsvae\[ray\]'"):
        make_executor(2, "ray", {})
