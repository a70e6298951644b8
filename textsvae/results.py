"""The results store (tidy long rows, one file per run, merged on read) and paper-style tables.

A row is one run x split x metric: run id, benchmark, dataset, decoder, method, parameters,
seed, split, metric, value, and what the value depends on (IW samples, MI set size, AU
threshold, epochs and steps trained, seconds, tokens/s, device, machine, git commit, version,
date). Each run folder holds its `rows.csv` (written atomically) and `bench.json` (status).
"""
from __future__ import annotations

import html
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .config import ConfigError
from .io import atomic_write_json, atomic_write_text
from .metric_registry import METRICS, best_rule, metric

if TYPE_CHECKING:
    from .grid import RunSpec

log = logging.getLogger(__name__)

COLUMNS = ["run_id", "benchmark", "dataset", "decoder", "method", "label", "params", "seed", "split", "metric",
           "value", "status", "iw_samples", "mi_n", "mi_samples", "au_threshold", "n_sentences", "epochs", "steps",
           "train_seconds", "eval_seconds", "wall_seconds", "tokens_per_s", "device", "machine", "git_commit",
           "version", "date", "error"]


class ResultsError(ConfigError):
    """A missing or empty results folder (one line for the user)."""


# -- writing ----------------------------------------------------------------------------------------
def read_status(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "bench.json"
    if not path.is_file() or not (Path(folder) / "rows.csv").is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}


def runs_outside_grid(results_dir: Path, benchmark: str, run_ids: set[str]) -> list[str]:
    """Run folders under results_dir that bench.json files under `benchmark` but whose ids this grid does not
    make: runs of another version of the benchmark file or of textsvae (a run id hashes the whole config)."""
    return sorted(folder.parent.name for folder in Path(results_dir).glob("*/bench.json")
                  if folder.parent.name not in run_ids and read_status(folder.parent).get("benchmark") == benchmark)


def outside_grid_note(results_dir: Path, benchmark: str, run_ids: set[str]) -> str:
    """One line saying how many such runs there are and that tables leave them out; '' when none."""
    others = runs_outside_grid(results_dir, benchmark, run_ids)
    if not others:
        return ""
    return (f"note: {len(others)} run folder(s) of '{benchmark}' in {results_dir} are not in this grid (another "
            f"version of textsvae or of the benchmark file made them, so their run ids differ) and are left out, "
            f"e.g. {others[0]}; `textsvae results --results {results_dir}` shows every run")


def _base(spec: "RunSpec", provenance: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": spec.run_id, "benchmark": spec.benchmark, "dataset": spec.dataset, "decoder": spec.decoder,
            "method": spec.method, "label": spec.label, "params": json.dumps(spec.params, sort_keys=True),
            "seed": spec.seed, "date": time.strftime("%Y-%m-%dT%H:%M:%S"), **provenance}


def _write(folder: Path, rows: list[dict[str, Any]], status: dict[str, Any]) -> None:
    frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
    atomic_write_text(folder / "rows.csv", frame.to_csv(index=False))
    atomic_write_json(folder / "bench.json", status)  # written last: its presence means rows.csv is complete


def write_rows(folder: Path, spec: "RunSpec", summary: dict[str, Any], evals: dict[str, dict[str, Any]],
               eval_seconds: float, provenance: dict[str, Any]) -> None:
    """One row per split x metric of a finished run."""
    base = _base(spec, provenance)
    train_seconds = float(summary.get("train_seconds", 0.0))
    common = {"status": "finished", "epochs": summary.get("epochs"), "steps": summary.get("steps"),
              "train_seconds": train_seconds, "eval_seconds": eval_seconds,
              "wall_seconds": train_seconds + eval_seconds,
              "tokens_per_s": (summary.get("last") or {}).get("tokens_per_s"), "device": summary.get("device")}
    rows = []
    for split, result in evals.items():
        for name, value in result.items():
            if name not in METRICS or value is None:   # settings, diagnostics, an LM's z-metrics
                continue
            depends = {key: result.get(key) for key in METRICS[name].depends_on}
            rows.append({**base, **common, **depends, "split": split, "metric": name, "value": float(value)})
    _write(folder, rows, {"status": "finished", "run_id": spec.run_id, "benchmark": spec.benchmark})


