"""The `textsvae` command line (the only module that imports click)."""
from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from .config import ConfigError, RunConfig, apply_overrides, preset_config
from .decoders import decoder_names
from .executors import executor_names


class UserError(click.ClickException):
    """Printed as one line, exit code 2."""

    exit_code = 2


class Group(click.Group):
    """Turns the suite's own errors into one-line messages instead of tracebacks."""

    def invoke(self, ctx: click.Context):
        from .data.corpus import CorpusError
        from .device import DeviceError
        from .executors import ExecutorError
        from .rundir import RunError
        from .train import TrainingDiverged

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
    from .methods import load_plugin
    from .train import resume_run, train_run

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
        flat.update(_pairs(overrides, "--set"))
        config = apply_overrides(config, flat)
        method_params = {**config.train.method_params, **_pairs(params, "-p")}
        from .methods import build_method

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
    from .methods import REGISTRY, load_plugin, method_names, method_parameter_help, method_parameters

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
    from .data.fetch import fetch_corpus

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
@click.option("--plugin", multiple=True, type=click.Path(),
              help="A Python file that registers more methods (the one the run was trained with).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(run_dir, split, iw_samples, mi_batch, device, threads, workers, recon, plugin, as_json):
    """Evaluate a run's best model on a split; saves RUN_DIR/eval_<split>_k<K>.json."""
    from .evaluation import evaluate_run, format_metrics
    from .methods import load_plugin

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
                          workers=workers, recon=recon)
    _track_evaluation(Path(run_dir), split, result)
    click.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else format_metrics(result))


def _track_evaluation(run_dir: Path, split: str, metrics: dict) -> None:
    """A tracked run's evaluation goes to its trackers too, at its last training step."""
    from .rundir import read_run_config

    config = read_run_config(run_dir)
    if config.train.track:
        from .trackers import log_evaluation

        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
        log_evaluation(config, run_dir, {split: metrics}, int(summary.get("steps", 0)))


@cli.command()
@click.argument("name", required=False)
@click.option("-j", "--jobs", default="auto", show_default=True,
              help="Runs in parallel, as separate processes (threads per job = cores // jobs); 'auto': "
                   "min(cores, runs) on a CPU, 1 on a GPU.")
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default=None,
              help="Results folder (default runs/bench).")
@click.option("--benchmarks-dir", type=click.Path(file_okay=False), default=None,
              help="Extra folder of benchmark files (default: ./benchmarks and the repo's benchmarks/).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per run (default cores // jobs).")
@click.option("--retry-failed", is_flag=True, help="Run again the runs that failed before.")
@click.option("--executor", "engine", type=click.Choice(executor_names()), default=None,
              help="Where the runs execute (textsvae/executors/); default: the benchmark's [executor] name, or local.")
@click.option("-E", "--executor-setting", "engine_settings", multiple=True, metavar="KEY=VALUE",
              help="An engine setting (partition, gpus, address, ...), over the benchmark's [executor] table.")
@click.option("--dry-run", is_flag=True, help="List the grid and what is missing; run nothing.")
@click.option("--status", "show_status", is_flag=True,
              help="The grid's state from the results folder alone (finished, running, failed, left); run nothing.")
@click.option("--track", default=None, metavar="NAMES",
              help="Experiment trackers for every run, comma-separated: tensorboard, mlflow, wandb; the benchmark "
                   "is the project, runs are named by run id and grouped by method/decoder.")
