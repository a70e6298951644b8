"""Where benchmark runs execute: an `Executor` maps a picklable top-level function over picklable tasks
and yields the results as they complete; benchmark files do not depend on which one runs them.

An engine is one module in this folder with a factory `(jobs) -> Executor` decorated by
`@register_executor("name")`; every module here is imported, and `textsvae bench --executor NAME` uses it.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable

from ..config import ConfigError
from .base import Executor, ExecutorError, available_cores, parse_jobs, threads_per_job

EXECUTORS: dict[str, Callable[[int], Executor]] = {}


def register_executor(name: str):
    """Decorator: register a factory `(jobs) -> Executor` under `name` (duplicates fail)."""
    def wrap(factory: Callable[[int], Executor]) -> Callable[[int], Executor]:
        if name in EXECUTORS and EXECUTORS[name] is not factory:
            raise ConfigError(f"executor '{name}' is already registered by {EXECUTORS[name].__module__}")
        EXECUTORS[name] = factory
        return factory
    return wrap


def executor_names() -> tuple[str, ...]:
    return tuple(sorted(EXECUTORS))


def make_executor(jobs: int, engine: str = "local") -> Executor:
    if engine not in EXECUTORS:
        raise ConfigError(f"unknown executor '{engine}'; valid executors: {', '.join(executor_names())}")
    return EXECUTORS[engine](jobs)


def _import_all() -> None:
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()

__all__ = ["Executor", "ExecutorError", "EXECUTORS", "register_executor", "executor_names", "make_executor", "available_cores",
           "parse_jobs", "threads_per_job"]
