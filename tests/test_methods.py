"""Methods: one conformance test over the whole registry, then each method's own behaviour."""
from __future__ import annotations

import itertools
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from textsvae.cli import cli
from textsvae.core.config import ConfigError, apply_overrides, preset_config
from textsvae.core.decoders import decoder_names
from textsvae.core.io import read_jsonl
from textsvae.data.batching import make_batch
from textsvae.data.vocab import BOS_ID, PAD_ID, UNK_ID
from textsvae.kernels.metrics import gaussian_kl
from textsvae.methods import REGISTRY, Method, MethodError, build_method, load_plugin, method_names, register
from textsvae.methods import context
from textsvae.methods.aggressive import Aggressive, AggressiveParams
from textsvae.methods.bn_vae import BNVAE, BNVAEParams
from textsvae.methods.free_bits import free_bits_kl
from textsvae.methods.sa_vae import SAVAE, SAVAEParams, refine
from textsvae.methods.word_dropout import drop_words
from textsvae.model.models import TextVAE
from textsvae.training.lr_rules import end_of_epoch
from textsvae.training.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "my_method.py"


def make_trainer(tmp_path: Path, corpus: Path, method: Method, decoder: str = "standard", **overrides) -> Trainer:
    config = apply_overrides(preset_config("tiny"), {"data": str(corpus), "decoder": decoder,
                                                     "progress": False, "seed": 0, **overrides})
    return Trainer(config, tmp_path / "run", method=method)


def run_cli(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


# -- conformance: every registered method, every decoder ------------------------------------------
def check_conformance(name: str, decoder: str, corpus: Path, run: Path, extra: tuple[str, ...] = ()) -> None:
    """Train 2 steps through the CLI; the loss stays finite, parameters and method state round-trip."""
    result = run_cli(["train", *extra, "--data", str(corpus), "--decoder", decoder, "--method", name,
                      "--epochs", "1", "--threads", "1", "--set", "max_steps=2", "--set", "progress=false",
                      "-o", str(run), "--json"])
    method = build_method(name)
    if decoder == "lm" and method.needs_latent:
        assert result.exit_code == 2
        message = result.output.strip()
        assert "\n" not in message and name in message and "lm" in message
        return
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["method"] == name
    assert saved["method_params"] == method.param_values()                      # defaults, all of them
    assert build_method(name, saved["method_params"]).param_values() == method.param_values()
    row = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 2
    for key in ("train_loss", "train_rec", "valid_loss", "valid_rec", "valid_kl"):
        assert math.isfinite(row[key]), key
    assert row["valid_kl"] >= -1e-5 and row["beta"] >= 0  # KL >= 0 up to float rounding
    assert row["valid_loss"] == pytest.approx(row["valid_rec"] + row["valid_kl"], rel=1e-6)
    if decoder == "lm":
        assert row["valid_kl"] == 0
    # a method without state checkpoints none; one with state round-trips it (and, in
    # test_method_state_changed_by_training_is_restored, a state that training changed)
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)["method"]
    fresh = build_method(name, saved["method_params"])
    if not fresh.state_dict():
        assert state == {}
    else:
        assert set(fresh.state_dict()) <= set(state)          # more once optimisers exist (aggressive)
        fresh.load_state_dict(state)
        assert_same_state(fresh.state_dict(), state)