def bench(name, jobs, results_dir, benchmarks_dir, threads, retry_failed, engine, engine_settings, dry_run,
          show_status, track):
    """Run benchmark NAME's missing runs (resuming half-done ones), then print its table.

    Without NAME, list the benchmarks found.
    """
    from .bench import DEFAULT_RESULTS, run_benchmark, run_status
    from .grid import list_benchmarks, load_benchmark
    from .results import build_table, load_results, render

    if not name:
        for bench_name, path in list_benchmarks(benchmarks_dir).items():
            click.echo(f"{bench_name:14s} {path}")
        return
    spec = load_benchmark(name, benchmarks_dir)
    results = Path(results_dir or DEFAULT_RESULTS)
    if show_status:
        from .status import status_text

        click.echo(status_text(spec, results))
        return
    if dry_run:
        for run in spec.runs:
            click.echo(f"{run.run_id}  {run_status(results / run.run_id):8s} {run.dataset} {run.decoder} "
                       f"{run.label} seed {run.seed}")
        return
    try:
        table = dict(spec.executor)
        chosen = engine or table.pop("name", "local")
        if engine and table.pop("name", engine) != engine:   # another engine's settings do not apply
            table = {}
        table.update(_pairs(engine_settings, "-E"))
        report = run_benchmark(spec, results, jobs, retry_failed, engine=chosen, threads=threads, settings=table,
                               track=track)
    except KeyboardInterrupt:
        click.echo(f"interrupted; finished runs are kept and half-done ones resume: run `textsvae bench {name}` "
                   f"again", err=True)
        sys.exit(130)
    if not report.finished and not report.busy and report.already_done == report.total:
        click.echo(f"{spec.name}: nothing to do, all {report.total} runs are finished in {results}")
    else:
        click.echo(f"{spec.name}: {len(report.finished)} run(s) finished in {report.seconds:.0f}s with "
                   f"{report.jobs} job(s); {report.already_done} were done before; {len(report.failed)} failed; "
                   f"{len(report.busy)} not finished (held by another process or interrupted)")
    click.echo("")
    click.echo(render(build_table(load_results(results), spec.runs, spec.metrics, spec.reported), "md"))
    for run, message in report.busy:
        click.echo(f"busy: {run.run_id} {run.dataset} {run.decoder} {run.label} seed {run.seed}: {message}", err=True)
    for run, message in report.failed:
        click.echo(f"FAILED: {run.run_id} {run.dataset} {run.decoder} {run.label} seed {run.seed}: {message}",
                   err=True)
    if report.busy:
        click.echo(f"{len(report.busy)} run(s) not finished: held by another process or interrupted; run "
                   f"`textsvae bench {name}` again to finish them", err=True)
    if report.failed or report.busy:
        sys.exit(1)


@cli.command()
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default=None,
              help="Results folder (default runs/bench).")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
def results(results_dir, split):
    """Load the results store (tidy rows) and print a summary."""
    from .bench import DEFAULT_RESULTS
    from .results import load_results, summary_text

    df = load_results(results_dir or DEFAULT_RESULTS)
    click.echo(f"{len(df)} rows, {df.run_id.nunique()} runs in {results_dir or DEFAULT_RESULTS}")
    click.echo(summary_text(df, split))


@cli.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["md", "latex", "csv"]), default="md", show_default=True)
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default=None,
              help="Results folder (default runs/bench).")
@click.option("--benchmarks-dir", type=click.Path(file_okay=False), default=None,
              help="Extra folder of benchmark files.")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Write to this file, with a header: the command that regenerates it, machine, wall time.")
def table(name, fmt, results_dir, benchmarks_dir, split, out):
    """Paper-style table of benchmark NAME: mean +- std over seeds, best cell marked, reported rows."""
    import shlex

    from .bench import DEFAULT_RESULTS
    from .grid import load_benchmark
    from .io import atomic_write_text
    from .results import build_table, load_results, provenance_lines, render

    spec = load_benchmark(name, benchmarks_dir)
    results = Path(results_dir or DEFAULT_RESULTS)
    df = load_results(results)
    header = None
    if out:
        where = _where_options(results_dir, benchmarks_dir)
        split_opt = f" --split {split}" if split != "test" else ""
        header = [f"{spec.name}: {spec.description}".rstrip(": "),
                  f"Regenerate: `textsvae bench {shlex.quote(name)}{where} && textsvae table {shlex.quote(name)}"
                  f"{where} --format {fmt}{split_opt} -o {shlex.quote(str(out))}`",
                  *provenance_lines(df, spec.runs, spec.name, results)]
    text = render(build_table(df, spec.runs, spec.metrics, spec.reported, split), fmt, header)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


def _where_options(results_dir: str | None, benchmarks_dir: str | None) -> str:
    """' --results DIR --benchmarks-dir DIR' for the options given, shell-quoted (regenerate lines)."""
    import shlex

    return "".join(f" {opt} {shlex.quote(str(v))}" for opt, v in
                   (("--results", results_dir), ("--benchmarks-dir", benchmarks_dir)) if v)


@cli.command()
@click.argument("name")
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default=None,
              help="Results folder (default runs/bench).")
@click.option("--benchmarks-dir", type=click.Path(file_okay=False), default=None,
              help="Extra folder of benchmark files.")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