def write_failure(folder: Path, spec: "RunSpec", message: str, provenance: dict[str, Any]) -> None:
    """A failed run is one row with status 'failed' and its error message."""
    row = {**_base(spec, provenance), "status": "failed", "split": "", "metric": "failed", "value": math.nan,
           "error": message}
    _write(folder, [row], {"status": "failed", "run_id": spec.run_id, "benchmark": spec.benchmark,
                           "error": message})


# -- reading ----------------------------------------------------------------------------------------
def load_results(results_dir: str | Path) -> pd.DataFrame:
    """All rows under results_dir (one rows.csv per run folder) as one DataFrame."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsError(f"results folder not found: {results_dir} (run `textsvae bench NAME` first)")
    frames = []
    for path in sorted(results_dir.glob("*/rows.csv")):
        try:
            frames.append(pd.read_csv(path, dtype={"run_id": str, "params": str, "error": str}))
        except (ValueError, OSError) as exc:
            log.warning("skipping unreadable %s (%s)", path, exc)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True).reindex(columns=COLUMNS)


def summary_text(df: pd.DataFrame, split: str = "test") -> str:
    """Runs per benchmark and status, and the mean of the main metrics per dataset x decoder x method."""
    if df.empty:
        return "no results yet"
    runs = df.drop_duplicates("run_id")
    lines = []
    for (bench, status), n in runs.groupby(["benchmark", "status"]).size().items():
        lines.append(f"{bench}: {n} run(s) {status}")
    main = df[(df.status == "finished") & (df.split == split) & df.metric.isin(["iw_nll", "kl", "mi", "au", "ppl"])]
    if not main.empty:
        pivot = main.pivot_table(index=["dataset", "decoder", "label"], columns="metric", values="value",
                                 aggfunc="mean")
        pivot.insert(0, "n", main.groupby(["dataset", "decoder", "label"]).run_id.nunique())
        lines += ["", f"means over seeds ({split} split):", pivot.round(2).to_string()]
    failed = runs[runs.status == "failed"]
    for _, r in failed.iterrows():
        lines.append(f"failed: {r.run_id} {r.dataset} {r.decoder} {r.label} seed {r.seed}: {r.error}")
    return "\n".join(lines)


# -- tables -----------------------------------------------------------------------------------------
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


@dataclass
class Table:
    datasets: list[str]
    metrics: list[str]
    rows: list[dict[str, Any]]   # {label, decoder, source, cells: {(dataset, metric): (mean, std, n, best)}, n: {dataset: n}}
    split: str = "test"
    note: str = ""               # the footnote, where it is not table_note's
    signed: bool = False         # print '+' on positive numbers (differences)


def build_table(df: pd.DataFrame, runs: list["RunSpec"], metrics: tuple[str, ...] | list[str],
                reported: tuple[str, ...] | list[str] = (), split: str = "test") -> Table:
    """The pivot of these runs' rows: method x decoder in the runs' order, then the reported rows."""
    from .reported import reported_rows

    ids = {s.run_id for s in runs}
    mine = df[df.run_id.isin(ids)]
    stats = aggregate(mine, metrics, split)
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


def _number(mean: float, std: float, n: int, digits: int, pm: str, signed: bool = False) -> str:
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if n > 1 and not math.isnan(std):
        return f"{text}{pm}{std:.{digits}f}"
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
    text = _number(mean, std, n, metric(name).digits, pm, table.signed)
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
        return table.note
    return (f"Mean ± sample std over seeds (n = finished seeds); bold: best of this suite's rows per column "
            f"({best_rule(table.metrics)}). {table.split.capitalize()} split; NLL is IW-NLL in nats per sentence.")


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
    from .io import read_jsonl

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
