"""A metric is declared once (core/metric_registry.py) and every place that lists metrics reads that
declaration: `eval`'s printout, the options that add metrics, a benchmark's switches, the trackers'
headline columns. Checked on a real trained run, against the names the evaluation JSON holds."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from textsvae.bench.grid import load_benchmark
from textsvae.cli import cli
from textsvae.core.metric_registry import METRICS, OPT_INS, Metric, metric_lines, metric_names, opt_ins_for
from textsvae.trackers.tensorboard_log import HPARAM_METRICS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("reg") / "run"
    result = CliRunner().invoke(cli, ["train", "--data", "synthetic", "--preset", "tiny", "--epochs", "1",
                                      "--threads", "1", "-o", str(run)])
    assert result.exit_code == 0, result.output
    return run


def printed_names(output: str) -> list[str]:
    """The metric names `eval` printed: the first word of each "name value" cell after the head line."""
    cells = [cell for line in output.splitlines()[1:] for cell in line.split("  ") if cell and cell[0] != "("]
    return [cell.split()[0] for cell in cells]


def test_every_option_of_a_metric_is_a_declared_option():
    assert {m.opt_in for m in METRICS.values()} <= set(OPT_INS)
    assert all(m.line for m in METRICS.values())


@pytest.mark.parametrize("flags, options", [([], ("",)), (["--recon"], ("", "recon")),
                                            (["--mi-batch", "16"], ("", "mi_batch"))])
def test_eval_prints_exactly_the_declared_metrics_of_the_options_asked_for(trained, flags, options):
    result = CliRunner().invoke(cli, ["eval", str(trained), "--split", "test", "-k", "5", "--threads", "1", *flags])
    assert result.exit_code == 0, result.output
    names = printed_names(result.output[result.output.index("test:"):])
    assert sorted(names) == sorted(metric_names(options))
    saved = json.loads(next(trained.glob("eval_test_k5*.json")).read_text())
    assert set(metric_names(options)) <= set(saved)     # the JSON holds each one it printed


def test_a_newly_declared_metric_is_printed_with_its_digits_and_settings(monkeypatch):
    monkeypatch.setitem(METRICS, "tokens_per_word", Metric("tokens_per_word", "tok/word", None, 1, ("vocab",),
                                                           line="likelihood"))
    lines = metric_lines({"iw_nll": 10.0, "tokens_per_word": 1.26, "vocab": 32, "n_sentences": 4})
    assert lines == ["iw_nll 10.00  tokens_per_word 1.3  (vocab=32)"]


def test_a_benchmark_switches_on_the_options_of_the_metrics_it_names(write_bench, tmp_path):
    grid = ('description = "d"\npreset = "tiny"\nseeds = [0]\ndecoders = ["standard"]\n'
            'metrics = ["iw_nll", "recon_bleu", "mi_minibatch"]\n[[methods]]\nmethod = "vae"\n')
    run = load_benchmark("opts", write_bench(tmp_path / "b", "opts", grid)).runs[0]
    assert run.recon and run.mi_batch
    assert opt_ins_for(["iw_nll", "kl"]) == () and opt_ins_for(["probe_acc", "recon_acc"]) == ("probe", "recon")


def test_the_trackers_headline_columns_are_the_papers_five_and_the_validation_loss():
    assert HPARAM_METRICS == ("test/iw_nll", "test/ppl", "test/kl", "test/mi", "test/au", "valid_loss")
