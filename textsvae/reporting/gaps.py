"""How far this suite's rows are from the published rows they reproduce (ours minus theirs, per metric),
and from a base row of this suite (`build_vs_table`: the per-seed differences, paired by seed).

A published row names the run it reproduces by `method` (and optionally `params`, a subset of the
run's parameters) on its `decoder`; an LSTM-LM row is the benchmark's `vae` method on the `lm`
decoder. The gap is this suite's mean over seeds minus the published value, in the metric's own
units (nats per sentence for NLL, ELBO, KL and MI), with this suite's sample std over seeds beside it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..bench.results import ResultsError
from .published import reported_rows
from .tables import Table, aggregate, rows_of_runs

if TYPE_CHECKING:
    from ..bench.grid import RunSpec

GAP_NOTE = ("Gap = this suite's mean minus the published value, in the metric's units (NLL, ELBO, KL and MI in "
            "nats per sentence); ± is this suite's sample std over seeds; n = this suite's finished seeds. "
            "NLL and PPL: positive means this suite's model is worse; ELBO: positive means better.")


def reproduces(published: dict[str, Any], run: "RunSpec") -> bool:
    """Whether `run` is the kind of run the published row reports (same decoder, method and named params)."""
    if "method" not in published or run.decoder != published["decoder"] or run.method != published["method"]:
        return False
    return all(run.params.get(key) == value for key, value in published.get("params", {}).items())


def build_gap_table(df: pd.DataFrame, runs: list["RunSpec"], metrics: tuple[str, ...] | list[str],
                    reported: tuple[str, ...] | list[str], split: str = "test") -> Table:
    """One row per (published row, suite row that reproduces it): the gap of each metric both report."""
    if not reported:
        raise ResultsError("this benchmark names no published rows (`reported = [...]` in its file), "
                           "so there is no gap to show")
    stats = aggregate(rows_of_runs(df, runs), metrics, split)
    datasets = list(dict.fromkeys(s.dataset for s in runs))
    rows, shown = [], set()
    for published in reported_rows(reported):
        if published["dataset"] not in datasets:
            continue
        matches = dict.fromkeys((s.label, s.decoder) for s in runs
                                if s.dataset == published["dataset"] and reproduces(published, s))
        for label, decoder in matches:
            shown.update(name for name in metrics if name in published)
            mine = stats[(stats.dataset == published["dataset"]) & (stats.label == label)
                         & (stats.decoder == decoder)].set_index("metric")
            cells = {}
            for name in metrics:
                if name in published and name in mine.index:
                    r = mine.loc[name]
                    cells[(published["dataset"], name)] = (r["mean"] - published[name], r["std"], int(r["n"]), False)
            n = int(mine["n"].max()) if len(mine) else 0
            rows.append({"label": f"{label} vs {published['label']} ({published['source']})", "decoder": decoder,
                         "source": "", "cells": cells, "n": {published["dataset"]: n}})
    if not rows:
        raise ResultsError("no run of this benchmark reproduces one of its published rows "
                           f"({', '.join(reported)}): nothing to compare")
    return Table(datasets=[d for d in datasets if any(d in row["n"] for row in rows)], metrics=[m for m in metrics if m in shown], rows=rows, split=split,
                 note=f"{GAP_NOTE} {split.capitalize()} split.", signed=True)


VS_NOTE = ("Difference = this row minus the base row, per seed, both runs of one seed (seeds that only one has are "
           "left out); mean ± sample std of the per-seed differences; n = seeds in both. NLL and PPL: negative "
           "means this row is better.")


def resolve_base(runs: list["RunSpec"], base: str) -> tuple[str, str | None]:
    """(label, decoder) of `--vs BASE`: a label (the base row of each row's own decoder) or LABEL/DECODER
    (one base row for every row)."""
    labels = {s.label for s in runs}
    if base in labels:
        return base, None
    label, sep, decoder = base.rpartition("/")
    if sep and any(s.label == label and s.decoder == decoder for s in runs):
        return label, decoder
    known = ", ".join(dict.fromkeys(f"{s.label}/{s.decoder}" for s in runs))
    raise ResultsError(f"--vs {base}: no such label or LABEL/DECODER in this benchmark; rows: {known}")


def build_vs_table(df: pd.DataFrame, runs: list["RunSpec"], metrics: tuple[str, ...] | list[str], base: str,
                   split: str = "test") -> Table:
    """One row per suite row other than the base: mean, std and n of its per-seed differences from the base
    row of its decoder (`--vs LABEL`) or from the one row LABEL/DECODER."""
    base_label, base_decoder = resolve_base(runs, base)
    mine = rows_of_runs(df, runs)
    d = mine[(mine.status == "finished") & (mine.split == split) & mine.metric.isin(list(metrics))]
    values = d.groupby(["dataset", "label", "decoder", "metric", "seed"]).value.mean()
    datasets = list(dict.fromkeys(s.dataset for s in runs))
    rows = []
    for label, decoder in dict.fromkeys((s.label, s.decoder) for s in runs):
        ref = (base_label, base_decoder or decoder)
        if (label, decoder) == ref or not any(s.label == ref[0] and s.decoder == ref[1] for s in runs):
            continue
        cells, ns = {}, {}
        for dataset in datasets:
            for name in metrics:
                try:
                    diff = (values.loc[(dataset, label, decoder, name)]
                            - values.loc[(dataset, *ref, name)]).dropna()
                except KeyError:
                    continue
                if len(diff):
                    std = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
                    cells[(dataset, name)] = (float(diff.mean()), std, len(diff), False)
                    ns[dataset] = max(ns.get(dataset, 0), len(diff))
        shown = f"{label} vs {ref[0]}" if base_decoder is None else f"{label} vs {ref[0]}/{ref[1]}"
        rows.append({"label": shown, "decoder": decoder, "source": "", "cells": cells, "n": ns})
    if not rows:
        raise ResultsError(f"--vs {base}: no other row shares a decoder with the base row")
    return Table(datasets=datasets, metrics=list(metrics), rows=rows, split=split,
                 note=f"{VS_NOTE} {split.capitalize()} split.", signed=True)
