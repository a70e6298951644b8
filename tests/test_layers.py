"""The layer contract in pyproject.toml, checked by import-linter's own `lint-imports`: it holds for the
package, and it breaks when a lower layer imports a higher one (metrics.py importing bench)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lint_imports(package_parent: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
               "sys.exit(c(sys.argv[1:]))", "--config", str(config), "--no-cache"]
    return subprocess.run(command, cwd=package_parent, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers():
    result = lint_imports(REPO, REPO / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "textsvae layers KEPT" in result.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "textsvae", tmp_path / "textsvae", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    metrics = tmp_path / "textsvae" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n\ndef _circle():\n    from . import bench  # noqa: F401\n")
    result = lint_imports(tmp_path, tmp_path / "pyproject.toml")
    assert result.returncode == 1
    assert "textsvae layers BROKEN" in result.stdout and "textsvae.metrics -> textsvae.bench" in result.stdout
