"""The `textsvae` command line (the only module that imports click)."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from .config import ConfigError, RunConfig, apply_overrides, preset_config


class UserError(click.ClickException):
    """Printed as one line, exit code 2."""

    exit_code = 2


class Group(click.Group):
    """Turns the suite's own errors into one-line messages instead of tracebacks."""

    def invoke(self, ctx: click.Context):
        from .data.corpus import CorpusError
        from .train import RunError, TrainingDiverged

        try:
            return super().invoke(ctx)
        except (ConfigError, CorpusError, RunError) as exc:
            raise UserError(str(exc)) from None
        except TrainingDiverged as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(3)
        except KeyboardInterrupt:
            click.echo("interrupted; the run folder keeps its last checkpoint (continue with `textsvae train "
                       "--resume RUN_DIR`)", err=True)
            sys.exit(130)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
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


@cli.command()
@click.option("--data", default=None, help="Corpus: a folder, 'synthetic' (built in), ptb|yahoo|yelp, or hf:NAME.")
@click.option("--data-dir", default=None, help="Folder of named corpora (default $TEXTSVAE_DATA or a user cache).")
@click.option("--decoder", type=click.Choice(["standard", "skip", "lm"]), default=None,
              help="standard LSTM-VAE, skip (Skip-VAE), or lm (no z).")
@click.option("--preset", default="tiny", show_default=True, help="Sizes and optimiser: tiny, ptb or yahoo.")
@click.option("--method", default=None, help="Collapse-avoidance method (see `textsvae methods`).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="A method parameter.")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="Any config field, e.g. --set lr=0.5 --set latent_dim=16 (see `textsvae config`).")
@click.option("--epochs", type=int, default=None, help="Maximum epochs.")
@click.option("--seed", type=int, default=None, help="Random seed (init, data order, dropout, sampling).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--plugin", multiple=True, type=click.Path(), help="A Python file that registers more methods.")
@click.option("-o", "--out", "run_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder (default runs/<data>-<decoder>-<method>-s<seed>).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue the interrupted run in this folder.")
@click.option("--force", is_flag=True, help="Overwrite a run folder that already holds a run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def train(data, data_dir, decoder, preset, method, params, overrides, epochs, seed, device, threads, plugin,
          run_dir, resume_dir, force, as_json):
    """Train a model and print its validation metrics."""
    from .methods import load_plugin
    from .train import resume_run, train_run

    for path in plugin:
        load_plugin(path)
    if resume_dir:
        given = [n for n, v in [("--data", data), ("--decoder", decoder), ("--method", method), ("-o", run_dir),
                                ("--epochs", epochs), ("--seed", seed), ("--set", overrides), ("-p", params)] if v]
        if given:
            raise UserError(f"--resume continues a run with its saved config; drop {', '.join(given)}")
        summary = resume_run(resume_dir)
        run_dir = resume_dir
    else:
        config = preset_config(preset)
        flat: dict = {}
        for key, value in [("data", data), ("data_dir", data_dir), ("decoder", decoder), ("method", method),
                           ("epochs", epochs), ("seed", seed), ("device", device), ("threads", threads)]:
            if value is not None:
                flat[key] = value
        flat.update(_pairs(overrides, "--set"))
        config = apply_overrides(config, flat)
        method_params = {**config.train.method_params, **_pairs(params, "-p")}
        from .methods import build_method

        built = build_method(config.train.method, method_params)  # validates names and values now
        from dataclasses import asdict

        config = apply_overrides(config, {"method_params": asdict(built.params)})
        run_dir = run_dir or default_run_dir(config)
        summary = train_run(config, run_dir, force=force)
    _print_summary(summary, run_dir, as_json)


def default_run_dir(config: RunConfig) -> str:
    name = Path(config.data.data).name if config.data.data != "synthetic" else "synthetic"
    return str(Path("runs") / f"{name.replace(':', '_')}-{config.model.decoder}-{config.train.method}-s{config.train.seed}")


def _print_summary(summary: dict, run_dir: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"run_dir": str(run_dir), **summary}, indent=2, sort_keys=True, default=str))
        return
    best = summary.get("best_valid", {})
    last = summary.get("last", {})
    click.echo(f"run: {run_dir}  ({summary.get('stop_reason', '')}; {summary.get('steps')} steps, "
               f"{summary.get('train_seconds', 0):.1f}s training, {last.get('tokens_per_s', 0):.0f} tokens/s)")
    click.echo(f"best epoch {summary.get('best_epoch')} validation: " + "  ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items()))


@cli.command()
def methods():
    """List every collapse-avoidance method with its description and parameters."""
    from .methods import REGISTRY, method_names, method_parameters

    for name in method_names():
        doc = (REGISTRY[name].__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:14s} {doc}")
        for key, default in method_parameters(name).items():
            click.echo(f"{'':14s}   -p {key}={default}")


@cli.command("config")
@click.option("--preset", default="tiny", show_default=True)
def show_config(preset):
    """Print every config field of a preset (each can be set with --set FIELD=VALUE)."""
    click.echo(preset_config(preset).to_json())


@cli.group()
def data():
    """Corpus utilities."""


@data.command("fetch")
@click.argument("name")
@click.option("--from", "source", default=None, help="Install from a local folder or a mirror URL.")
@click.option("--data-dir", default=None, help="Folder of named corpora (default $TEXTSVAE_DATA or a user cache).")
@click.option("--force", is_flag=True, help="Replace files already installed.")
def fetch(name, source, data_dir, force):
    """Install corpus NAME (ptb, yahoo, yelp) with digest checks."""
    from .data.fetch import fetch_corpus

    click.echo(str(fetch_corpus(name, data_dir, source, force)))


def main() -> None:
    cli(prog_name="textsvae")


if __name__ == "__main__":
    main()