def report(name, results_dir, benchmarks_dir, split, out):
    """One self-contained HTML page of benchmark NAME: table, training curves, provenance, failed runs."""
    import shlex

    from .bench import DEFAULT_RESULTS
    from .grid import load_benchmark
    from .io import atomic_write_text
    from .report import build_report

    spec = load_benchmark(name, benchmarks_dir)
    results = Path(results_dir or DEFAULT_RESULTS)
    where = _where_options(results_dir, benchmarks_dir)
    split_opt = f" --split {split}" if split != "test" else ""
    command = (f"textsvae bench {shlex.quote(name)}{where} && textsvae report {shlex.quote(name)}{where}"
               f"{split_opt} -o {shlex.quote(str(out))}")
    page = build_report(spec, results, split, command)
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, page)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(f"wrote {out} ({len(page) / 1e6:.1f} MB)")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--x", "x_axis", type=click.Choice(["epoch", "step"]), default="epoch", show_default=True)
@click.option("--panels", default=None,
              help="Comma-separated log keys, one panel each (default valid_kl,valid_mi,valid_au,beta,valid_rec; "
                   "'protocol' = valid_loss,valid_kl,valid_mi,valid_au,lr from the per-epoch log).")
def plot(run_dirs, out, x_axis, panels):
    """Plot KL, MI, AU, beta and reconstruction (or --panels) over training, one line per run."""
    from .plot import PANELS, PROTOCOL_PANELS, plot_runs

    chosen = PROTOCOL_PANELS if panels == "protocol" else tuple(panels.split(",")) if panels else PANELS
    click.echo(f"wrote {plot_runs(list(run_dirs), out, x_axis, chosen, per_epoch=panels == 'protocol')}")


# -- generation: sample, reconstruct, interpolate, encode, plot-latent (textsvae/generate.py) ----------
SPLIT_NAMES = ("train", "valid", "test")