def assert_same_state(a, b, where: str = "state") -> None:
    """Equal nested method states: dicts, lists, tensors (by value) and scalars."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    else:
        assert a == b and type(a) is type(b), (where, a, b)


@pytest.mark.parametrize("decoder", decoder_names())
@pytest.mark.parametrize("name", method_names())
def test_every_method_trains_with_every_decoder(name, decoder, tiny_corpus, tmp_path):
    check_conformance(name, decoder, tiny_corpus, tmp_path / "run")


STATEFUL = {
    # method, its -p settings, epochs: after them the state differs from a fresh instance's
    "pretrain-fb": (["-p", "pretrain_epochs=1", "-p", "warmup_epochs=1"], 2),
    "aggressive": (["-p", "max_inner=4", "-p", "check_every=2"], 1),
    "aggressive+anneal": (["-p", "max_inner=4", "-p", "check_every=2"], 1),
}


@pytest.mark.parametrize("name", STATEFUL)
def test_method_state_changed_by_training_is_restored(name, tiny_corpus, tmp_path):
    """Training moves a stateful method's state away from a fresh instance's (pretrain-fb's phase and reset
    step; aggressive's MI reference, inner-step count, minibatch generator and optimisers); last.pt holds
    that state, a fresh instance loaded with it reports it back, and it acts on it."""
    extra, epochs = STATEFUL[name]
    run = tmp_path / "run"
    result = run_cli(["train", "--data", str(tiny_corpus), "--method", name, *extra, "--epochs", str(epochs),
                      "--threads", "1", "--set", "progress=false", "-o", str(run)])
    assert result.exit_code == 0, result.output
    params = json.loads((run / "config.json").read_text())["train"]["method_params"]
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)["method"]
    untrained = build_method(name, params).state_dict()
    fresh = build_method(name, params)
    fresh.load_state_dict(state)
    assert_same_state(fresh.state_dict(), state)
    last = read_jsonl(run / "log.jsonl")[-1]
    if name == "pretrain-fb":
        assert untrained == {"pretraining": True, "reset_step": 0}
        assert state == {"pretraining": False, "reset_step": 2}           # reset after epoch 1 (2 steps)
        assert fresh.beta(3, 1, 2) == pytest.approx(0.5) and untrained["pretraining"]   # warm-up from step 2
        assert fresh.kl_term(torch.zeros(1, 8), torch.zeros(1, 8)).tolist() == pytest.approx([8.0])  # free bits
        return
    prefix = "aggressive." if "+" in name else ""
    part = fresh.parts[0] if "+" in name else fresh
    assert untrained[f"{prefix}pre_mi"] == 0.0 and untrained[f"{prefix}inner_steps"] == 0       # He et al.: pre_mi = 0
    assert f"{prefix}enc_opt" not in untrained
    assert state[f"{prefix}pre_mi"] == pytest.approx(last["valid_mi"])      # epoch 1's validation MI
    assert 1 <= state[f"{prefix}inner_steps"] <= 4 and state[f"{prefix}lr"] == last["lr"]
    seed = json.loads((run / "config.json").read_text())["train"]["seed"]
    seeded = torch.Generator().manual_seed(seed + 7919).get_state()       # as setup() leaves it
    assert not torch.equal(state[f"{prefix}generator"], seeded)             # fresh minibatches were drawn
    assert len(state[f"{prefix}enc_opt"]["state"]) > 0                      # Adam moments of the encoder
    assert torch.equal(part.generator.get_state(), state[f"{prefix}generator"])  # the next minibatches: the same
    assert part.aggressive is state[f"{prefix}aggressive"] and part.pre_mi == state[f"{prefix}pre_mi"]


def contract_names(protocol: type) -> set[str]:
    """The attributes and calls a context protocol lists (its class and its bases')."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls.__module__ == context.__name__:
            names |= set(getattr(cls, "__annotations__", {}))
            names |= {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
    return names


class Guard:
    """Lets a method reach only the names of its contract: anything else is an AttributeError."""

    def __init__(self, inner, allowed: set[str]):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_allowed", allowed)

    def __getattr__(self, name):
        if name not in self._allowed:
            raise AttributeError(f"'{name}' is not in the method contract (methods/context.py)")
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        if name not in self._allowed:
            raise AttributeError(f"'{name}' is not in the method contract (methods/context.py)")
        setattr(self._inner, name, value)


@pytest.mark.parametrize("name", method_names())
def test_every_method_keeps_to_the_written_contract(name, tiny_corpus, tmp_path):
    """setup sees only SetupContext; train_step and end_epoch only TrainingContext, through a phase switch."""
    params = {"pretrain-fb": {"pretrain_epochs": "1"}}.get(name, {})
    trainer = make_trainer(tmp_path, tiny_corpus, build_method(name, params), epochs=3)
    method = build_method(name, params)
    setup_view = Guard(trainer, contract_names(context.SetupContext))
    method.setup(setup_view)
    assert contract_names(context.SetupContext) == {"model", "config", "device", "steps_per_epoch"}
    view = Guard(trainer, contract_names(context.TrainingContext))
    batches = itertools.cycle(list(trainer.train_batches(0)))
    for step in range(2):
        out = method.train_step(view, next(batches), method.beta(step, 0, trainer.steps_per_epoch))
        assert torch.isfinite(out.loss)
    trainer.state.epoch = 1
    method.end_epoch(view, {"loss": 1.0, "mi": 0.5})
    out = method.train_step(view, next(batches), 1.0)
    assert torch.isfinite(out.loss)


def test_combined_method_through_the_cli(tiny_corpus, tmp_path):
    """A composite trains; prefixed and unprefixed -p land in config.json as 'part.key'."""
    run = tmp_path / "run"
    result = run_cli(["train", "--data", str(tiny_corpus), "--method", "anneal+word-dropout", "-p", "rate=0.5",
                      "-p", "anneal.start=0", "--epochs", "1", "--set", "max_steps=2", "--set", "progress=false",
                      "-o", str(run)])
    assert result.exit_code == 0, result.output
    params = json.loads((run / "config.json").read_text())["train"]["method_params"]
    assert params == {"anneal.start": 0.0, "anneal.epochs": 10.0, "anneal.steps": 0, "word-dropout.rate": 0.5}
    row = json.loads((run / "log.jsonl").read_text())
    assert row["beta"] == pytest.approx(1 / 20)  # step 1 of a 10-epoch ramp from 0 at 2 steps per epoch


# -- the registry ----------------------------------------------------------------------------------
def test_duplicate_and_malformed_names_fail_loudly():
    class Other(Method):
        """Another method."""

    with pytest.raises(MethodError, match="already registered"):
        register("vae")(Other)
    with pytest.raises(MethodError, match="letters, digits"):
        register("a+b")(Other)
    assert REGISTRY["vae"] is not Other and "a+b" not in REGISTRY


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(MethodError, match=r"unknown method 'nope'; valid methods: .*aggressive.*word-dropout"):
        build_method("nope")
    with pytest.raises(MethodError, match=r"unknown parameter 'rat' for method 'word-dropout'; valid parameters: rate"):
        build_method("word-dropout", {"rat": "0.1"})
    with pytest.raises(MethodError, match="unknown method 'nope'"):
        build_method("anneal+nope")


@pytest.mark.parametrize("name,params,fragment", [
    ("anneal", {"start": "-0.1"}, "start must be in [0, 1]"),
    ("anneal", {"epochs": "-1"}, "epochs must be >= 0"),
    ("cyclical", {"ratio": "0"}, "ratio must be in (0, 1]"),
    ("cyclical", {"ratio": "1.5"}, "ratio must be in (0, 1]"),
    ("cyclical", {"cycles": "0"}, "cycles must be >= 1"),
    ("logistic", {"k": "-0.1"}, "k must be > 0"),
    ("beta", {"beta": "-1"}, "beta must be >= 0"),
    ("free-bits", {"mode": "word"}, "mode must be one of dim, sentence"),
    ("free-bits", {"target": "-8"}, "target must be >= 0"),
    ("word-dropout", {"rate": "-0.1"}, "rate must be in [0, 1]"),
    ("word-dropout", {"rate": "1.5"}, "rate must be in [0, 1]"),
    ("bn-vae", {"gamma": "0"}, "gamma must be > 0"),
    ("sa-vae", {"steps": "-1"}, "steps must be >= 0"),
    ("sa-vae", {"lr": "0"}, "lr must be > 0"),
    ("aggressive", {"check_every": "0"}, "check_every must be >= 1"),
    ("pretrain-fb", {"kl_start": "2"}, "kl_start must be in [0, 1]"),
])
def test_bad_parameter_values_are_one_line_errors(name, params, fragment):
    with pytest.raises(MethodError) as info:
        build_method(name, params)
    message = str(info.value)
    assert message.startswith(f"method '{name}': ") and fragment in message and "\n" not in message


def test_unparsable_value_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"bad value 'abc' for word-dropout.rate: expected float"):
        build_method("word-dropout", {"rate": "abc"})


def test_bad_value_through_the_cli_is_one_line(tiny_corpus, tmp_path):
    result = run_cli(["train", "--data", str(tiny_corpus), "--method", "cyclical", "-p", "ratio=1.5",
                      "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: method 'cyclical': ratio must be in (0, 1], got 1.5"


# -- composites ------------------------------------------------------------------------------------
def test_composite_routes_parameters_and_hooks():
    m = build_method("anneal+word-dropout", {"rate": "1.0", "anneal.start": "0.2", "anneal.steps": "10"})
    assert m.name == "anneal+word-dropout"
    assert m.owners == {"beta": "anneal", "decoder_inputs": "word-dropout"}
    assert m.beta(5, 0, 100) == pytest.approx(0.6)          # anneal's: 0.2 + 0.8 * 5 / 10
    model = TextVAE(20, preset_config("tiny").model).train()
    batch = make_batch([[5, 6, 7], [8, 9]], [0, 1])
    inputs = m.decoder_inputs(model, batch)                  # word dropout's, rate 1
    assert inputs[0].tolist() == [BOS_ID, UNK_ID, UNK_ID, UNK_ID]


def test_composite_parts_call_each_other():
    """aggressive's train_step calls the base loss, which must use word dropout's decoder inputs."""
    m = build_method("aggressive+word-dropout")
    aggressive, word_dropout = m.parts
    assert aggressive.decoder_inputs.__self__ is word_dropout
    assert m.train_step.__self__ is aggressive


def test_composite_errors():
    with pytest.raises(MethodError, match=r"methods 'anneal' and 'cyclical' both define 'beta'"):
        build_method("anneal+cyclical")
    with pytest.raises(MethodError, match=r"'steps' is ambiguous .* write anneal.steps or sa-vae.steps"):
        build_method("anneal+sa-vae", {"steps": "3"})
    with pytest.raises(MethodError, match="parts must be distinct"):
        build_method("anneal+anneal")
    with pytest.raises(MethodError, match=r"unknown parameter 'foo' .* valid parameters: anneal.start"):
        build_method("anneal+word-dropout", {"foo": "1"})
    with pytest.raises(MethodError, match=r"method 'word-dropout': rate must be in \[0, 1\]"):
        build_method("anneal+word-dropout", {"word-dropout.rate": "2"})


# -- schedules inside methods ------------------------------------------------------------------------
def test_schedule_methods_at_known_steps():
    anneal = build_method("anneal")                                    # 0.1 -> 1 over 10 epochs
    assert [anneal.beta(t, 0, 10) for t in (0, 50, 100, 500)] == pytest.approx([0.1, 0.55, 1.0, 1.0])
    assert build_method("anneal", {"start": "0", "steps": "4"}).beta(1, 0, 10) == pytest.approx(0.25)
    logistic = build_method("logistic")
    assert logistic.beta(2500, 0, 10) == pytest.approx(0.5)
    assert logistic.beta(0, 0, 10) == pytest.approx(1 / (1 + math.exp(6.25)))
    assert build_method("beta", {"beta": "0.2"}).beta(123, 4, 10) == 0.2
    assert build_method("vae").beta(0, 0, 10) == 1.0


def test_cyclical_spans_the_run(tiny_corpus, tmp_path):
    """40 sentences, batch 32: 2 steps per epoch; 4 epochs = 8 steps; 2 cycles of 4, ramp over 2."""
    m = build_method("cyclical", {"cycles": "2", "ratio": "0.5"})
    make_trainer(tmp_path, tiny_corpus, m, epochs=4)
    assert m.total_steps == 8
    assert [m.beta(t, 0, 2) for t in range(8)] == pytest.approx([0, 0.5, 1, 1, 0, 0.5, 1, 1])
    m2 = build_method("cyclical", {"cycles": "2"})
    make_trainer(tmp_path, tiny_corpus, m2, epochs=4, max_steps=4)     # a step budget bounds the run
    assert m2.total_steps == 4 and m2.beta(2, 0, 2) == 0.0


# -- free bits ---------------------------------------------------------------------------------------
def test_free_bits_floor_per_dimension_and_per_sentence():
    """logvar = 0, so KL_bd = mu_bd^2 / 2. Two sentences, two dims, target 2: floor 1 per dim.

    dim 0: KL = 0.5 and 0.5 (mean 0.5 < 1 -> 1); dim 1: KL = 2 and 4 (mean 3): penalty 1 + 3 = 4.
    sentence: KL_b = 2.5 and 4.5 with target 3 -> 3 and 4.5.
    """
    mu = torch.tensor([[1.0, 2.0], [-1.0, 8 ** 0.5]], requires_grad=True)
    logvar = torch.zeros(2, 2)
    penalty = free_bits_kl(mu, logvar, target=2.0, mode="dim")
    assert penalty.shape == (2,) and penalty.tolist() == pytest.approx([4.0, 4.0])
    penalty.mean().backward()
    # floored dims get no gradient; dim 1's is d/dmu_b1 of mean_b mu_b1^2 / 2 = mu_b1 / 2
    assert mu.grad[:, 0].tolist() == [0.0, 0.0] and mu.grad[:, 1].tolist() == pytest.approx([1.0, 2 ** 0.5])
    sentence = free_bits_kl(mu.detach(), logvar, target=3.0, mode="sentence")
    assert sentence.tolist() == pytest.approx([3.0, 4.5])
    m = build_method("free-bits")                                          # Li et al.: 8 nats, nz = 8 -> 1 per dim
    assert m.kl_term(torch.zeros(3, 8), torch.zeros(3, 8)).tolist() == pytest.approx([8.0, 8.0, 8.0])


def test_free_bits_per_sentence_and_dimension_is_li_et_als_masked_penalty():
    """sentence-dim floors each KL_bd at target / D; Li et al.'s `--fb 2` drops the terms under the floor:
    the same gradient, a loss higher by the floor for each dropped term. target 2, D 2: floor 1.

    KL = mu^2 / 2 = [[0.5, 2], [2, 4]]: sentence-dim [1 + 2, 2 + 4] = [3, 6]; their [2, 6].
    'dim' differs: dim 0's batch mean 1.25 is above the floor, so both sentences get its gradient.
    """
    mu = torch.tensor([[1.0, 2.0], [2.0, 8 ** 0.5]], requires_grad=True)
    logvar = torch.zeros(2, 2, requires_grad=True)
    ours = free_bits_kl(mu, logvar, target=2.0, mode="sentence-dim")
    assert ours.tolist() == pytest.approx([3.0, 6.0])
    ours_grad = torch.autograd.grad(ours.mean(), (mu, logvar))
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)                  # their text_anneal_fb.py, fb == 2
    theirs = ((kl > 2.0 / 2).float() * kl).sum(dim=1)
    assert theirs.tolist() == pytest.approx([2.0, 6.0])
    for a, b in zip(ours_grad, torch.autograd.grad(theirs.mean(), (mu, logvar))):
        assert torch.allclose(a, b)
    assert ours_grad[0][:, 0].tolist() == pytest.approx([0.0, 1.0])     # sentence 0's dim 0 is under its floor
    dim_grad = torch.autograd.grad(free_bits_kl(mu, logvar, 2.0, "dim").mean(), mu)[0]
    assert dim_grad[:, 0].tolist() == pytest.approx([0.5, 1.0])
    assert build_method("pretrain-fb").params.mode == "sentence-dim"       # Li et al.'s method, their variant


# -- word dropout ------------------------------------------------------------------------------------
def test_word_dropout_keeps_bos_and_padding_and_only_trains():
    batch = make_batch([[5, 6, 7, 8, 9], [10, 11]], [0, 1])            # inputs: <s> w.. and padding
    all_dropped = drop_words(batch, 1.0)
    assert all_dropped[0].tolist() == [BOS_ID, UNK_ID, UNK_ID, UNK_ID, UNK_ID, UNK_ID]
    assert all_dropped[1].tolist() == batch.inputs[1].tolist()[:1] + [UNK_ID, UNK_ID] + batch.inputs[1].tolist()[3:]
    assert all_dropped[1, 3:].tolist() == batch.inputs[1, 3:].tolist()   # </s> and <pad> untouched
    assert PAD_ID in all_dropped[1].tolist()
    assert torch.equal(drop_words(batch, 0.0), batch.inputs)
    big = make_batch([list(range(4, 104))] * 50, list(range(50)))
    g = torch.Generator().manual_seed(0)
    share = (drop_words(big, 0.3, g)[:, 1:] == UNK_ID).float().mean()
    assert 0.27 < float(share) < 0.33
    m = build_method("word-dropout", {"rate": "1"})
    model = TextVAE(120, preset_config("tiny").model)
    assert torch.equal(m.decoder_inputs(model.train(), batch), all_dropped)   # rate 1: every word is <unk>
    assert m.decoder_inputs(model.eval(), batch) is None                 # never at evaluation


# -- BN-VAE ------------------------------------------------------------------------------------------
def test_bn_vae_layer_is_installed_before_the_optimiser(tiny_corpus, tmp_path):
    trainer = make_trainer(tmp_path, tiny_corpus, build_method("bn-vae"))
    bn = trainer.model.encoder.mu_norm
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(bn.shift) in optimised                                     # the learned shift trains
    assert "gamma" not in dict(trainer.model.named_parameters()) and torch.all(bn.gamma == 0.6)


def test_bn_vae_expected_kl_lower_bound():
    """Batch-normed mu has mean_b mu_bd^2 = gamma^2 v_d / (v_d + eps) + shift_d^2 (v_d the batch variance),
    so once v_d >> eps, mean_b KL_b >= mean_b sum_d mu_bd^2 / 2 >= nz gamma^2 / 2, whatever the encoder gives.
    """
    gamma, nz, eps = 0.6, 8, 1e-5
    bn = BNVAE(BNVAEParams(gamma=gamma)).make_layer(nz).train()
    with torch.no_grad():
        bn.shift.copy_(torch.linspace(-0.5, 0.5, nz))
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 0.1, 0.01, 1e-3, 3.0, 1.0, 0.5, 0.2])    # small and large encoder spreads
    raw = 5.0 + scales * torch.randn(64, nz, generator=g)               # an offset the BN must remove
    logvar = torch.randn(64, nz, generator=g)
    mu = bn(raw).detach()
    v = raw.var(0, unbiased=False)
    expected = gamma ** 2 * v / (v + eps) + torch.linspace(-0.5, 0.5, nz) ** 2
    assert mu.pow(2).mean(0).tolist() == pytest.approx(expected.tolist(), rel=1e-4)
    bound = BNVAE.kl_lower_bound(nz, gamma)
    assert bound == pytest.approx(nz * gamma ** 2 / 2)
    assert float(0.5 * mu.pow(2).sum(-1).mean()) >= bound
    assert float(gaussian_kl(mu, logvar).sum(-1).mean()) >= bound
    with torch.no_grad():
        bn.shift.zero_()
        spread = 5.0 + torch.randn(64, nz, generator=g)                     # var_d ~ 1 >> eps
        assert float(0.5 * bn(spread).pow(2).sum(-1).mean()) == pytest.approx(bound, rel=1e-4)  # tight at shift 0
        assert float(0.5 * bn(raw).pow(2).sum(-1).mean()) < bound         # dims with var_d ~ eps fall short


# -- SA-VAE ------------------------------------------------------------------------------------------
def _neg_elbo(model, batch, mu, logvar, eps):
    """Per-sentence Rec + KL, Rec averaged over the same S draws eps (S, B, D) for a fair comparison."""
    rec = torch.stack([-model.log_px_given_z(batch, mu + torch.exp(0.5 * logvar) * e) for e in eps]).mean(0)
    return rec + gaussian_kl(mu, logvar).sum(-1)


def test_sa_vae_refinement_lowers_each_sentences_loss():
    torch.manual_seed(0)
    model = TextVAE(30, preset_config("tiny").model).eval()
    with torch.no_grad():
        model.encoder.to_params.bias[:8].fill_(1.0)                       # an encoder far from the optimum
        model.encoder.to_params.bias[8:].fill_(-1.0)
    batch = make_batch([[4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14, 15]], [0, 1, 2])
    mu0, lv0 = model.encode(batch)
    mu, lv = refine(model, batch, mu0, lv0, steps=10, lr=1.0, momentum=0.5, max_grad_norm=5.0,
                    differentiable=False, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(32, *mu0.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before, after = _neg_elbo(model, batch, mu0, lv0, eps), _neg_elbo(model, batch, mu, lv, eps)
    assert torch.all(after < before - 1.0), (before, after)


def test_sa_vae_svi_step_is_kim_et_als_batch_mean_step():
    """One step, no clipping: lambda_1 = lambda_0 - lr * grad(-ELBO_b) / svi_batch for every sentence."""
    torch.manual_seed(0)
    model = TextVAE(30, preset_config("tiny").model).eval()
    batch = make_batch([[4, 5, 6, 7], [8, 9, 10]], [0, 1])
    mu0, lv0 = (t.detach() for t in model.encode(batch))
    eps = torch.randn(mu0.shape, generator=torch.Generator().manual_seed(3))
    mu_r, lv_r = mu0.clone().requires_grad_(), lv0.clone().requires_grad_()
    neg = -model.log_px_given_z(batch, mu_r + torch.exp(0.5 * lv_r) * eps) + gaussian_kl(mu_r, lv_r).sum(-1)
    g_mu, g_lv = torch.autograd.grad(neg.sum(), (mu_r, lv_r))
    mu, lv = refine(model, batch, mu0, lv0, steps=1, lr=0.5, momentum=0.5, max_grad_norm=0.0, differentiable=False,
                    generator=torch.Generator().manual_seed(3), svi_batch=32)
    torch.testing.assert_close(mu, mu0 - 0.5 * g_mu / 32)
    torch.testing.assert_close(lv, lv0 - 0.5 * g_lv / 32)


def test_sa_vae_posterior_refines_under_no_grad_and_trains_through_the_steps():
    torch.manual_seed(0)
    model = TextVAE(30, preset_config("tiny").model)
    batch = make_batch([[4, 5, 6, 7], [8, 9, 10]], [0, 1])
    m = SAVAE(SAVAEParams(steps=3))
    model.eval()
    with torch.no_grad():                                                # as validation calls it
        mu, logvar = m.posterior(model, batch)
        mu2, _ = m.posterior(model, batch)
        mu0, _ = model.encode(batch)
    assert not torch.allclose(mu, mu0) and torch.equal(mu, mu2)         # refined, and repeatable at evaluation
    model.train()
    out = m.loss(model, batch, 1.0)
    out.loss.backward()
    grad = model.encoder.to_params.weight.grad
    assert grad is not None and grad.abs().sum() > 0                    # through the K steps into the encoder


def _grad_into_initial_params(max_grad_norm, scale):
    """Gradient rows reaching (mu0, logvar0) when `scale` * (sum of the refined params) / B is back-propagated."""
    torch.manual_seed(0)
    model = TextVAE(30, preset_config("tiny").model).eval()
    batch = make_batch([[4, 5, 6, 7], [8, 9, 10], [11, 12, 13]], [0, 1, 2])
    mu0, lv0 = (t.detach().requires_grad_() for t in model.encode(batch))
    mu, lv = refine(model, batch, mu0, lv0, steps=4, lr=1.0, momentum=0.5, max_grad_norm=max_grad_norm,
                    differentiable=True, generator=torch.Generator().manual_seed(1), svi_batch=4)
    (scale * (mu.sum() + lv.sum()) / 3).backward()
    return torch.cat([mu0.grad, lv0.grad], -1)


def test_sa_vae_clips_the_gradient_flowing_back_through_each_svi_step():
    """Kim et al. clip the gradient of each step's (mu, logvar) in the backward pass; per row here at 5 * sqrt(4) / 3."""
    clipped = _grad_into_initial_params(max_grad_norm=5.0, scale=1e4)
    assert clipped.norm(dim=-1).tolist() == pytest.approx([5.0 * 4 ** 0.5 / 3] * 3, rel=1e-5)  # at the limit
    unclipped = _grad_into_initial_params(max_grad_norm=0.0, scale=1e4)
    assert torch.all(unclipped.norm(dim=-1) > 100.0)
    small = _grad_into_initial_params(max_grad_norm=5.0, scale=1e-3)                # short rows pass unchanged
    torch.testing.assert_close(small, _grad_into_initial_params(max_grad_norm=1e6, scale=1e-3))


# -- aggressive training -------------------------------------------------------------------------------
def _count_steps(opt):
    calls = {"n": 0}
    step = opt.step

    def counted(*a, **k):
        calls["n"] += 1
        return step(*a, **k)

    opt.step = counted
    return calls


def test_aggressive_inner_loop_then_phase_switches_off(tiny_corpus, tmp_path):
    m = Aggressive(AggressiveParams(max_inner=10, check_every=3))
    trainer = make_trainer(tmp_path, tiny_corpus, m)
    batch = next(trainer.train_batches(0))
    m._optimizers(trainer)
    enc, dec = _count_steps(m.enc_opt), _count_steps(m.dec_opt)
    m.train_step(trainer, batch, 1.0)
    assert m.last_inner_steps in (3, 6, 9, 10)                            # stops at a check or at the cap
    assert enc["n"] == m.last_inner_steps and dec["n"] == 1              # encoder-only inner steps, one decoder step
    m.end_epoch(trainer, {"mi": 0.5})
    m.end_epoch(trainer, {"mi": 0.8})
    assert m.aggressive                                                   # MI still rising
    m.end_epoch(trainer, {"mi": 0.7})
    assert not m.aggressive and m.state_dict()["aggressive"] is False    # MI fell: phase over
    m.end_epoch(trainer, {"mi": 2.0})
    assert not m.aggressive                                               # and it stays over
    enc["n"] = dec["n"] = 0
    m.train_step(trainer, batch, 1.0)
    assert m.last_inner_steps == 0 and enc["n"] == 1 and dec["n"] == 1


def test_aggressive_optimisers_follow_lr_halving_and_checkpoint(tiny_corpus, tmp_path):
    m = Aggressive(AggressiveParams(max_inner=3, check_every=3))
    trainer = make_trainer(tmp_path, tiny_corpus, m)
    batch = next(trainer.train_batches(0))
    m.train_step(trainer, batch, 1.0)
    state = m.state_dict()
    fresh = Aggressive(m.params)
    fresh.load_state_dict(state)
    fresh._optimizers(trainer)
    a, b = m.enc_opt.state_dict()["state"], fresh.enc_opt.state_dict()["state"]
    assert len(a) == len(list(trainer.model.encoder.parameters()))        # every encoder parameter has stepped
    assert a.keys() == b.keys() and all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)
    old = m.enc_opt
    trainer.state.lr /= 2                                                 # what the trainer's halving does
    m.train_step(trainer, batch, 1.0)
    assert m.enc_opt is not old
    assert m.enc_opt.param_groups[0]["lr"] == m.dec_opt.param_groups[0]["lr"] == trainer.state.lr


# -- pretrain + free bits ------------------------------------------------------------------------------
def test_pretrain_fb_resets_the_decoder_after_pretraining(tiny_corpus, tmp_path):
    m = build_method("pretrain-fb", {"pretrain_epochs": "1", "warmup_epochs": "1", "target": "8"})
    trainer = make_trainer(tmp_path, tiny_corpus, m)
    mu, logvar = torch.zeros(4, 8), torch.zeros(4, 8)
    assert m.beta(0, 0, 2) == 0.0 and m.kl_term(mu, logvar).tolist() == [0.0] * 4  # an autoencoder
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.fill_(0.5)                                                  # "trained" weights
    old_optimizer = trainer.optimizer
    trainer.state.epoch, trainer.state.step = 1, 2
    trainer.state.best_loss, trainer.state.best_epoch, trainer.state.bad_epochs = 50.0, 1, 1
    torch.manual_seed(0)                                                  # the re-initialisation's draws
    m.end_epoch(trainer, {})
    assert (trainer.state.best_loss, trainer.state.best_epoch, trainer.state.bad_epochs) == (math.inf, -1, 0)
    assert all(torch.all(p == 0.5) for p in trainer.model.encoder.parameters())          # encoder kept
    for name, p in trainer.model.decoder.named_parameters():              # decoder re-initialised: U(-r, r)
        r = 0.1 if "embed" in name else 0.01                              # the tiny preset's ranges
        assert r / 2 < float(p.detach().abs().max()) <= r, name
    assert trainer.optimizer is not old_optimizer
    assert [m.beta(t, 1, 2) for t in (2, 3, 4)] == pytest.approx([0.0, 0.5, 1.0])  # warm-up from the reset
    assert m.kl_term(mu, logvar).tolist() == pytest.approx([8.0] * 4)            # free bits floor now
    assert m.state_dict() == {"pretraining": False, "reset_step": 2}


def test_pretrain_fb_keeps_the_autoencoder_when_the_run_ends_with_pretraining(tiny_corpus, tmp_path):
    """A reset at the last epoch would leave a decoder nobody trained or validated as the final model."""
    m = build_method("pretrain-fb", {"pretrain_epochs": "1"})
    trainer = make_trainer(tmp_path, tiny_corpus, m)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.fill_(0.5)
    trainer.state.epoch, trainer.state.step, trainer.state.done = 1, 2, True   # the run's last epoch
    trainer.state.best_loss, trainer.state.best_epoch = 50.0, 1
    m.end_epoch(trainer, {})
    assert all(torch.all(p == 0.5) for p in trainer.model.parameters())        # nothing reset
    assert (trainer.state.best_loss, trainer.state.best_epoch) == (50.0, 1)     # best.pt still the final model
    assert m.state_dict() == {"pretraining": True, "reset_step": 0}


def test_lr_halving_reloads_the_best_model_but_not_an_earlier_phase(tiny_corpus, tmp_path):
    """He et al.'s plateau rule reloads the best weights; a method's phase only moves forward."""
    m = build_method("pretrain-fb", {"pretrain_epochs": "1"})
    trainer = make_trainer(tmp_path, tiny_corpus, m, epochs=10, decay_start_epoch=0, decay_patience=1)
    trainer.run_dir.mkdir(parents=True)
    trainer.state.epoch = 1
    end_of_epoch(trainer, 100.0)                                      # best.pt: epoch 1, still pretraining
    best = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    m.pretraining, m.reset_step = False, 7                                # phase 2 began
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)
    lr = trainer.state.lr
    trainer.state.epoch = 2
    end_of_epoch(trainer, 120.0)                                      # worse: plateau, halve and reload
    assert trainer.state.lr == lr / 2 and trainer.state.decays == 1
    assert all(torch.equal(v, best[k]) for k, v in trainer.model.state_dict().items())
    assert m.state_dict() == {"pretraining": False, "reset_step": 7}


def test_pretrain_fb_selects_its_autoencoder_by_reconstruction():
    m = build_method("pretrain-fb", {"pretrain_epochs": "-1"})
    assert m.selection_loss({"loss": 140.0, "rec": 90.0}) == 90.0         # Li et al.'s AE run: beta = 0
    m.pretraining = False
    assert m.selection_loss({"loss": 140.0, "rec": 90.0}) == 140.0        # the VAE run: -ELBO
    with pytest.raises(MethodError, match="pretrain_epochs must be >= 0, or -1"):
        build_method("pretrain-fb", {"pretrain_epochs": "-2"})


def test_a_whole_autoencoder_run_then_a_new_run_from_its_best_model(tiny_corpus, tmp_path):
    """pretrain_epochs = -1: the AE phase ends by the run's own rule; its best model, with a new decoder,
    starts a second run with the initial LR, no halvings and its own epoch budget and decay start."""
    m = build_method("pretrain-fb", {"pretrain_epochs": "-1", "warmup_epochs": "1"})
    trainer = make_trainer(tmp_path, tiny_corpus, m, epochs=3, decay_start_epoch=1, decay_patience=1, max_decays=5)
    trainer.run_dir.mkdir(parents=True)
    s, lr0 = trainer.state, trainer.state.lr
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.fill_(0.25)
    s.epoch = 1
    end_of_epoch(trainer, m.selection_loss({"loss": 200.0, "rec": 50.0}))   # best.pt: the AE of epoch 1
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.fill_(0.75)
    s.epoch = 2
    end_of_epoch(trainer, m.selection_loss({"loss": 150.0, "rec": 60.0}))   # worse by rec: LR halved
    assert s.decays == 1 and s.lr == lr0 / 2 and not s.done
    m.end_epoch(trainer, {})
    assert m.pretraining                                                  # the AE run goes on
    s.epoch = 3
    end_of_epoch(trainer, m.selection_loss({"loss": 150.0, "rec": 55.0}))
    assert s.done and s.stop_reason == "reached 3 epochs"
    for p in trainer.model.parameters():
        p.data.fill_(0.9)                                                 # the last epoch's weights
    old_optimizer = trainer.optimizer
    torch.manual_seed(0)
    m.end_epoch(trainer, {})
    assert not m.pretraining and m.reset_step == s.step
    assert all(torch.all(p == 0.25) for p in trainer.model.encoder.parameters())   # the best AE's encoder
    assert all(float(p.abs().max()) <= 0.1 for p in trainer.model.decoder.parameters())  # a new decoder
    assert (s.done, s.stop_reason, s.lr, s.decays, s.phase_start) == (False, "", lr0, 0, 3)
    assert (s.best_loss, s.best_epoch, s.bad_epochs) == (math.inf, -1, 0) and trainer.optimizer is not old_optimizer
    # the second run's epochs count from its start: run epoch 4 is its first of 3, not past the budget
    s.epoch = 4
    end_of_epoch(trainer, m.selection_loss({"loss": 120.0, "rec": 1.0}))   # by -ELBO now
    assert not s.done and s.best_epoch == 4
    s.epoch = 5
    end_of_epoch(trainer, 130.0)
    assert s.decays == 1 and s.lr == lr0 / 2 and not s.done
    s.epoch = 6
    end_of_epoch(trainer, 125.0)
    assert s.done and s.stop_reason == "reached 3 epochs of phase 2"


def test_pretrain_fb_whole_runs_train_end_to_end(tiny_corpus, tmp_path):
    result = run_cli(["train", "--data", str(tiny_corpus), "--method", "pretrain-fb", "-p", "pretrain_epochs=-1",
                      "-p", "warmup_epochs=1", "--epochs", "2", "--threads", "1", "--set", "progress=false",
                      "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "run" / "log.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["method_pretraining"] for r in rows] == [True, False, False, False]   # state after each epoch's end
    assert [r["beta"] for r in rows][:2] == [0.0, 0.0] and 0.0 < rows[2]["beta"] <= rows[3]["beta"] <= 1.0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "reached 2 epochs of phase 2" and summary["best_epoch"] in (3, 4)


# -- plugins and the README example ----------------------------------------------------------------------
@pytest.fixture
def plugin():
    load_plugin(PLUGIN)
    yield REGISTRY["capacity"]
    REGISTRY.pop("capacity", None)
    sys.modules.pop("textsvae_plugin_my_method", None)


def test_example_plugin_behaves_as_documented(plugin):
    """C(step) rises linearly to c_max; the KL penalty is |KL - C|."""
    m = build_method("capacity", {"c_max": "4", "epochs": "1"})
    assert m.beta(5, 0, 10) == 1.0 and m.capacity == pytest.approx(2.0)
    mu = torch.tensor([[2.0, 0.0], [0.0, 0.0]])                           # KL = 2 and 0
    assert m.kl_term(mu, torch.zeros(2, 2)).tolist() == pytest.approx([0.0, 2.0])
    load_plugin(PLUGIN)                                                   # a second load is a no-op
    with pytest.raises(MethodError, match="plugin file not found"):
        load_plugin(ROOT / "examples" / "missing.py")


def test_readme_example_links_the_committed_plugin_and_runs(plugin, tiny_corpus, tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Add a method"):readme.index("## More")]
    assert "(examples/my_method.py)" in section and PLUGIN.is_file()    # linked, not inlined
    command = re.search(r"```bash\n(textsvae train [^\n]*)\n", section).group(1).split()[2:]
    keep = [str(PLUGIN) if a == "examples/my_method.py" else a for a in command
            if a not in ("--data", "synthetic")]                          # the same command on the tiny corpus
    result = run_cli(["train", *keep, "--data", str(tiny_corpus), "--set", "max_steps=2", "--set",
                      "progress=false", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["method"] == "capacity" and saved["method_params"]["c_max"] == 3.0
    check_conformance("capacity", "skip", tiny_corpus, tmp_path / "conf", extra=("--plugin", str(PLUGIN)))


def test_eval_loads_the_plugin_a_run_was_trained_with(plugin, tiny_corpus, tmp_path):
    run = tmp_path / "run"
    trained = run_cli(["train", "--plugin", str(PLUGIN), "--method", "capacity", "--data", str(tiny_corpus),
                       "--set", "max_steps=2", "--set", "progress=false", "-o", str(run)])
    assert trained.exit_code == 0, trained.output
    REGISTRY.pop("capacity")                                              # a fresh process: no plugin loaded
    sys.modules.pop("textsvae_plugin_my_method")
    missing = run_cli(["eval", str(run), "-k", "2"])
    assert missing.exit_code == 2 and "unknown method 'capacity'" in missing.output
    loaded = run_cli(["eval", str(run), "-k", "2", "--plugin", str(PLUGIN), "--json"])
    assert loaded.exit_code == 0, loaded.output
    assert json.loads(loaded.output)["method"] == "capacity" and (run / "eval_test_k2.json").is_file()
