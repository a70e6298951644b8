"""`textsvae report`: one self-contained HTML page whose table is `textsvae table`'s, cell for cell, with
the training curves, the provenance and configuration of every run, the failed runs with their error, the
missing runs and the command that regenerates the page; rendered for real in headless Chromium when present.

One tiny benchmark (dataset "ptb" made of the synthetic corpus, so Li et al.'s published rows join the table)
of five runs: three trained for real (2 epochs of 2 steps), one recorded as failed, one never run.
"""
from __future__ import annotations

import base64
import html
import json
import re
import shlex
import shutil
import struct
import subprocess
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from textsvae.bench.grid import load_benchmark
from textsvae.bench.results import load_results, write_failure
from textsvae.bench.runner import provenance, run_benchmark
from textsvae.cli import cli
from textsvae.core.io import read_jsonl
from textsvae.reporting import page as R
from textsvae.reporting.published import REPORTED

BENCH = """
description = "report test benchmark"
preset = "tiny"
seeds = [0, 1]
decoders = ["standard", "skip"]
eval_splits = ["test"]
reported = ["li2019-ptb"]
metrics = ["iw_nll", "kl", "mi", "au", "ppl"]
[settings]
synthetic_train = 64
epochs = 2
iw_samples = 2
monitor_size = 10
[[datasets]]
name = "ptb"
data = "synthetic"
[[methods]]
method = "vae"
[[methods]]
method = "free-bits"
params = { target = 2.0 }
decoders = ["skip"]
seeds = [0]
"""
ERROR = "TrainingDiverged: loss became NaN at step 1"


@dataclass
class Made:
    bench_dir: Path
    results: Path
    out: Path
    page: str
    markdown: str
    runs: list
    failed: object
    missing: object


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Made:
    root = tmp_path_factory.mktemp("report")
    bench_dir, results = root / "benchmarks", root / "results"
    bench_dir.mkdir()
    (bench_dir / "tiny.toml").write_text(BENCH)
    bench = load_benchmark("tiny", bench_dir)
    trained, failed, missing = bench.runs[:3], bench.runs[3], bench.runs[4]
    assert (failed.label, failed.decoder, failed.seed) == ("vae", "skip", 1) and missing.method == "free-bits"
    report = run_benchmark(replace(bench, runs=trained), results, jobs=1, threads=1)
    assert len(report.finished) == 3, report
    (results / failed.run_id).mkdir()
    write_failure(results / failed.run_id, failed, ERROR, provenance())
    out = root / "page" / "report.html"
    where = ["tiny", "--results", str(results), "--benchmarks-dir", str(bench_dir)]
    page = CliRunner().invoke(cli, ["report", *where, "-o", str(out)])
    assert page.exit_code == 0, page.output
    table = CliRunner().invoke(cli, ["table", *where])
    assert table.exit_code == 0, table.output
    return Made(bench_dir, results, out, out.read_text(), table.output, bench.runs, failed, missing)


class Page(HTMLParser):
    """The parts of a page the tests read: every tag with its attributes, the text of each <section id>,
    the CSS, and each table (by class) as rows of (tbody class, [(cell text, in <strong>)]), header first."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.sections: dict[str, str] = {}
        self.style = ""
        self.tables: dict[str, list[tuple[str, list[tuple[str, bool]]]]] = {}
        self.notes: list[str] = []
        self._section = self._tbody = None
        self._in, self._cell, self._strong, self._note = [], None, False, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        self._in.append(tag)
        if tag == "section":
            self._section = a.get("id")
            self.sections[self._section] = ""
        if tag == "table":
            self.rows = self.tables.setdefault(a.get("class", ""), [])
            self._tbody = ""
        if self._tbody is not None:
            if tag == "tbody":
                self._tbody = a.get("class", "")
            elif tag == "tr":
                self.rows.append((self._tbody, []))
            elif tag in ("td", "th"):
                self._cell, self._strong = [], False
            elif tag == "strong":
                self._strong = True
        if tag == "p" and a.get("class") == "note":
            self._note = []

    def handle_endtag(self, tag):
        if self._in and self._in[-1] == tag:
            self._in.pop()
        if tag == "section":
            self._section = None
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1][1].append(("".join(self._cell).strip(), self._strong))
            self._cell = None
        if tag == "table":
            self._tbody = None
        if tag == "p" and self._note is not None:
            self.notes.append("".join(self._note))
            self._note = None

    def handle_data(self, data):
        if self._in and self._in[-1] == "style":
            self.style += data
        if self._section:
            self.sections[self._section] += data
        if self._cell is not None:
            self._cell.append(data)
        if self._note is not None:
            self._note.append(data)


def markdown_cells(markdown: str) -> tuple[list[list[tuple[str, bool]]], str]:
    """The markdown table's rows as (text, bold) cells, header first, and its footnote."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    rows = [[(c.strip().strip("*"), c.strip().startswith("**")) for c in line.strip("|").split(" | ")]
            for i, line in enumerate(lines) if i != 1]
    note = [line for line in markdown.splitlines() if line.startswith("Mean ±")]
    return rows, note[0]


