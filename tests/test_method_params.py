"""Every method parameter's documented range, at its edges, and the registry's one-line errors.

The oracle is the range each parameter's help and docs/protocol.md state, written out here: the edge
value itself must be accepted, the nearest value outside rejected with the message
"method 'NAME': FIELD must be RULE, got VALUE". A check written `>` where the doc says `>=`, or
a message lost, fails here.
"""
from __future__ import annotations

import dataclasses
import sys

import pytest

from textsvae.methods import REGISTRY, Method, MethodError, build_method, load_plugin, register

# (method, field, accepted edge values, rejected values, rule as written in the message)
RANGES = [
    ("anneal", "start", [0.0, 1.0], [-0.1, 1.1], "in [0, 1]"),
    ("anneal", "epochs", [0.0], [-0.5], ">= 0"),
    ("anneal", "steps", [0], [-1], ">= 0"),
    ("beta", "beta", [0.0], [-0.1], ">= 0"),
    ("cyclical", "cycles", [1], [0], ">= 1"),
    ("cyclical", "ratio", [1.0, 1e-6], [0.0, 1.5], "in (0, 1]"),
    ("cyclical", "total_steps", [0], [-1], ">= 0"),
    ("cyclical", "start", [0.0, 1.0], [-0.1, 1.1], "in [0, 1]"),
    ("cyclical", "cycle_epochs", [0.0, 0.5], [-1.0], ">= 0"),
    ("logistic", "k", [1e-9], [0.0, -0.1], "> 0"),
    ("logistic", "x0", [0.0], [-1.0], ">= 0"),
    ("free-bits", "target", [0.0], [-1.0], ">= 0"),
    ("word-dropout", "rate", [0.0, 1.0], [-0.1, 1.1], "in [0, 1]"),
    ("bn-vae", "gamma", [1e-9], [0.0], "> 0"),
    ("bn-vae", "eps", [1e-12], [0.0], "> 0"),
    ("sa-vae", "steps", [0], [-1], ">= 0"),
    ("sa-vae", "lr", [1e-9], [0.0], "> 0"),
    ("sa-vae", "momentum", [0.0, 0.999], [1.0, -0.1], "in [0, 1)"),
    ("sa-vae", "max_grad_norm", [0.0], [-1.0], ">= 0"),
    ("sa-vae", "svi_batch", [1], [0], ">= 1"),
    ("aggressive", "max_inner", [1], [0], ">= 1"),
    ("aggressive", "check_every", [1], [0], ">= 1"),
    ("pretrain-fb", "pretrain_epochs", [-1, 0], [-2], ">= 0, or -1 for a whole run"),
    ("pretrain-fb", "target", [0.0], [-1.0], ">= 0"),
    ("pretrain-fb", "kl_start", [0.0, 1.0], [-0.1, 1.1], "in [0, 1]"),
    ("pretrain-fb", "warmup_epochs", [0.0], [-1.0], ">= 0"),
    ("delta-vae", "delta", [0.0, 3.0], [-0.01], ">= 0"),
    ("du-vae", "gamma", [1e-9], [0.0], "> 0"),
    ("du-vae", "p_drop", [0.0, 0.99], [1.0, -0.1], "in [0, 1)"),
    ("du-vae", "delta_rate", [1e-9], [0.0], "> 0"),
    ("du-vae", "eps", [1e-12], [0.0], "> 0"),
    ("dg-vae", "samples", [1], [0], ">= 1"),
    ("mdr", "target", [0.0], [-1.0], ">= 0"),
    ("mdr", "lr", [1e-9], [0.0], "> 0"),
    ("mdr", "init", [1e-9], [0.0], "> 0"),
    ("wae-mmd", "mmd_weight", [0.0], [-1.0], ">= 0"),
    ("wae-mmd", "kl_weight", [0.0], [-0.5], ">= 0"),
    ("wae-mmd", "samples", [1], [0], ">= 1"),
    ("bow", "weight", [0.0], [-1.0], ">= 0"),
    ("bow", "hidden", [1], [0], ">= 1"),
]