# the fields of textsvae.decoding.DecodeOptions, with its defaults (tests/test_generate.py checks they agree)
DECODE_OPTIONS = (
    click.option("--decode", "strategy", default="greedy", show_default=True, metavar="greedy|beam|sample",
                 help="Decoding: argmax per step, beam search, or sampling."),
    click.option("--beam-size", "beam_size", type=int, default=5, show_default=True, help="Beams per sentence (beam)."),
    click.option("--length-penalty", "length_penalty", type=float, default=0.0, show_default=True,
                 help="Beam: rank finished hypotheses by log p / length^this (0: plain log p)."),
    click.option("--temperature", type=float, default=1.0, show_default=True, help="Sample: softmax(logits / T)."),
    click.option("--top-p", "top_p", type=float, default=1.0, show_default=True,
                 help="Sample: nucleus mass in (0, 1] (1 keeps every word)."),
    click.option("--max-len", "max_len", type=int, default=100, show_default=True, help="Words per sentence at most."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed of every random draw: z from the prior or q(z|x), and sampled words."),
)


def decoding_options(command):
    """Add the shared decoding options to a command, which receives them as one dict `decoding` (keyword
    arguments of generate.decode_options), checked before the model loads."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from .generate import DECODE_FIELDS, decode_options

        decoding = {name: kwargs.pop(name) for name in DECODE_FIELDS}
        decode_options(**decoding)
        return command(*args, decoding=decoding, **kwargs)

    for option in reversed(DECODE_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def run_options(command):
    """--device and --json, shared by sample, reconstruct and interpolate."""
    command = click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")(command)
    command = click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")(command)
    return command


def _load_run(run_dir: str, device: str | None):
    from .api import load_run

    return load_run(run_dir, device)


def _echo_rows(rows: list[dict], as_json: bool, text) -> None:
    """One JSON object a line, or text(row) a line."""
    for row in rows:
        click.echo(json.dumps(row, ensure_ascii=False) if as_json else text(row))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("-n", "n", type=int, default=10, show_default=True, help="Sentences to sample.")
@decoding_options
@run_options
def sample(run_dir, n, decoding, device, as_json):
    """Sentences decoded from z ~ N(0, I) drawn under --seed (an LM run decodes without z)."""
    from .generate import check_at_least

    check_at_least(n, 1, "n")
    texts = _load_run(run_dir, device).sample(n, **decoding)
    _echo_rows([{"text": t, "index": i} for i, t in enumerate(texts)], as_json, lambda r: r["text"])


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("sentences", nargs=-1)
@click.option("--file", "file", default=None, help="Read the sentences from this file, one a line.")
@click.option("--split", type=click.Choice(SPLIT_NAMES), default=None, help="Take them from the run's corpus.")
@click.option("-n", "n", type=int, default=20, show_default=True, help="With --split: its first N sentences.")
@click.option("--z", "z_mode", type=click.Choice(["mean", "sample"]), default="mean", show_default=True,
              help="Decode the posterior mean, or draws z ~ q(z|x).")
@click.option("--samples", type=int, default=None,
              help="Reconstructions per sentence (default 3 with --z sample or --decode sample, else 1).")
@decoding_options
@run_options
def reconstruct(run_dir, sentences, file, split, n, z_mode, samples, decoding, device, as_json):
    """Each sentence beside its reconstruction(s): '> input', then '= reconstruction' lines."""
    from .generate import check_at_least, read_lines, require_latent, split_lines

    given = [name for name, v in (("sentences", sentences), ("--file", file), ("--split", split)) if v]
    if len(given) != 1:
        raise UserError("give sentences, --file F or --split SPLIT" if not given else
                        f"give one of sentences, --file or --split, not {' and '.join(given)}")
    if samples is None:
        samples = 3 if "sample" in (z_mode, decoding["strategy"]) else 1
    if file:
        texts = read_lines(file)[0]
    elif sentences:
        texts = list(sentences)
    else:
        check_at_least(n, 1, "n")
    run = _load_run(run_dir, device)
    if split:
        require_latent(run.model, "reconstruct")
        texts = split_lines(run.config, run.vocab, split)[0][:n]
    out = run.reconstruct(texts, z=z_mode, samples=samples, **decoding)
    _echo_rows([{"input": t, "reconstructions": r} for t, r in zip(texts, out)], as_json,
               lambda row: "\n".join([f"> {row['input']}"] + [f"= {r}" for r in row["reconstructions"]]))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--steps", type=int, default=8, show_default=True, help="Points from A (t = 0) to B (t = 1), >= 2.")
@click.option("--prior", is_flag=True, help="Between two draws of N(0, I) under --seed instead of two sentences.")
@decoding_options
@run_options
def interpolate(run_dir, a, b, steps, prior, decoding, device, as_json):
    """Decode z(t) = (1 - t) z_A + t z_B between the posterior means of sentences A and B: 't sentence' lines."""
    from .generate import interpolation_points

    interpolation_points(steps)                      # checks --steps before the model loads
    rows = _load_run(run_dir, device).interpolate(a, b, steps, prior=prior, **decoding)
    _echo_rows([{"t": t, "text": text, "index": i} for i, (t, text) in enumerate(rows)], as_json,
               lambda r: f"{r['t']:.3f}  {r['text']}")


def latent_source(command):
    """--split, --file and --device, shared by encode and plot-latent."""
    command = click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")(command)
    command = click.option("--file", "file", default=None,
                           help="Sentences to encode, one a line (label<TAB>text keeps the label).")(command)
    return click.option("--split", type=click.Choice(SPLIT_NAMES), default=None,
                        help="A split of the run's corpus (default test).")(command)


def _latent_arguments(split: str | None, file: str | None) -> dict:
    """Keyword arguments of Run.latents / Run.plot_latent for --split or --file."""
    from .generate import read_lines

    if split and file:
        raise UserError("give --split or --file, not both")
    if file:
        texts, labels = read_lines(file)
        return {"sentences": texts, "labels": labels}
    return {"split": split or "test"}


@cli.command()
@click.argument("run_dir", type=click.Path())
@latent_source
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Parquet file to write.")
def encode(run_dir, split, file, device, out):
    """Write q(z|x) of each sentence as parquet rows: text, label, mu, logvar."""
    from .generate import write_parquet

    source = _latent_arguments(split, file)
    frame = _load_run(run_dir, device).latents(**source)
    click.echo(f"wrote {write_parquet(frame, out)} ({len(frame)} rows)")


@cli.command("plot-latent")
@click.argument("run_dir", type=click.Path())
@latent_source
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
def plot_latent(run_dir, split, file, device, out):
    """Posterior means on their first two principal components beside each dimension's variance (AU)."""
    source = _latent_arguments(split, file)
    click.echo(f"wrote {_load_run(run_dir, device).plot_latent(out, **source)}")


def main() -> None:
    cli(prog_name="textsvae")


if __name__ == "__main__":
    main()