def check_same_table(page: Page, markdown: str) -> None:
    rows, note = markdown_cells(markdown)
    table = page.tables["results"]
    assert [cells for _, cells in table] == rows
    assert any(bold for row in rows for _, bold in row)              # best cells are marked, and the same ones
    reported = [cells[0][0] for tbody, cells in table if tbody == "reported"]
    assert reported and all("(reported: Li et al. 2019)" in label for label in reported)
    assert [cells[0][0] for _, cells in table if "(reported:" in cells[0][0]] == reported
    assert note in page.notes


def test_the_pages_table_is_textsvae_tables(made: Made):
    check_same_table(Page(made.page), made.markdown)
    rows, _ = markdown_cells(made.markdown)
    assert [r[:3] for r in rows[1:3]] == [[("vae", False), ("standard", False), ("2", False)],
                                          [("vae", False), ("skip", False), ("1", False)]]  # the failed seed is out


def test_failed_and_missing_runs_are_listed(made: Made):
    problems = " ".join(Page(made.page).sections["problems"].split())
    assert "Failed (1)" in problems and "Not finished (1)" in problems
    assert f"{made.failed.run_id} ptb · vae · skip · seed 1" in problems and ERROR in problems
    assert f"missing (not run yet) {made.missing.run_id} ptb · free-bits (target=2.0) · skip · seed 0" in problems


def test_gaps_section_only_where_a_run_reproduces_a_published_row(made: Made, monkeypatch):
    assert "gaps" not in Page(made.page).sections          # Li et al. publish no plain-VAE row to compare with
    monkeypatch.setitem(REPORTED, "test-ptb", {
        "dataset": "ptb", "source": "a test", "rows": [
            {"label": "plain vae", "decoder": "standard", "method": "vae", "iw_nll": 100.0, "kl": 1.0}]})
    bench = load_benchmark("tiny", made.bench_dir)
    page = R.build_report(replace(bench, reported=("test-ptb",)), made.results)
    rows = load_results(made.results)
    mine = rows[(rows.label == "vae") & (rows.decoder == "standard") & (rows.status == "finished")]
    nll, kl = (mine[mine.metric == name].value for name in ("iw_nll", "kl"))
    assert len(nll) == len(kl) == 2
    parsed = Page(page)
    assert "Gap = this suite's mean minus the published value" in parsed.sections["gaps"]
    row = next([text for text, _ in cells] for _, cells in parsed.tables["results"]
               if cells[0][0] == "vae vs plain vae (a test)")
    # columns: only the metrics the matched published row reports (NLL, KL), each ours minus theirs
    assert row == ["vae vs plain vae (a test)", "standard", "2", f"{nll.mean() - 100.0:+.2f} ± {nll.std():.2f}",
                   f"{kl.mean() - 1.0:+.2f} ± {kl.std():.2f}"]


def test_the_page_names_the_command_that_made_it(made: Made):
    command = (f"textsvae bench tiny --results {made.results} --benchmarks-dir {made.bench_dir} && textsvae report "
               f"tiny --results {made.results} --benchmarks-dir {made.bench_dir} -o {made.out}")
    assert f"Regenerate: <code>{html.escape(command)}</code>" in made.page


ROOT = Path(__file__).resolve().parents[1]
IMAGE = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def test_the_committed_quick_page_regenerates_from_its_command(tmp_path: Path):
    """results/report-quick.html, committed with the results of `quick`, is what its own "Regenerate"
    command writes today from the committed results/quick folder: the same page, character for character,
    but for the output path in that command and the PNG bytes of the curves (matplotlib's rendering
    varies by version; the same number of figures, in the same places, is still required)."""
    committed = (ROOT / "results" / "report-quick.html").read_text()
    command = html.unescape(re.search(r"Regenerate: <code>(.*?)</code>", committed).group(1))
    bench, report = command.split(" && ")
    assert bench == "textsvae bench quick --results results/quick"
    args = shlex.split(report)
    assert args[:2] == ["textsvae", "report"] and args[-2] == "-o"
    out = tmp_path / "report-quick.html"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)                                                   # the command's paths are the repo's
        done = CliRunner().invoke(cli, [*args[1:-1], str(out)])
    assert done.exit_code == 0, done.output
    page = out.read_text().replace(f"-o {html.escape(str(out))}", f"-o {html.escape(args[-1])}")
    assert len(IMAGE.findall(committed)) == len(IMAGE.findall(page)) > 0
    assert IMAGE.sub("data:image/png;base64,", page) == IMAGE.sub("data:image/png;base64,", committed)


