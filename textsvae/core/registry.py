"""What the name registries (methods, trackers, executors) share: a name claimed once, and every module
of the registry's folder imported so that its decorators run."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Iterable, TypeVar

from .config import ConfigError

T = TypeVar("T")


def claim(registry: dict[str, T], name: str, entry: T, kind: str, error: type[Exception] = ConfigError,
          owner: Callable[[T], object] = lambda entry: entry) -> None:
    """registry[name] = entry. Registering the same owner again (a module imported twice) is a no-op;
    another owner under a taken name fails in one line naming the module that holds it."""
    held = registry.get(name)
    if held is not None and owner(held) is not owner(entry):
        raise error(f"{kind} '{name}' is already registered by {owner(held).__module__}")
    registry[name] = entry


def import_modules(package: str, folders: Iterable[str], skip: Iterable[str] = ()) -> None:
    """Import every module of `package` (its `__path__`, `folders`) except `skip`: each registers itself."""
    skip = set(skip)
    for info in pkgutil.iter_modules(list(folders)):
        if info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
