"""`textsvae compare`: two runs (or two groups of a benchmark's runs, one per seed) on the same sentences."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .app import cli


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--bench", "bench_name", default=None,
              help="A and B are groups LABEL/DECODER of this benchmark's finished runs (one per seed), paired by seed.")
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default=None,
              help="Results folder of --bench (default runs/bench).")
@click.option("--benchmarks-dir", type=click.Path(file_okay=False), default=None,
              help="Extra folder of benchmark files.")
@click.option("--dataset", default=None, help="With --bench: the dataset, where the benchmark has several.")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("-k", "--iw-samples", type=int, default=None, help="K of the evaluations (default: the only one saved).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="Autocast precision of the evaluations (default: each run's own).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="iw_nll, elbo, rec, kl, mi or au (repeatable; default: all the runs have).")
@click.option("--resamples", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Bootstrap resamples of the sentences (MI: at most 200 each, it is recomputed per resample).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(a, b, bench_name, results_dir, benchmarks_dir, dataset, split, iw_samples, precision, metrics,
            resamples, seed, as_json):
    """B - A per metric over the sentences of a split (paired, with se and 95% intervals) and, for groups
    of runs, over seeds (t interval). A and B are run folders, or with --bench groups LABEL/DECODER."""
    from ..reporting.compare import bench_group, compare as compare_runs, format_comparison, load_scores, pair_by_seed

    if bench_name:
        from ..bench.grid import load_benchmark
        from ..bench.runner import DEFAULT_RESULTS

        benchmark = load_benchmark(bench_name, benchmarks_dir)
        results = Path(results_dir or DEFAULT_RESULTS)
        groups = [[load_scores(f, split, iw_samples, precision) for f in bench_group(benchmark, results, g, dataset)]
                  for g in (a, b)]
        pairs, unpaired = pair_by_seed(*groups)
    else:
        pairs, unpaired = [(load_scores(a, split, iw_samples, precision),
                            load_scores(b, split, iw_samples, precision))], []
    result = compare_runs(pairs, list(metrics) or None, resamples, seed, min(resamples, 200))
    result["unpaired_seeds"] = unpaired
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    click.echo(format_comparison(result, (a, b)))
    if unpaired:
        click.echo(f"left out: seed(s) {', '.join(map(str, unpaired))} (in one group only)")