@pytest.mark.parametrize("name, field, ok, bad, rule", RANGES, ids=[f"{r[0]}.{r[1]}" for r in RANGES])
def test_each_parameter_accepts_its_edges_and_rejects_what_is_outside(name, field, ok, bad, rule):
    for value in ok:
        assert getattr(build_method(name, {field: value}).params, field) == value
    for value in bad:
        with pytest.raises(MethodError) as info:
            build_method(name, {field: value})
        assert str(info.value) == f"method '{name}': {field} must be {rule}, got {value}"


@pytest.mark.parametrize("name", ["free-bits", "pretrain-fb"])
def test_free_bits_modes_are_the_documented_three(name):
    for mode in ("dim", "sentence", "sentence-dim"):
        assert build_method(name, {"mode": mode}).params.mode == mode
    with pytest.raises(MethodError) as info:
        build_method(name, {"mode": "word"})
    assert str(info.value) == f"method '{name}': mode must be one of dim, sentence, sentence-dim, got 'word'"


def test_cyclical_length_settings_exclude_each_other():
    with pytest.raises(MethodError) as info:
        build_method("cyclical", {"cycle_epochs": 2.0, "cycles": 3})
    assert str(info.value) == ("method 'cyclical': cycle_epochs sets the cycle length: leave cycles and "
                               "total_steps at their defaults")
    with pytest.raises(MethodError, match="cycle_epochs sets the cycle length"):
        build_method("cyclical", {"cycle_epochs": 2.0, "total_steps": 10})
    with pytest.raises(MethodError) as info:
        build_method("cyclical", {"preset": "nope"})
    assert str(info.value) == "method 'cyclical': unknown preset 'nope'; valid presets: fu2019-ptb"


def test_every_parameter_has_a_help_line():
    """`textsvae methods` prints each parameter's help: every field carries one, under the key 'help'."""
    for name, cls in REGISTRY.items():
        for f in dataclasses.fields(cls.Params):
            assert isinstance(f.metadata.get("help"), str) and f.metadata["help"], (name, f.name)


# -- the registry, composites and plugins ------------------------------------------------------------------
def test_composite_parameter_routing_errors_name_the_parts():
    with pytest.raises(MethodError) as info:
        build_method("anneal+word-dropout", {"nope.rate": 0.5})
    assert str(info.value) == "parameter 'nope.rate' names 'nope', which is not a part of 'anneal+word-dropout'"
    with pytest.raises(MethodError) as info:
        build_method("beta+word-dropout", {"foo": 1})
    assert str(info.value) == ("unknown parameter 'foo' for method 'beta+word-dropout'; valid parameters: "
                               "beta.beta, word-dropout.rate")


@pytest.fixture
def scratch_registry():
    saved = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


def test_a_composite_of_methods_without_parameters_lists_none(scratch_registry):
    @register("noparams-test")
    class NoParamsTest(Method):
        """A method without parameters, for this test."""

    with pytest.raises(MethodError) as info:
        build_method("vae+noparams-test", {"foo": 1})
    assert str(info.value) == "unknown parameter 'foo' for method 'vae+noparams-test'; valid parameters: (none)"


def test_params_must_be_a_dataclass(scratch_registry):
    class Bad(Method):
        """Params is not a dataclass."""
        Params = dict

    with pytest.raises(MethodError) as info:
        register("bad-params-test")(Bad)
    assert str(info.value) == "method 'bad-params-test': Params must be a dataclass"
    assert "bad-params-test" not in REGISTRY


def test_composite_needs_z_when_any_part_does():
    assert build_method("anneal+word-dropout").needs_latent is True
    assert build_method("vae+word-dropout").needs_latent is False


PLUGIN = '''
from textsvae.methods import Method, register


@register("{name}")
class Plugged(Method):
    """A plugin method ({name}) for a test."""
'''


def test_plugins_of_the_same_file_name_in_two_folders_both_load(tmp_path, scratch_registry):
    """The module name comes from the file name; a second file of that name elsewhere is imported too."""
    for folder, name in (("one", "plug-one-test"), ("two", "plug-two-test")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "plug.py").write_text(PLUGIN.format(name=name))
    try:
        load_plugin(tmp_path / "one" / "plug.py")
        load_plugin(tmp_path / "one" / "plug.py")                 # again: a no-op, no duplicate error
        load_plugin(tmp_path / "two" / "plug.py")
        assert {"plug-one-test", "plug-two-test"} <= set(REGISTRY)
    finally:
        sys.modules.pop("textsvae_plugin_plug", None)


