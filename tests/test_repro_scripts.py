"""The ptb-repro grid's shell scripts: the snapshot never replaces a committed run with a shorter
restart, and the resume script needs nothing outside the repository."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_run(folder: Path, status: str, step: int, log: str) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "state.json").write_text(json.dumps({"status": status, "step": step}))
    (folder / "log.jsonl").write_text(log)
    (folder / "last.pt").write_bytes(b"checkpoint")


def snapshot(home: Path, results: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PTB_REPRO_HOME": str(home), "PTB_REPRO_RESULTS": str(results)}
    return subprocess.run(["bash", str(REPO / "benchmarks/ptb_repro_snapshot.sh"), "--copy-only"],
                          env=env, capture_output=True, text=True, timeout=60)


def test_snapshot_keeps_a_committed_run_over_a_shorter_restart(tmp_path):
    home, results = tmp_path / "home", tmp_path / "results"
    make_run(home / "results/restarted", "running", 1_812, "restart\n")
    make_run(results / "ptb-repro/restarted", "interrupted", 2_273, "committed\n")
    make_run(home / "results/unfinished", "running", 130_000, "longer but unfinished\n")
    make_run(results / "ptb-repro/unfinished", "finished", 120_980, "finished\n")
    make_run(home / "results/ahead", "running", 5_000, "ahead\n")
    make_run(results / "ptb-repro/ahead", "running", 4_000, "behind\n")
    make_run(home / "results/new", "finished", 100, "new\n")
    done = snapshot(home, results)
    assert done.returncode == 0, done.stderr
    dest = results / "ptb-repro"
    assert (dest / "restarted/log.jsonl").read_text() == "committed\n"
    assert (dest / "unfinished/log.jsonl").read_text() == "finished\n"
    assert (dest / "ahead/log.jsonl").read_text() == "ahead\n"       # a longer copy replaces it
    assert (dest / "new/log.jsonl").read_text() == "new\n"
    assert not (dest / "new/last.pt").exists()                         # never a checkpoint
    kept = [line for line in done.stderr.splitlines() if "kept" in line]
    assert len(kept) == 2 and "restarted" in done.stderr and "unfinished" in done.stderr


def test_resume_refuses_a_missing_data_folder_in_one_line(tmp_path):
    done = subprocess.run(["bash", str(REPO / "benchmarks/ptb_repro_resume.sh"), "--data", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"ptb_repro_resume: no folder {tmp_path / 'nope'}"]


def test_benchmarks_name_no_file_outside_the_repository():
    for path in (REPO / "benchmarks").rglob("*"):
        if path.is_file() and path.suffix in {".sh", ".py", ".toml"}:
            text = path.read_text()
            assert "../shared" not in text and "/work/shared" not in text, path
