"""Collapse-avoidance methods: a registry filled by a decorator; every module here is imported.

Adding a method is adding one file with a class decorated by `@register("name")`.
Methods combine with '+' (`anneal+word-dropout`): see `composite.py` for the rules.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
import typing
from pathlib import Path
from typing import Any

from ..core.config import parse_value
from ..core.registry import claim, import_modules
from .base import Method, MethodError, NoParams, StepOutput
from .composite import SEPARATOR, Composite

REGISTRY: dict[str, type[Method]] = {}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def register(name: str):
    """Class decorator: add a Method subclass to the registry under `name` (duplicates fail)."""
    def wrap(cls: type[Method]) -> type[Method]:
        if not _NAME.match(name):
            raise MethodError(f"method name '{name}' must be letters, digits, '-' or '_' ('+' combines methods)")
        if not dataclasses.is_dataclass(cls.Params):
            raise MethodError(f"method '{name}': Params must be a dataclass")
        claim(REGISTRY, name, cls, "method", MethodError)
        cls.name = name
        return cls
    return wrap


def method_names() -> list[str]:
    return sorted(REGISTRY)


def method_parameters(name: str) -> dict[str, Any]:
    """{parameter: default} of a registered method."""
    return {f.name: f.default for f in dataclasses.fields(REGISTRY[name].Params)}


def method_parameter_help(name: str) -> dict[str, str]:
    """{parameter: one-line help} of a registered method (from `param(default, help)` fields)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(REGISTRY[name].Params)}


def _build_one(name: str, params: dict[str, Any]) -> Method:
    if name not in REGISTRY:
        raise MethodError(f"unknown method '{name}'; valid methods: {', '.join(method_names())} "
                          f"(combine them with '{SEPARATOR}')")
    cls = REGISTRY[name]
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    hints = typing.get_type_hints(cls.Params)
    values = {}
    for key, value in params.items():
        if key not in fields:
            valid = ", ".join(fields) or "(none)"
            raise MethodError(f"unknown parameter '{key}' for method '{name}'; valid parameters: {valid}")
        if isinstance(value, str):
            value = parse_value(value, hints[key], f"{name}.{key}")
        elif hints[key] is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[key] = value
    try:
        p = cls.Params(**values)
    except (ValueError, TypeError) as exc:
        raise MethodError(f"method '{name}': {exc}") from None
    return cls(p)


def _split_params(names: list[str], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Route `part.key=value` to its part; an unprefixed key goes to the one part that has it."""
    owned = {n: set(method_parameters(n)) for n in names}
    routed: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in params.items():
        part, dot, sub = key.partition(".")
        if dot:
            if part not in routed:
                raise MethodError(f"parameter '{key}' names '{part}', which is not a part of "
                                  f"'{SEPARATOR.join(names)}'")
            routed[part][sub] = value
            continue
        owners = [n for n in names if key in owned[n]]
        if not owners:
            valid = ", ".join(f"{n}.{k}" for n in names for k in method_parameters(n)) or "(none)"
            raise MethodError(f"unknown parameter '{key}' for method '{SEPARATOR.join(names)}'; "
                              f"valid parameters: {valid}")
        if len(owners) > 1:
            raise MethodError(f"parameter '{key}' is ambiguous in '{SEPARATOR.join(names)}'; write "
                              + " or ".join(f"{n}.{key}" for n in owners))
        routed[owners[0]][key] = value
    return routed


def build_method(name: str, params: dict[str, Any] | None = None) -> Method:
    """Instantiate a method (or 'a+b' composite); params are typed values or strings from `-p key=value`."""
    params = dict(params or {})
    if SEPARATOR not in name:
        return _build_one(name, params)
    names = name.split(SEPARATOR)
    if any(not n for n in names) or len(set(names)) != len(names):
        raise MethodError(f"bad combined method '{name}': parts must be distinct method names joined by "
                          f"'{SEPARATOR}'")
    for n in names:
        if n not in REGISTRY:
            _build_one(n, {})  # raises the unknown-method error
    routed = _split_params(names, params)
    return Composite([_build_one(n, routed[n]) for n in names])


def load_plugin(path: str | Path) -> None:
    """Import a user's file that registers methods, without editing the package."""
    path = Path(path)
    if not path.is_file():
        raise MethodError(f"plugin file not found: {path}")
    module_name = f"textsvae_plugin_{path.stem}"
    loaded = sys.modules.get(module_name)
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() == path.resolve():
        return  # already imported (e.g. twice in one process): its methods are registered
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except MethodError:
        sys.modules.pop(module_name, None)
        raise
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise MethodError(f"plugin {path} failed to import: {type(exc).__name__}: {exc}") from None


import_modules(__name__, __path__, skip=("base", "composite", "context", "schedules"))

__all__ = ["Method", "NoParams", "StepOutput", "REGISTRY", "MethodError", "Composite", "register",
           "method_names", "method_parameters", "method_parameter_help", "build_method", "load_plugin"]
