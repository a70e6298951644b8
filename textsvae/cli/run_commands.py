"""Commands on one run: train, eval, methods, config, data fetch."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..core.config import RunConfig, apply_overrides, preset_config
from ..core.decoders import decoder_names
from .app import UserError, cli, pairs


@cli.command()
@click.option("--data", default=None, help="Corpus: a folder, 'synthetic' (built in), ptb|yahoo|yelp, or hf:NAME.")
@click.option("--data-dir", default=None, help="Folder of named corpora (default $TEXTSVAE_DATA or a user cache).")
@click.option("--decoder", type=click.Choice(decoder_names()), default=None,
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
@click.option("--track", default=None, metavar="NAMES",
              help="Experiment trackers, comma-separated: tensorboard, mlflow, wandb (their extras).")
@click.option("-o", "--out", "run_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder (default runs/<data>-<decoder>-<method>-s<seed>).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None,
              help="Continue the interrupted run in this folder.")
@click.option("--force", is_flag=True, help="Overwrite a run folder that already holds a run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def train(data, data_dir, decoder, preset, method, params, overrides, epochs, seed, device, threads, plugin,
          track, run_dir, resume_dir, force, as_json):
    """Train a model and print its validation metrics."""
    from ..methods import load_plugin
    from ..training.train import resume_run, train_run

    for path in plugin:
        load_plugin(path)
    if resume_dir:
        given = [n for n, v in [("--data", data), ("--decoder", decoder), ("--method", method), ("-o", run_dir),
                                ("--epochs", epochs), ("--seed", seed), ("--set", overrides), ("-p", params)] if v]
        if given:
            raise UserError(f"--resume continues a run with its saved config; drop {', '.join(given)}")
        execution = {k: v for k, v in (("device", device), ("threads", threads), ("track", track)) if v is not None}
        summary = resume_run(resume_dir, execution)
        run_dir = resume_dir
    else:
        config = preset_config(preset)
        flat: dict = {}
        for key, value in [("data", data), ("data_dir", data_dir), ("decoder", decoder), ("method", method),
                           ("epochs", epochs), ("seed", seed), ("device", device), ("threads", threads),
                           ("track", track)]:
            if value is not None:
                flat[key] = value
        flat.update(pairs(overrides, "--set"))
        config = apply_overrides(config, flat)
        method_params = {**config.train.method_params, **pairs(params, "-p")}
        from ..methods import build_method

        built = build_method(config.train.method, method_params)  # validates names and values now
        config = apply_overrides(config, {"method_params": built.param_values()})  # 'part.key' for a+b
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
@click.option("--plugin", multiple=True, type=click.Path(), help="A Python file that registers more methods.")
def methods(plugin):
    """List every collapse-avoidance method with its description and parameters."""
    from ..methods import REGISTRY, load_plugin, method_names, method_parameter_help, method_parameters

    for path in plugin:
        load_plugin(path)
    for name in method_names():
        cls = REGISTRY[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        click.echo(f"{name:14s} {doc}" + ("" if cls.needs_latent else "  [also with --decoder lm]"))
        helps = method_parameter_help(name)
        for key, default in method_parameters(name).items():
            click.echo(f"{'':14s}   -p {f'{key}={default}':22s} {helps[key]}".rstrip())
    click.echo("\nCombine methods with '+', e.g. --method anneal+word-dropout -p anneal.start=0 -p rate=0.3: each "
               "part owns the hooks it overrides (two owners of one hook is an error); a parameter is "
               "'part.key', or just 'key' when one part has it.")


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
    from ..data.fetch import fetch_corpus

    click.echo(str(fetch_corpus(name, data_dir, source, force)))


@cli.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("-k", "--iw-samples", type=int, default=None,
              help="Importance samples K for IW-NLL (default: the run's eval.iw_samples, 500).")
@click.option("--mi-batch", type=int, default=None,
              help="Also report He et al.'s per-minibatch MI: their batches of one sentence length, at most "
                   "this many sentences each (they used 32).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--workers", type=int, default=None,
              help="Processes scoring IW-NLL on the CPU, sharing the threads (default: the run's eval.workers, 1).")
@click.option("--recon", is_flag=True,
              help="Also report greedy reconstructions of the posterior mean against the inputs: corpus BLEU "
                   "(recon_bleu, 0-100) and token accuracy (recon_acc, 0-1).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="Autocast precision of the evaluation (default: the run's eval.eval_precision); a result in "
                   "another precision than the run's is saved as eval_<split>_k<K>_<precision>.json.")
@click.option("--plugin", multiple=True, type=click.Path(),
              help="A Python file that registers more methods (the one the run was trained with).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(run_dir, split, iw_samples, mi_batch, device, threads, workers, precision, recon, plugin, as_json):
    """Evaluate a run's best model on a split; saves RUN_DIR/eval_<split>_k<K>.json."""
    from ..evaluation.run_eval import evaluate_run, format_metrics
    from ..methods import load_plugin

    for path in plugin:
        load_plugin(path)

    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    if mi_batch is not None and mi_batch < 2:
        raise UserError(f"--mi-batch must be >= 2, got {mi_batch}")
    result = evaluate_run(run_dir, split=split, iw_samples=iw_samples, device=device, mi_batch=mi_batch or False,
                          workers=workers, recon=recon, precision=precision)
    _track_evaluation(Path(run_dir), split, result)
    click.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else format_metrics(result))


def _track_evaluation(run_dir: Path, split: str, metrics: dict) -> None:
    """A tracked run's evaluation goes to its trackers too, at its last training step."""
    from ..core.rundir import read_run_config, read_summary

    config = read_run_config(run_dir)
    if config.train.track:
        from ..trackers import log_evaluation

        summary = read_summary(run_dir)
        log_evaluation(config, run_dir, {split: metrics}, int(summary.get("steps", 0)))
