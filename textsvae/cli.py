"""The `textsvae` command line (the only module that imports click)."""
from __future__ import annotations

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
        from .rundir import RunError
        from .train import TrainingDiverged

        try:
            return super().invoke(ctx)
        except (ConfigError, CorpusError, RunError, DeviceError) as exc:
            raise UserError(_one_line(str(exc))) from None
        except TrainingDiverged as exc:
            click.echo(f"Error: {_one_line(str(exc))}", err=True)
            sys.exit(3)
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
@click.option("--plugin", multiple=True, type=click.Path(),
              help="A Python file that registers more methods (the one the run was trained with).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(run_dir, split, iw_samples, mi_batch, device, threads, workers, plugin, as_json):
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
                          workers=workers)
    click.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else format_metrics(result))


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
@click.option("--executor", "engine", type=click.Choice(executor_names()), default="local", show_default=True,
              help="Where the runs execute (textsvae/executors/).")
@click.option("--dry-run", is_flag=True, help="List the grid and what is missing; run nothing.")
def bench(name, jobs, results_dir, benchmarks_dir, threads, retry_failed, engine, dry_run):
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
    if dry_run:
        for run in spec.runs:
            click.echo(f"{run.run_id}  {run_status(results / run.run_id):8s} {run.dataset} {run.decoder} "
                       f"{run.label} seed {run.seed}")
        return
    try:
        report = run_benchmark(spec, results, jobs, retry_failed, engine=engine, threads=threads)
    except KeyboardInterrupt:
        click.echo(f"interrupted; finished runs are kept and half-done ones resume: run `textsvae bench {name}` "
                   f"again", err=True)
        sys.exit(130)
    if not report.finished and not report.busy and report.already_done == report.total:
        click.echo(f"{spec.name}: nothing to do, all {report.total} runs are finished in {results}")
    else:
        click.echo(f"{spec.name}: {len(report.finished)} run(s) finished in {report.seconds:.0f}s with "
                   f"{report.jobs} job(s); {report.already_done} were done before; {len(report.failed)} failed; "
                   f"{len(report.busy)} held by another process")
    click.echo("")
    click.echo(render(build_table(load_results(results), spec.runs, spec.metrics, spec.reported), "md"))
    for run, message in report.busy:
        click.echo(f"busy: {run.run_id} {run.dataset} {run.decoder} {run.label} seed {run.seed}: {message}", err=True)
    for run, message in report.failed:
        click.echo(f"FAILED: {run.run_id} {run.dataset} {run.decoder} {run.label} seed {run.seed}: {message}",
                   err=True)
    if report.failed:
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
        where = "".join(f" {opt} {shlex.quote(str(v))}" for opt, v in
                        (("--results", results_dir), ("--benchmarks-dir", benchmarks_dir)) if v)
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


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--x", "x_axis", type=click.Choice(["epoch", "step"]), default="epoch", show_default=True)
def plot(run_dirs, out, x_axis):
    """Plot KL, MI, AU, beta and reconstruction over training, one line per run."""
    from .plot import plot_runs

    click.echo(f"wrote {plot_runs(list(run_dirs), out, x_axis)}")


def main() -> None:
    cli(prog_name="textsvae")


if __name__ == "__main__":
    main()
