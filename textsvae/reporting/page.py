"""One self-contained HTML page for a benchmark (`textsvae report NAME`): its paper table, the gaps to
the published rows it reproduces, the runs that failed or have not run, every run's training curves, configuration and provenance.
With `ci` the tables give each mean's 95% t interval over seeds and mark with '*' a difference (a gap, or a
row minus the `vs` base row, paired by seed) whose interval excludes 0.

The page opens from disk: CSS inline, figures as base64 PNG, no scripts and no external references.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..bench.grid import Benchmark, RunSpec
from ..bench.results import ResultsError, load_results, read_outcome
from ..bench.status import RunState, grid_states
from ..core.io import read_jsonl
from ..core.rundir import read_config_dict, read_state, read_summary
from .gaps import build_gap_table, build_vs_table
from .plot import curves_figure, png_bytes, without_latent
from .tables import build_table, provenance_lines, render_html_table

CURVES = ("valid_kl", "valid_mi", "valid_au", "valid_loss")   # log.jsonl keys, one panel each
NOT_FINISHED = ("running", "started", "stale", "missing")

STYLE = """
body { margin: 0; color: #1d2327; background: #fff;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1310px; margin: 0 auto; padding: 12px 20px 48px; }
h1 { font-size: 22px; margin: 6px 0 2px; }
h2 { font-size: 18px; margin: 26px 0 8px; padding-bottom: 3px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 15px; margin: 16px 0 2px; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
p.regen code { display: inline-block; background: #f3f5f7; padding: 2px 6px; border-radius: 3px;
               white-space: pre-wrap; word-break: break-all; }
ul.provenance { margin: 4px 0; padding-left: 20px; color: #444; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; }
th, td { padding: 3px 7px; border-bottom: 1px solid #e3e6e8; text-align: left; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; }
th.num, td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.results { font-size: 13px; }
table.results td:first-child { min-width: 150px; }
tbody.reported td { background: #fbf6e9; color: #5c4a1a; font-style: italic; }
tbody.reported tr:first-child td { border-top: 2px solid #b9a36a; }
table.runs { font-size: 12.5px; }
table.runs td { white-space: nowrap; }
table.runs td:nth-child(3), table.runs td:nth-child(9) { white-space: normal; }
p.note { color: #555; font-size: 12.5px; margin: 6px 0; }
pre { background: #f6f8fa; padding: 8px 10px; border-radius: 4px; overflow-x: auto; margin: 4px 0; }
pre.error { background: #fdecea; color: #8a1c12; white-space: pre-wrap; }
.failed { color: #b3261e; font-weight: 600; }
.missing, .started, .stale, .running { color: #8a6100; font-weight: 600; }
.finished { color: #1a7f37; }
details { margin: 2px 0; }
summary { cursor: pointer; }
img { max-width: 100%; height: auto; display: block; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""

esc = html.escape


def build_report(bench: Benchmark, results_dir: str | Path, split: str = "test", command: str = "",
                 ci: bool = False, vs: str | None = None) -> str:
    """The page as one HTML string; `command` is the shell line that regenerates it. `ci` adds the t intervals
    over seeds; `vs` (LABEL or LABEL/DECODER, as `table --vs`) adds each row's difference from that base row."""
    results_dir = Path(results_dir)
    df = load_results(results_dir)
    states = grid_states(bench, results_dir)
    table = build_table(df, bench.runs, bench.metrics, bench.reported, split)
    table.ci = ci
    body = [_header(bench, df, results_dir, command),
            _section("table", f"Results ({split} split)", f'<div class="scroll">{render_html_table(table)}</div>'),
            *_vs_section(bench, df, split, vs),
            *_gap_section(bench, df, split, ci),
            _section("problems", "Failed and unfinished runs", _problems(states, results_dir)),
            _section("curves", "Training curves (validation set, per epoch; one line per seed)",
                     _curves(bench.runs, results_dir)),
            _section("runs", "Runs: provenance and configuration", _runs(states, df, results_dir))]
    return PAGE.format(title=esc(f"textsvae report: {bench.name}"), style=STYLE, body="\n".join(body))


def _vs_section(bench: Benchmark, df: pd.DataFrame, split: str, vs: str | None) -> list[str]:
    """Each row minus the base row `vs`, paired by seed, with its t interval (none without `vs`)."""
    if not vs:
        return []
    diffs = build_vs_table(df, bench.runs, bench.metrics, vs, split)
    diffs.ci = True
    return [_section("vs", f"Differences from {vs} (paired by seed)",
                     f'<div class="scroll">{render_html_table(diffs)}</div>')]


def _gap_section(bench: Benchmark, df: pd.DataFrame, split: str, ci: bool = False) -> list[str]:
    """The gaps to the published rows, where some run of the benchmark reproduces one; else nothing."""
    try:
        gaps = build_gap_table(df, bench.runs, bench.metrics, bench.reported, split)
    except ResultsError:
        return []
    gaps.ci = ci
    return [_section("gaps", "Gap to the published rows (this suite minus published)",
                     f'<div class="scroll">{render_html_table(gaps)}</div>')]


def _section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{anchor}">\n<h2>{esc(title)}</h2>\n{content}\n</section>'


def _header(bench: Benchmark, df: pd.DataFrame, results_dir: Path, command: str) -> str:
    parts = [f"<h1>{esc(bench.name)}</h1>"]
    if bench.description:
        parts.append(f"<p>{esc(bench.description)}</p>")
    if command:
        parts.append(f'<p class="regen">Regenerate: <code>{esc(command)}</code></p>')
    lines = provenance_lines(df, bench.runs, bench.name, results_dir) + [f"Results folder: {results_dir}"]
    parts.append('<ul class="provenance">' + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>")
    return "<header>\n" + "\n".join(parts) + "\n</header>"


def _describe(spec: RunSpec) -> str:
    return f"{spec.dataset} · {spec.label} · {spec.decoder} · seed {spec.seed}"


def _problems(states: list[RunState], results_dir: Path) -> str:
    failed = [s for s in states if s.state == "failed"]
    waiting = [s for s in states if s.state in NOT_FINISHED]
    if not failed and not waiting:
        return f"<p>None: all {len(states)} runs finished.</p>"
    parts = [f"<h3>Failed ({len(failed)})</h3>"]
    for s in failed:
        parts.append(f'<p><span class="failed">failed</span> <code>{esc(s.spec.run_id)}</code> '
                     f"{esc(_describe(s.spec))} <code>[{esc(str(results_dir / s.spec.run_id))}]</code></p>"
                     f'<pre class="error">{esc(s.detail or "(no error message)")}</pre>')
    parts.append(f"<h3>Not finished ({len(waiting)})</h3>")
    if waiting:
        items = [f'<li><span class="{s.state}">{"missing (not run yet)" if s.state == "missing" else s.state}'
                 f"</span> <code>{esc(s.spec.run_id)}</code> {esc(_describe(s.spec))}"
                 f"{esc(': ' + s.detail) if s.detail else ''}</li>" for s in waiting]
        parts.append("<ul>" + "".join(items) + "</ul>")
    return "\n".join(parts)


def _curves(runs: list[RunSpec], results_dir: Path) -> str:
    groups: dict[tuple[str, str, str], list[RunSpec]] = {}
    for spec in runs:
        groups.setdefault((spec.dataset, spec.label, spec.decoder), []).append(spec)
    several = len({spec.dataset for spec in runs}) > 1
    parts = []
    for (dataset, label, decoder), specs in groups.items():
        title = f"{label} · {decoder}" + (f" · {dataset}" if several else "")
        parts.append(f"<h3>{esc(title)}</h3>\n{curves_html(specs, results_dir, title)}")
    return "\n".join(parts)


def curves_html(specs: list[RunSpec], results_dir: str | Path, title: str = "") -> str:
    """An <img> (inline PNG) of the CURVES panels, one line per seed of these runs, and a note on seeds
    without a training log."""
    logs, absent = [], []
    for spec in specs:
        rows = read_jsonl(Path(results_dir) / spec.run_id / "log.jsonl")
        if rows:
            logs.append((f"seed {spec.seed}", without_latent(rows) if spec.decoder == "lm" else rows))
        else:
            absent.append(str(spec.seed))
    note = f'<p class="note">No training log for seed(s) {", ".join(absent)}.</p>' if absent else ""
    if not logs:
        return note
    panels = tuple(k for k in CURVES if any(r.get(k) is not None for _, rows in logs for r in rows)) or CURVES
    units = max(spec.config.model.latent_dim for spec in specs)
    figure = curves_figure(logs, "epoch", panels, panel_size=(3.2, 2.4), ylim={"valid_au": (-0.3, units + 0.3)})
    png = png_bytes(figure, dpi=100)
    alt = f"{title}: {', '.join(panels)} per epoch"
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">{note}'


# -- runs: provenance and configuration --------------------------------------------------------------
PROVENANCE = ("state", "epochs", "steps", "stop reason", "wall time", "device", "commit", "machine", "version",
              "date")


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _seconds(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value / 60:.1f} min" if value >= 60 else f"{value:.1f} s"


def run_provenance(state: RunState, df: pd.DataFrame, results_dir: str | Path) -> dict[str, str]:
    """The PROVENANCE fields of one run as display strings, from its rows.csv, summary.json, state.json
    and log.jsonl ('-' where the run has none)."""
    folder = Path(results_dir) / state.spec.run_id
    mine = df[df.run_id == state.spec.run_id]
    row = mine.iloc[0].to_dict() if len(mine) else {}
    summary, progress = read_summary(folder), read_state(folder)
    epochs = row.get("epochs")
    if epochs is None or (isinstance(epochs, float) and math.isnan(epochs)):
        epochs = len(read_jsonl(folder / "log.jsonl")) or None
    stop = summary.get("stop_reason") or progress.get("message") or (state.detail if state.state != "failed" else "")
    return {"state": state.state, "epochs": _text(epochs), "steps": _text(row.get("steps", summary.get("steps"))),
            "stop reason": _text(stop), "wall time": _seconds(row.get("wall_seconds")),
            "device": _text(row.get("device")), "commit": _text(row.get("git_commit")),
            "machine": _text(row.get("machine")), "version": _text(row.get("version")),
            "date": _text(row.get("date")).replace("T", " ")}


def _runs(states: list[RunState], df: pd.DataFrame, results_dir: Path) -> str:
    head = ["run", "dataset", "method", "decoder", "seed", *PROVENANCE]
    lines = ['<div class="scroll"><table class="runs">',
             "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    details = []
    for state in states:
        spec = state.spec
        info = run_provenance(state, df, results_dir)
        cells = [spec.run_id, spec.dataset, spec.label, spec.decoder, str(spec.seed)] + [info[k] for k in PROVENANCE]
        tds = [f'<td class="{esc(state.state)}">{esc(c)}</td>' if k == "state" else f"<td>{esc(c)}</td>"
               for k, c in zip(head, cells)]
        lines.append("<tr>" + "".join(tds) + "</tr>")
        details.append(_config_details(spec, state, results_dir))
    lines.append("</tbody></table></div>")
    return "\n".join(lines) + "\n<h3>Configurations</h3>\n" + "\n".join(details)


def _config_details(spec: RunSpec, state: RunState, results_dir: Path) -> str:
    folder = Path(results_dir) / spec.run_id
    saved = read_config_dict(folder)
    where = f"{folder / 'config.json'}" if saved else "the benchmark file (the run has no config.json yet)"
    config = json.dumps(saved or spec.config.to_dict(), indent=2, sort_keys=True)
    status = read_outcome(folder)
    extra = f"<p>bench.json: <code>{esc(json.dumps(status, sort_keys=True))}</code></p>" if status else ""
    return (f"<details><summary><code>{esc(spec.run_id)}</code> {esc(_describe(spec))} "
            f'(<span class="{esc(state.state)}">{esc(state.state)}</span>)</summary>\n'
            f"<p>Parameters: <code>{esc(json.dumps(spec.params, sort_keys=True))}</code>; config from "
            f"{esc(where)}</p>{extra}\n<pre>{esc(config)}</pre></details>")
