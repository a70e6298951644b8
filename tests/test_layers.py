"""The layer contract in pyproject.toml, checked by import-linter's own `lint-imports`: it holds for the
package; it breaks when a lower layer imports a higher one, and (being exhaustive) when a module or package
appears directly under textsvae/ without a place in the layers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lint_imports(package_parent: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
               "sys.exit(c(sys.argv[1:]))", "--config", str(config), "--no-cache"]
    return subprocess.run(command, cwd=package_parent, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def copy(tmp_path):
    """The package and pyproject.toml copied, to be broken without touching the checkout."""
    shutil.copytree(REPO / "textsvae", tmp_path / "textsvae", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_layers():
    result = lint_imports(REPO, REPO / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "textsvae layers KEPT" in result.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(copy):
    metrics = copy / "textsvae" / "kernels" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n\ndef _circle():\n    from ..bench import runner  # noqa: F401\n")
    result = lint_imports(copy, copy / "pyproject.toml")
    assert result.returncode == 1
    assert "textsvae layers BROKEN" in result.stdout
    assert "textsvae.kernels.metrics -> textsvae.bench.runner" in result.stdout


def test_siblings_of_one_layer_must_not_import_each_other(copy):
    probe = copy / "textsvae" / "evaluation" / "probe.py"
    probe.write_text(probe.read_text() + "\n\ndef _sideways():\n    from ..training import train  # noqa: F401\n")
    result = lint_imports(copy, copy / "pyproject.toml")
    assert result.returncode == 1
    assert "textsvae.evaluation.probe -> textsvae.training.train" in result.stdout


def test_a_new_module_outside_the_layers_breaks_the_contract(copy):
    (copy / "textsvae" / "helpers.py").write_text('"""A module dropped beside the layer packages."""\n')
    result = lint_imports(copy, copy / "pyproject.toml")
    assert result.returncode == 1
    assert "textsvae.helpers" in result.stdout + result.stderr
