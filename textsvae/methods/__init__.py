"""Collapse-avoidance methods: a registry filled by a decorator; every module here is imported.

Adding a method is adding one file with a class decorated by `@register("name")`.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
import sys
import typing
from pathlib import Path
from typing import Any

from ..config import ConfigError, parse_value
from .base import Method, NoParams, StepOutput

REGISTRY: dict[str, type[Method]] = {}


class MethodError(ConfigError):
    """Unknown method or parameter, or a bad parameter value (one line for the user)."""


def register(name: str):
    """Class decorator: add a Method subclass to the registry under `name` (duplicates fail)."""
    def wrap(cls: type[Method]) -> type[Method]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise MethodError(f"method '{name}' is already registered by {REGISTRY[name].__module__}")
        if not dataclasses.is_dataclass(cls.Params):
            raise MethodError(f"method '{name}': Params must be a dataclass")
        cls.name = name
        REGISTRY[name] = cls
        return cls
    return wrap


def method_names() -> list[str]:
    return sorted(REGISTRY)


def method_parameters(name: str) -> dict[str, Any]:
    """{parameter: default} of a method."""
    return {f.name: f.default for f in dataclasses.fields(REGISTRY[name].Params)}


def build_method(name: str, params: dict[str, Any] | None = None) -> Method:
    """Instantiate a method; params are typed values or strings from `-p key=value`."""
    if name not in REGISTRY:
        raise MethodError(f"unknown method '{name}'; valid methods: {', '.join(method_names())}")
    cls = REGISTRY[name]
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    hints = typing.get_type_hints(cls.Params)
    values = {}
    for key, value in (params or {}).items():
        if key not in fields:
            valid = ", ".join(fields) or "(none)"
            raise MethodError(f"unknown parameter '{key}' for method '{name}'; valid parameters: {valid}")
        values[key] = parse_value(value, hints[key], f"{name}.{key}") if isinstance(value, str) else value
    try:
        p = cls.Params(**values)
    except (ValueError, TypeError) as exc:
        raise MethodError(f"method '{name}': {exc}") from None
    return cls(p)


def load_plugin(path: str | Path) -> None:
    """Import a user's file that registers methods, without editing the package."""
    path = Path(path)
    if not path.is_file():
        raise MethodError(f"plugin file not found: {path}")
    module_name = f"textsvae_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except MethodError:
        raise
    except Exception as exc:
        raise MethodError(f"plugin {path} failed to import: {type(exc).__name__}: {exc}") from None


def _import_all() -> None:
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()

__all__ = ["Method", "NoParams", "StepOutput", "REGISTRY", "MethodError", "register", "method_names",
           "method_parameters", "build_method", "load_plugin"]
