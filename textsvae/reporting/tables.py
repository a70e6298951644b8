"""Paper-style tables of a benchmark's runs: mean, sample std and n over seeds per method x decoder,
the best cell per column marked, published rows beneath, rendered as markdown, LaTeX, CSV or HTML,
with the provenance lines that head a committed table. With `ci`, a cell also shows the 95% t interval
of its mean over seeds, mean +- t_{0.975, n-1} std / sqrt(n) (none for n = 1); a table of differences
(`signed`) marks with '*' an interval that excludes 0.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..bench.results import ResultsError
from ..core.metric_registry import best_rule, fixed, metric

if TYPE_CHECKING:
    from ..bench.grid import RunSpec

CI_NOTE = ("[a, b]: the 95% t interval of the mean over seeds (mean ± t(0.975, n - 1) · std / √n; none for "
           "n = 1).")
EXCLUDES_ZERO = "*"


def t_interval(mean: float, std: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """mean +- t_{(1+level)/2, n-1} std / sqrt(n), the t interval of a mean over n seeds; (nan, nan) for n < 2."""
    from scipy.stats import t

    if n < 2 or math.isnan(std):
        return math.nan, math.nan
    half = float(t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def aggregate(df: pd.DataFrame, metrics: tuple[str, ...] | list[str], split: str = "test") -> pd.DataFrame:
    """Mean, sample std and n over seeds per (dataset, label, decoder, metric), with `best` marked.

    best: the highest (higher_is_better) or lowest mean in its (dataset, metric) column, compared at
    the printed precision (ties are all marked); a column of one row, or where every row ties, marks none.
    """
    d = df[(df.status == "finished") & (df.split == split) & df.metric.isin(list(metrics))]
    stats = (d.groupby(["dataset", "label", "decoder", "metric"], sort=False).value
             .agg(mean="mean", std="std", n="count").reset_index())
    stats["best"] = False
    for (_, name), group in stats.groupby(["dataset", "metric"]):
        better = metric(name).higher_is_better
        if better is None or group["mean"].isna().all():
            continue
        shown = group["mean"].round(metric(name).digits)
        winners = shown == (shown.max() if better else shown.min())
        if len(group) < 2 or winners.all():
            continue
        stats.loc[group.index[winners], "best"] = True
    return stats


def rows_of_runs(df: pd.DataFrame, runs: list["RunSpec"]) -> pd.DataFrame:
    """The rows of these runs, named by their run id and labelled as the benchmark file labels them now.

    A run's id hashes what it computes, not its table label, so a label edited in the file after a
    run finished keeps that run's rows under the new label instead of dropping them.
    """
    specs = {s.run_id: s for s in runs}
    mine = df[df.run_id.isin(specs)].copy()
    mine["label"] = mine.run_id.map(lambda run_id: specs[run_id].label)
    mine["dataset"] = mine.run_id.map(lambda run_id: specs[run_id].dataset)
    return mine


@dataclass
class Table:
    datasets: list[str]
    metrics: list[str]
    rows: list[dict[str, Any]]   # {label, decoder, source, cells: {(dataset, metric): (mean, std, n, best)}, n: {dataset: n}}
    split: str = "test"
    note: str = ""               # the footnote, where it is not table_note's
    signed: bool = False         # print '+' on positive numbers (differences)
    ci: bool = False             # add the 95% t interval over seeds to each cell


def build_table(df: pd.DataFrame, runs: list["RunSpec"], metrics: tuple[str, ...] | list[str],
                reported: tuple[str, ...] | list[str] = (), split: str = "test") -> Table:
    """The pivot of these runs' rows: method x decoder in the runs' order, then the reported rows."""
    from .published import reported_rows

    stats = aggregate(rows_of_runs(df, runs), metrics, split)
    datasets = list(dict.fromkeys(s.dataset for s in runs))
    rows: list[dict[str, Any]] = []
    for key in dict.fromkeys((s.label, s.decoder) for s in runs):
        cells, ns = {}, {}
        for dataset in datasets:
            sub = stats[(stats.dataset == dataset) & (stats.label == key[0]) & (stats.decoder == key[1])]
            for _, r in sub.iterrows():
                cells[(dataset, r.metric)] = (r["mean"], r["std"], int(r["n"]), bool(r["best"]))
            ns[dataset] = int(sub["n"].max()) if len(sub) else 0
        rows.append({"label": key[0], "decoder": key[1], "source": "", "cells": cells, "n": ns})
    for rep in reported_rows(reported):
        if rep["dataset"] not in datasets:
            continue
        cells = {(rep["dataset"], m): (rep[m], math.nan, 1, False) for m in metrics if m in rep}
        rows.append({"label": rep["label"], "decoder": rep["decoder"], "source": f"reported: {rep['source']}",
                     "cells": cells, "n": {}})
    return Table(datasets=datasets, metrics=list(metrics), rows=rows, split=split)


def _number(mean: float, std: float, n: int, digits: int, pm: str, signed: bool = False, ci: bool = False) -> str:
    text = fixed(mean, digits, signed)
    if n > 1 and not math.isnan(std):
        text = f"{text}{pm}{std:.{digits}f}"
        if ci:
            low, high = t_interval(mean, std, n)
            text += f" [{fixed(low, digits, signed)}, {fixed(high, digits, signed)}]"
            if signed and (low > 0 or high < 0):
                text += EXCLUDES_ZERO
    return text


def _columns(table: Table) -> list[tuple[str, str]]:
    return [(d, m) for d in table.datasets for m in ["n", *table.metrics]]


def _title(table: Table, dataset: str, name: str) -> str:
    title = "n" if name == "n" else metric(name).title
    return f"{dataset} {title}" if len(table.datasets) > 1 else title


def _cell(table: Table, row: dict[str, Any], dataset: str, name: str, pm: str, bold: str) -> str:
    if name == "n":
        return str(row["n"].get(dataset, 0)) if not row["source"] else "-"
    if (dataset, name) not in row["cells"]:
        return "-"
    mean, std, n, best = row["cells"][(dataset, name)]
    text = _number(mean, std, n, metric(name).digits_for(mean, n), pm, table.signed, table.ci)
    return bold.format(text) if best else text


def render_markdown(table: Table) -> str:
    header = ["Method", "Decoder"] + [_title(table, d, m) for d, m in _columns(table)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row in table.rows:
        label = f"{row['label']} ({row['source']})" if row["source"] else row["label"]
        cells = [_cell(table, row, d, m, " ± ", "**{}**") for d, m in _columns(table)]
        lines.append("| " + " | ".join([label, row["decoder"]] + cells) + " |")
    return "\n".join(lines) + "\n\n" + table_note(table) + "\n"


def table_note(table: Table) -> str:
    """The footnote under every rendering of the table: what a cell is, what bold marks, the split."""
    if table.note:
        note = table.note
    else:
        note = (f"Mean ± sample std over seeds (n = finished seeds); bold: best of this suite's rows per column "
                f"({best_rule(table.metrics)}). {table.split.capitalize()} split; NLL is IW-NLL in nats per sentence.")
    if table.ci:
        note += f" {CI_NOTE}" + (f" {EXCLUDES_ZERO}: the interval excludes 0." if table.signed else "")
    return note


def render_html_table(table: Table) -> str:
    """The markdown table as HTML, cell for cell the same strings: best cells in <strong>, reported rows in
    their own <tbody class="reported">, the footnote in <p class="note">."""
    esc = html.escape
    header = ["Method", "Decoder"] + [_title(table, d, m) for d, m in _columns(table)]
    heads = [f"<th>{esc(h)}</th>" if i < 2 else f'<th class="num">{esc(h)}</th>' for i, h in enumerate(header)]
    lines = ['<table class="results">', "<thead><tr>" + "".join(heads) + "</tr></thead>"]
    for reported in (False, True):
        rows = [row for row in table.rows if bool(row["source"]) == reported]
        if not rows:
            continue
        lines.append('<tbody class="reported">' if reported else "<tbody>")
        for row in rows:
            label = f"{row['label']} ({row['source']})" if row["source"] else row["label"]
            cells = [_cell(table, row, d, m, " ± ", "<strong>{}</strong>") for d, m in _columns(table)]
            lines.append(f"<tr><td>{esc(label)}</td><td>{esc(row['decoder'])}</td>"
                         + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>")
        lines.append("</tbody>")
    lines += ["</table>", f'<p class="note">{esc(table_note(table))}</p>']
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def render_latex(table: Table) -> str:
    cols = _columns(table)
    lines = [r"\begin{tabular}{ll" + "r" * len(cols) + "}", r"\toprule",
             " & ".join(["Method", "Decoder"] + [_latex_escape(_title(table, d, m)) for d, m in cols]) + r" \\",
             r"\midrule"]
    in_reported = False
    for row in table.rows:
        if row["source"] and not in_reported:
            lines.append(r"\midrule")
            in_reported = True
        label = f"{row['label']} ({row['source']})" if row["source"] else row["label"]
        cells = [_cell(table, row, d, m, r" $\pm$ ", r"\textbf{{{}}}") for d, m in cols]
        lines.append(" & ".join([_latex_escape(label), row["decoder"]] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    records = []
    for row in table.rows:
        rec: dict[str, Any] = {"method": row["label"], "decoder": row["decoder"], "source": row["source"] or "this suite"}
        for d in table.datasets:
            prefix = f"{d}_" if len(table.datasets) > 1 else ""
            rec[f"{prefix}n"] = row["n"].get(d, "")
            for m in table.metrics:
                mean, std, n, best = row["cells"].get((d, m), (math.nan, math.nan, 0, False))
                rec.update({f"{prefix}{m}_mean": mean, f"{prefix}{m}_std": std, f"{prefix}{m}_n": n,
                            f"{prefix}{m}_best": best})
                if table.ci:
                    low, high = t_interval(mean, std, n)
                    rec.update({f"{prefix}{m}_ci_low": low, f"{prefix}{m}_ci_high": high})
        records.append(rec)
    return pd.DataFrame(records).to_csv(index=False)


RENDERERS = {"md": render_markdown, "latex": render_latex, "csv": render_csv}
COMMENT = {"md": "", "latex": "% ", "csv": "# "}


def render(table: Table, fmt: str, header: list[str] | None = None) -> str:
    """The table in md, latex or csv, with optional header lines (comments in latex and csv)."""
    if fmt not in RENDERERS:
        raise ResultsError(f"unknown format '{fmt}'; valid formats: {', '.join(RENDERERS)}")
    body = RENDERERS[fmt](table)
    if not header:
        return body
    if fmt == "md":
        return "\n".join(f"{line}  " if line else "" for line in header) + "\n\n" + body
    return "".join(f"{COMMENT[fmt]}{line}\n" for line in header) + body


def _date_range(rows: pd.DataFrame) -> str:
    days = sorted({str(d)[:10] for d in rows["date"].dropna()})
    return "-" if not days else days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def provenance_lines(df: pd.DataFrame, runs: list["RunSpec"], name: str, results_dir: Path) -> list[str]:
    """Machine, device, commit, run time and bench wall time of the rows behind a table of benchmark `name`."""
    from ..core.io import read_jsonl

    mine = df[df.run_id.isin({s.run_id for s in runs})].drop_duplicates("run_id")
    finished = mine[mine.status == "finished"]
    join = lambda col: ", ".join(sorted({str(v) for v in finished[col].dropna()})) or "-"  # noqa: E731
    lines = [f"Runs: {len(finished)} finished, {int((mine.status == 'failed').sum())} failed, "
             f"{len(runs) - len(mine)} not finished of {len(runs)}; "
             f"run time {finished.wall_seconds.sum() / 60:.1f} min (train + eval, summed over runs)",
             f"Machine: {join('machine')}; device: {join('device')}; commit {join('git_commit')}; "
             f"textsvae {join('version')}; dates {_date_range(finished)}"]
    sessions = read_jsonl(results_dir / f"{name}.bench.jsonl")
    if sessions:
        wall = sum(s.get("seconds", 0.0) for s in sessions)
        jobs = ", ".join(sorted({str(s.get("jobs")) for s in sessions}))
        lines.append(f"Bench wall time: {wall / 60:.1f} min over {len(sessions)} invocation(s), --jobs {jobs}")
    return lines