def test_the_page_is_self_contained(made: Made):
    page = Page(made.page)
    names = {tag for tag, _ in page.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base"}
    for tag, attrs in page.tags:
        for key in ("src", "href", "srcset", "action", "data"):
            assert attrs.get(key, "#").startswith(("data:", "#")), (tag, attrs)
    assert page.style and "url(" not in page.style and "@import" not in page.style
    assert "http://" not in made.page and "https://" not in made.page
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert [a["alt"].split(":")[0] for a in images] == ["vae · standard", "vae · skip"]   # runs with a log
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(attrs["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "No training log for seed(s) 1." in page.sections["curves"]


def test_curves_overlay_each_seed_of_a_method_and_decoder(made: Made, monkeypatch):
    figures = []
    monkeypatch.setattr(R, "png_bytes", lambda fig, dpi: figures.append(fig) or b"png")
    pair = [s for s in made.runs if (s.label, s.decoder) == ("vae", "standard")]
    R.curves_html(pair, made.results, "vae · standard")
    (fig,) = figures
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["KL (valid)", "MI (valid)", "active units (valid)", "loss, -ELBO (valid)"]
    for ax, key in zip(fig.axes, R.CURVES):
        assert [line.get_label() for line in ax.get_lines()] == ["seed 0", "seed 1"]
        for line, spec in zip(ax.get_lines(), pair):
            log = read_jsonl(made.results / spec.run_id / "log.jsonl")
            assert list(line.get_xdata()) == [1, 2] and list(line.get_ydata()) == [r[key] for r in log]
    assert fig.axes[2].get_ylim() == (-0.3, 8.3)                     # AU: 0 to the latent size


def test_every_run_has_its_provenance_and_config(made: Made):
    header, *rows = [[text for text, _ in cells] for _, cells in Page(made.page).tables["runs"]]
    rows = {row[0]: dict(zip(header, row)) for row in rows}
    assert list(rows) == [s.run_id for s in made.runs]
    made_by = provenance()
    for spec in made.runs[:3]:
        row = rows[spec.run_id]
        summary = json.loads((made.results / spec.run_id / "summary.json").read_text())
        assert (row["dataset"], row["method"], row["decoder"], row["seed"]) == ("ptb", spec.label, spec.decoder,
                                                                                 str(spec.seed))
        assert (row["state"], row["epochs"], row["steps"]) == ("finished", "2", str(summary["steps"]))
        assert row["stop reason"] == summary["stop_reason"] == "reached 2 epochs"
        assert (row["commit"], row["machine"]) == (made_by["git_commit"], made_by["machine"])
        assert row["wall time"].endswith(" s") and row["date"][:2] == "20"
    failed, missing = rows[made.failed.run_id], rows[made.missing.run_id]
    assert (failed["state"], failed["commit"], failed["epochs"]) == ("failed", made_by["git_commit"], "-")
    assert missing["state"] == "missing" and {missing[k] for k in R.PROVENANCE if k != "state"} == {"-"}
    details = made.page.split("<details>")[1:]
    assert len(details) == len(made.runs)
    for spec, block in zip(made.runs, details):
        shown = json.loads(html.unescape(block.split("<pre>")[1].split("</pre>")[0]))
        saved = made.results / spec.run_id / "config.json"
        assert shown == (json.loads(saved.read_text()) if saved.exists() else spec.config.to_dict())


@pytest.mark.parametrize("args, message", [
    (["report", "nope", "-o", "{tmp}/r.html"], "Error: unknown benchmark 'nope'; valid benchmarks: "),
    (["report", "tiny", "--results", "{tmp}/none", "-o", "{tmp}/r.html"],
     "Error: results folder not found: {tmp}/none"),
    (["report", "tiny", "-o", "{tmp}/file.txt/r.html"], "Error: File exists: {tmp}/file.txt"),
], ids=["unknown benchmark", "no results folder", "unwritable output"])
def test_bad_input_is_one_line_and_nonzero_exit(made: Made, tmp_path: Path, args, message):
    """Bad input exits 2 (as click's usage errors); an unwritable output is the system's reason, exit 1
    (as in every other command)."""
    (tmp_path / "file.txt").write_text("a file")
    filled = [a.format(tmp=tmp_path) for a in args]
    if "--results" not in filled:
        filled[2:2] = ["--results", str(made.results)]
    filled[2:2] = ["--benchmarks-dir", str(made.bench_dir)]
    result = CliRunner().invoke(cli, filled)
    assert result.exit_code == (1 if "file.txt" in args[-1] else 2), result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(tmp=tmp_path)), result.output


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("/usr/bin/chromium")


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_a_real_browser_renders_the_table(made: Made, tmp_path: Path):
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = made.out.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    check_same_table(Page(dom.stdout), made.markdown)
    shot = tmp_path / "shot.png"
    done = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1366,900", url], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1366, 900) and len(data) > 20_000   # a drawn page, not blank
