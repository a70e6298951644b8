"""Where benchmark runs execute: an `Executor` maps a picklable top-level function over picklable tasks
and yields the results as they complete; benchmark files do not depend on which one runs them.

An executor is one module in this folder with a factory `(jobs, settings) -> Executor` decorated by
`@register_executor("name")`; every module here is imported, and `textsvae bench --executor NAME` uses it.
`settings` are the executor's own (partition, address, ...) from the benchmark file's `[executor]` table
and `bench -E key=value`, as strings or TOML values; the factory refuses keys it does not know
(`check_settings`) and an executor whose package is missing names its extra (`missing_package`).
"""
from __future__ import annotations

from typing import Any, Callable

from ...core.config import ConfigError
from ...core.registry import claim, import_modules
from .base import Executor, ExecutorError, available_cores, parse_jobs, threads_per_job

Factory = Callable[[int, dict[str, Any]], Executor]
EXECUTORS: dict[str, Factory] = {}


def register_executor(name: str):
    """Decorator: register a factory `(jobs, settings) -> Executor` under `name` (duplicates fail)."""
    def wrap(factory: Factory) -> Factory:
        claim(EXECUTORS, name, factory, "executor")
        return factory
    return wrap


def executor_names() -> tuple[str, ...]:
    return tuple(sorted(EXECUTORS))


def make_executor(jobs: int, name: str = "local", settings: dict[str, Any] | None = None) -> Executor:
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor '{name}'; valid executors: {', '.join(executor_names())}")
    return EXECUTORS[name](jobs, dict(settings or {}))


def check_settings(name: str, settings: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """The executor's settings: `known` (name -> default) updated by `settings`, each value parsed to the
    default's type when it came as a string; an unknown name is a one-line ConfigError."""
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for executor '{name}'; valid settings: "
                          f"{', '.join(sorted(known)) or '(none)'}")
    out = dict(known)
    for key, value in settings.items():
        default = known[key]
        if isinstance(value, str) and default is not None and not isinstance(default, str):
            try:
                value = type(default)(value) if not isinstance(default, bool) else value.lower() in ("1", "true", "yes")
            except ValueError:
                raise ConfigError(f"executor '{name}': {key} must be a {type(default).__name__}, "
                                  f"got '{value}'") from None
        out[key] = value
    return out


def missing_package(name: str, package: str, extra: str) -> ConfigError:
    """The one-line error for an executor whose package is not installed."""
    return ConfigError(f"executor '{name}' needs the {package} package: pip install 'textsvae[{extra}]'")


import_modules(__name__, __path__, skip=("base",))

__all__ = ["Executor", "ExecutorError", "EXECUTORS", "register_executor", "executor_names", "make_executor",
           "check_settings", "missing_package", "available_cores", "parse_jobs", "threads_per_job"]
