"""A finished run whose rows.csv is damaged: `table` refuses in one line and exits non-zero, `bench` rebuilds the
rows from the run's evaluation JSON (no retraining, no re-evaluation) and the rows are the ones it had."""
from __future__ import annotations

import json

import pandas as pd
from click.testing import CliRunner

from textsvae.cli import cli

GRID = """
description = "damaged rows test"
preset = "tiny"
seeds = [0, 1]
eval_splits = ["test", "valid"]
metrics = ["iw_nll", "kl", "mi", "au"]
[settings]
synthetic_train = 64
epochs = 1
iw_samples = 2
monitor_size = 8
[[methods]]
method = "vae"
"""
# what a rebuild may not know: how long the evaluation took, and when the rows were written
UNKNOWN = ["eval_seconds", "wall_seconds", "date"]


def bench(bdir, results):
    return CliRunner().invoke(cli, ["bench", "dmg", "--benchmarks-dir", str(bdir), "--results", str(results),
                                    "--jobs", "1", "--threads", "1"])


def test_a_damaged_rows_file_is_refused_by_table_and_rebuilt_by_bench(tmp_path, write_bench):
    bdir, results = write_bench(tmp_path / "b", "dmg", GRID), tmp_path / "results"
    first = bench(bdir, results)
    assert first.exit_code == 0, first.output
    runs = sorted(p.parent for p in results.glob("*/rows.csv"))
    assert len(runs) == 2
    damaged = runs[0]
    before = pd.read_csv(damaged / "rows.csv", dtype={"run_id": str, "params": str, "error": str})
    untouched = {name: (damaged / name).read_bytes() for name in ("log.jsonl", "eval_test_k2.json", "best.pt")}
    (damaged / "rows.csv").write_text('run_id,split\n"unterminated,\x00\n')

    table = CliRunner().invoke(cli, ["table", "dmg", "--benchmarks-dir", str(bdir), "--results", str(results)])
    assert table.exit_code != 0
    assert table.output.count("\n") == 1 and f"{damaged / 'rows.csv'} is unreadable" in table.output

    again = bench(bdir, results)
    assert again.exit_code == 0, again.output
    after = pd.read_csv(damaged / "rows.csv", dtype={"run_id": str, "params": str, "error": str})
    def known(frame):
        return frame.drop(columns=UNKNOWN).sort_values(["split", "metric"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(known(after), known(before))
    assert len(after) == 2 * 12                                                     # 12 metric rows per split
    assert after.eval_seconds.isna().all() and before.eval_seconds.notna().all()
    assert {name: (damaged / name).read_bytes() for name in untouched} == untouched    # nothing ran again
    assert json.loads((damaged / "bench.json").read_text())["status"] == "finished"
    assert CliRunner().invoke(cli, ["table", "dmg", "--benchmarks-dir", str(bdir), "--results",
                                    str(results)]).exit_code == 0


def test_a_rows_file_without_rows_is_damaged_too(tmp_path, write_bench):
    bdir, results = write_bench(tmp_path / "b", "dmg", GRID), tmp_path / "results"
    assert bench(bdir, results).exit_code == 0
    run = sorted(p.parent for p in results.glob("*/rows.csv"))[1]
    header = (run / "rows.csv").read_text().splitlines()[0]
    (run / "rows.csv").write_text(header + "\n")
    status = CliRunner().invoke(cli, ["bench", "dmg", "--benchmarks-dir", str(bdir), "--results", str(results),
                                      "--status"])
    assert "rows.csv is unreadable" in status.output
    assert bench(bdir, results).exit_code == 0
    assert len(pd.read_csv(run / "rows.csv")) == 2 * 12                  # every metric row of both splits again
