"""The `textsvae` command line (the only package that imports click): the group in `app`, one module per
kind of command, each registering its commands on the group when imported."""
from __future__ import annotations

from . import bench_commands, compare_commands, generate_commands, run_commands  # noqa: F401  (they register the commands)
from .app import UserError, cli
from .generate_commands import DECODE_OPTIONS


def main() -> None:
    cli(prog_name="textsvae")


__all__ = ["cli", "main", "UserError", "DECODE_OPTIONS"]
