"""Commands on a benchmark: bench, results, table, report, plot."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..bench.executors import executor_names
from .app import UserError, cli, pairs


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
@click.option("--executor", "executor", type=click.Choice(executor_names()), default=None,
              help="Where the runs execute (textsvae/bench/executors/); default: the benchmark's [executor] name, or local.")
@click.option("-E", "--executor-setting", "executor_settings", multiple=True, metavar="KEY=VALUE",
              help="An executor setting (partition, gpus, address, ...), over the benchmark's [executor] table.")
@click.option("--dry-run", is_flag=True, help="List the grid and what is missing; run nothing.")
@click.option("--status", "show_status", is_flag=True,
              help="The grid's state from the results folder alone (finished, running, failed, left); run nothing.")
@click.option("--track", default=None, metavar="NAMES",
              help="Experiment trackers for every run, comma-separated: tensorboard, mlflow, wandb; the benchmark "
                   "is the project, runs are named by run id and grouped by method/decoder.")
def bench(name, jobs, results_dir, benchmarks_dir, threads, retry_failed, executor, executor_settings, dry_run,
          show_status, track):
    """Run benchmark NAME's missing runs (resuming half-done ones), then print its table.

    Without NAME, list the benchmarks found.
    """
    from ..bench.grid import list_benchmarks, load_benchmark
    from ..bench.results import load_results
    from ..bench.runner import DEFAULT_RESULTS, run_benchmark, outcome_of
    from ..reporting.tables import build_table, render

    if not name:
        for bench_name, path in list_benchmarks(benchmarks_dir).items():
            click.echo(f"{bench_name:14s} {path}")
        return
    benchmark = load_benchmark(name, benchmarks_dir)
    results = Path(results_dir or DEFAULT_RESULTS)
    if show_status:
        from ..bench.status import status_text

        click.echo(status_text(benchmark, results))
        return
    if dry_run:
        for run in benchmark.runs:
            click.echo(f"{run.run_id}  {outcome_of(results / run.run_id):8s} {run.description}")
        return
    try:
        table = dict(benchmark.executor)
        chosen = executor or table.pop("name", "local")
        if executor and table.pop("name", executor) != executor:   # another executor's settings do not apply
            table = {}
        table.update(pairs(executor_settings, "-E"))
        tally = run_benchmark(benchmark, results, jobs, retry_failed, executor=chosen, threads=threads, settings=table,
                               track=track)
    except KeyboardInterrupt:
        click.echo(f"interrupted; finished runs are kept and half-done ones resume: run `textsvae bench {name}` "
                   f"again", err=True)
        sys.exit(130)
    if not tally.finished and not tally.busy and not tally.skipped and tally.already_done == tally.total:
        click.echo(f"{benchmark.name}: nothing to do, all {tally.total} runs are finished in {results}")
    else:
        click.echo(f"{benchmark.name}: {len(tally.finished)} run(s) finished in {tally.seconds:.0f}s with "
                   f"{tally.jobs} job(s); {tally.already_done} were done before; {len(tally.failed)} failed; "
                   f"{len(tally.busy)} not finished (held by another process or interrupted)"
                   + (f"; {len(tally.skipped)} skipped (not for this machine)" if tally.skipped else ""))
    click.echo("")
    click.echo(render(build_table(load_results(results), benchmark.runs, benchmark.metrics, benchmark.reported), "md"))
    for run, message in tally.busy:
        click.echo(f"busy: {run.run_id} {run.description}: {message}", err=True)
    for run, message in tally.skipped:
        click.echo(f"skipped: {run.run_id} {run.description}: {message}",
                   err=True)
    for run, message in tally.failed:
        click.echo(f"FAILED: {run.run_id} {run.description}: {message}",
                   err=True)
    if tally.busy:
        click.echo(f"{len(tally.busy)} run(s) not finished: held by another process or interrupted; run "
                   f"`textsvae bench {name}` again to finish them", err=True)
    if tally.skipped:
        click.echo(f"{len(tally.skipped)} run(s) skipped: this machine cannot run them; a bench on one that can "
                   f"runs them", err=True)
    if tally.failed or tally.busy or tally.skipped:
        sys.exit(1)


@cli.command()
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default=None,
              help="Results folder (default runs/bench).")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
def results(results_dir, split):
    """Load the results store (tidy rows) and print a summary."""
    from ..bench.results import load_results, summary_text
    from ..bench.runner import DEFAULT_RESULTS

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
@click.option("--gaps", is_flag=True,
              help="Instead: this suite's rows minus the published rows they reproduce, per metric.")
@click.option("--vs", "vs", default=None, metavar="LABEL[/DECODER]",
              help="Instead: each row minus a base row, paired by seed: LABEL is the base row of each row's own "
                   "decoder, LABEL/DECODER one base row for all.")
@click.option("--ci", is_flag=True, help="Add the 95% t interval over seeds to each cell (n - 1 degrees of freedom).")
def table(name, fmt, results_dir, benchmarks_dir, split, out, gaps, vs, ci):
    """Paper-style table of benchmark NAME: mean +- std over seeds, best cell marked, reported rows."""
    import shlex

    from ..bench.grid import load_benchmark
    from ..bench.results import load_results, outside_grid_note
    from ..bench.runner import DEFAULT_RESULTS
    from ..core.io import atomic_write_text
    from ..reporting.gaps import build_gap_table, build_vs_table
    from ..reporting.tables import build_table, provenance_lines, render

    benchmark = load_benchmark(name, benchmarks_dir)
    results = Path(results_dir or DEFAULT_RESULTS)
    df = load_results(results)
    note = outside_grid_note(results, benchmark.name, {run.run_id for run in benchmark.runs})
    if note:
        click.echo(note, err=True)
    header = None
    if out:
        where = _where_options(results_dir, benchmarks_dir)
        split_opt = f" --split {split}" if split != "test" else ""
        header = [f"{benchmark.name}: {benchmark.description}".rstrip(": "),
                  f"Regenerate: `textsvae bench {shlex.quote(name)}{where} && textsvae table {shlex.quote(name)}"
                  f"{where} --format {fmt}{split_opt}{' --gaps' if gaps else ''}"
                  f"{f' --vs {shlex.quote(vs)}' if vs else ''}{' --ci' if ci else ''} -o {shlex.quote(str(out))}`",
                  *provenance_lines(df, benchmark.runs, benchmark.name, results)]
    if gaps and vs:
        raise UserError("--gaps and --vs are two different tables: choose one")
    if vs:
        built = build_vs_table(df, benchmark.runs, benchmark.metrics, vs, split)
    else:
        built = (build_gap_table if gaps else build_table)(df, benchmark.runs, benchmark.metrics, benchmark.reported, split)
    built.ci = ci or bool(vs)
    text = render(built, fmt, header)
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
@click.option("--ci", is_flag=True, help="Add the 95% t interval over seeds to the tables; '*' marks a difference "
                                         "whose interval excludes 0.")
@click.option("--vs", "vs", default=None, metavar="LABEL[/DECODER]",
              help="Add each row's difference from this base row, paired by seed (as `table --vs`).")
def report(name, results_dir, benchmarks_dir, split, out, ci, vs):
    """One self-contained HTML page of benchmark NAME: table, training curves, provenance, failed runs."""
    import shlex

    from ..bench.grid import load_benchmark
    from ..bench.runner import DEFAULT_RESULTS
    from ..core.io import atomic_write_text
    from ..reporting.page import build_report

    benchmark = load_benchmark(name, benchmarks_dir)
    results = Path(results_dir or DEFAULT_RESULTS)
    where = _where_options(results_dir, benchmarks_dir)
    split_opt = f" --split {split}" if split != "test" else ""
    command = (f"textsvae bench {shlex.quote(name)}{where} && textsvae report {shlex.quote(name)}{where}"
               f"{split_opt}{' --ci' if ci else ''}{f' --vs {shlex.quote(vs)}' if vs else ''} -o {shlex.quote(str(out))}")
    page = build_report(benchmark, results, split, command, ci=ci, vs=vs)
    Path(out).parent.mkdir(parents=True, exist_ok=True)    # an OSError is the group's one line, exit 1
    atomic_write_text(out, page)
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
    from ..reporting.plot import PANELS, PROTOCOL_PANELS, plot_runs

    chosen = PROTOCOL_PANELS if panels == "protocol" else tuple(panels.split(",")) if panels else PANELS
    click.echo(f"wrote {plot_runs(list(run_dirs), out, x_axis, chosen, per_epoch=panels == 'protocol')}")
