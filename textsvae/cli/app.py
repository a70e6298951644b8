"""The `textsvae` group, its one-line errors and the helpers every command module shares."""
from __future__ import annotations

import logging
import sys

import click

from ..core.config import ConfigError


class UserError(click.ClickException):
    """Printed as one line, exit code 2."""

    exit_code = 2


class Group(click.Group):
    """Turns the suite's own errors into one-line messages instead of tracebacks."""

    def invoke(self, ctx: click.Context):
        from ..bench.executors import ExecutorError
        from ..core.rundir import RunError
        from ..data.corpus import CorpusError
        from ..kernels.device import DeviceError
        from ..training.train import TrainingDiverged

        try:
            return super().invoke(ctx)
        except (ConfigError, CorpusError, RunError, DeviceError) as exc:
            raise UserError(_one_line(str(exc))) from None
        except TrainingDiverged as exc:
            click.echo(f"Error: {_one_line(str(exc))}", err=True)
            sys.exit(3)
        except ExecutorError as exc:       # a worker lost: finished runs are kept
            click.echo(f"Error: {_one_line(str(exc))}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            raise
        except OSError as exc:  # unwritable output folder, full disk, ...: the system's reason, one line
            where = f": {exc.filename}" if exc.filename else ""
            error = click.ClickException(_one_line(f"{exc.strerror or exc}{where}"))
            raise error from None
        except KeyboardInterrupt:
            click.echo("interrupted; the run folder keeps its last checkpoint (continue with `textsvae train "
                       "--resume RUN_DIR`)", err=True)
            sys.exit(130)


def _one_line(message: str) -> str:
    return " ".join(message.split("\n"))


def pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """('k=v', ...) from a repeated KEY=VALUE option -> {k: v}; a malformed item is a one-line error."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{option} expects key=value, got '{item}'")
        out[key.strip()] = value.strip()
    return out


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="textsvae")
def cli(verbose: bool) -> None:
    """Text VAEs with LSTM decoders (standard and Skip-VAE) and posterior-collapse baselines."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)