def test_a_plugin_that_fails_to_import_is_a_one_line_error_and_leaves_nothing(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("x = 1 / 0\n")
    with pytest.raises(MethodError) as info:
        load_plugin(bad)
    assert str(info.value) == f"plugin {bad} failed to import: ZeroDivisionError: division by zero"
    assert "textsvae_plugin_broken" not in sys.modules
    clash = tmp_path / "clash.py"
    clash.write_text(PLUGIN.format(name="vae"))                    # a name already taken: MethodError itself
    with pytest.raises(MethodError, match="already registered"):
        load_plugin(clash)
    assert "textsvae_plugin_clash" not in sys.modules


@pytest.mark.parametrize("package, not_registering", [
    ("textsvae.methods", {"base", "composite", "context", "schedules"}),
    ("textsvae.trackers", {"base"}), ("textsvae.bench.executors", {"base"})])
def test_importing_a_registry_imports_every_module_of_its_folder(package, not_registering):
    """A fresh interpreter that imports the package has imported each .py file of its folder (the oracle: a
    listing of the folder), so a module dropped there registers without an edit anywhere else."""
    import subprocess
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / Path(*package.split("."))
    files = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    code = f"import sys, {package}; print(' '.join(m for m in sys.modules if m.startswith('{package}.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    imported = {m.removeprefix(package + ".").split(".")[0] for m in out.split()}
    assert files - not_registering <= imported, files - imported


def test_parameters_are_typed_and_listed_with_their_help():
    from textsvae.methods import method_parameter_help
    from textsvae.methods.anneal import Anneal, AnnealParams

    assert Anneal().params == AnnealParams()                               # no params given: the defaults
    epochs = build_method("anneal", {"epochs": 2}).params.epochs
    assert epochs == 2.0 and type(epochs) is float                         # an int for a float field
    assert method_parameter_help("word-dropout") == {"rate": REGISTRY["word-dropout"].Params.__dataclass_fields__[
        "rate"].metadata["help"]}
    assert method_parameter_help("word-dropout")["rate"].startswith("probability of replacing")
    with pytest.raises(MethodError) as info:
        build_method("anneal", {"rat": 1})
    assert str(info.value) == "unknown parameter 'rat' for method 'anneal'; valid parameters: start, epochs, steps"
    with pytest.raises(MethodError) as info:
        build_method("vae", {"x": 1})
    assert str(info.value) == "unknown parameter 'x' for method 'vae'; valid parameters: (none)"
    from textsvae.methods import method_names
    with pytest.raises(MethodError) as info:
        build_method("nope")
    assert str(info.value) == (f"unknown method 'nope'; valid methods: {', '.join(method_names())} "
                               "(combine them with '+')")


def test_a_parameter_without_help_shows_an_empty_line(scratch_registry):
    from textsvae.methods import method_parameter_help

    @dataclasses.dataclass
    class Plain:
        size: int = 3

    @register("plain-params-test")
    class PlainTest(Method):
        """A method whose parameter has no help text."""
        Params = Plain

    assert method_parameter_help("plain-params-test") == {"size": ""}


def test_param_is_a_field_with_its_default_and_help():
    from textsvae.methods.base import param

    f = param(3, "how many")
    assert f.default == 3 and dict(f.metadata) == {"help": "how many"}


def test_a_dotted_parameter_name_belongs_to_the_part_before_the_first_dot():
    with pytest.raises(MethodError) as info:
        build_method("anneal+word-dropout", {"anneal.x.y": 1})
    assert str(info.value) == "unknown parameter 'x.y' for method 'anneal'; valid parameters: start, epochs, steps"


def test_a_module_of_the_plugins_name_without_a_file_is_replaced(tmp_path, scratch_registry):
    import types

    (tmp_path / "fileless.py").write_text(PLUGIN.format(name="fileless-test"))
    sys.modules["textsvae_plugin_fileless"] = types.ModuleType("textsvae_plugin_fileless")   # no __file__
    try:
        load_plugin(tmp_path / "fileless.py")
        assert "fileless-test" in REGISTRY
    finally:
        sys.modules.pop("textsvae_plugin_fileless", None)
