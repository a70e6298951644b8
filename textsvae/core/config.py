"""Run configuration: frozen dataclasses for data, model, training and evaluation, and presets.

Every field can be overridden by name (`lr=0.5` or `train.lr=0.5`); the whole config is
saved as JSON with every run, so a run folder alone says how its numbers were made.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .decoders import decoder_names


class ConfigError(ValueError):
    """A bad configuration value or key; its message is shown to the user as one line."""


@dataclass(frozen=True)
class DataConfig:
    data: str = "synthetic"        # folder path, "synthetic", a corpus name (ptb, yahoo, yelp) or "hf:NAME"
    data_dir: str | None = None    # where named corpora live (default $TEXTSVAE_DATA or a user cache folder)
    hf_column: str = "text"        # text column for hf:NAME corpora
    tokenizer: str = "word"        # "word" (whitespace split) or "sentencepiece" (trained on train, saved with the run)
    sp_vocab_size: int = 8000      # sentencepiece vocabulary size
    max_vocab: int | None = None   # keep at most this many word types (most frequent first), specials excluded
    min_count: int = 1             # drop word types seen fewer times in train
    max_len: int | None = None     # longest sentence in tokens (without <s>, </s>); None keeps all
    long_lines: str = "truncate"   # what to do with lines over max_len: "truncate" or "drop"
    max_lines: int | None = None   # use only the first N lines of each split (a "cut" of a corpus)
    synthetic_topics: int = 8      # K, the number of latent topics of the synthetic corpus
    synthetic_train: int = 8000    # synthetic training sentences (valid and test get a tenth each)
    synthetic_seed: int = 1234     # the synthetic corpus is a pure function of this seed


@dataclass(frozen=True)
class ModelConfig:
    decoder: str = "standard"      # a decoders.DECODERS name: "standard", "skip" (Skip-VAE) or "lm" (no z)
    emb_dim: int = 32              # word embedding size (encoder and decoder each have one)
    enc_hidden: int = 32           # encoder LSTM size
    dec_hidden: int = 32           # decoder LSTM size
    dec_layers: int = 1            # stacked decoder LSTM layers
    latent_dim: int = 8            # size of z
    dropout_in: float = 0.5        # dropout on decoder input embeddings
    dropout_out: float = 0.5       # dropout on decoder LSTM outputs (before the softmax)
    init_range: float = 0.01       # parameters ~ U(-r, r) (He et al.)
    emb_init_range: float = 0.1    # embeddings ~ U(-r, r)
    init_state: str = "all-layers"  # decoder's initial state: "all-layers" (He et al.: c0_k = W_k z, h0_k = tanh(c0_k))
    #                                 or "top-layer" (Skip-VAE's code: top layer h0 = A z + a, c0 = 0; others 0)


@dataclass(frozen=True)
class TrainConfig:
    method: str = "vae"            # collapse-avoidance method (see `textsvae methods`)
    method_params: dict = field(default_factory=dict)  # the method's parameters, by name
    epochs: int = 5                # maximum number of epochs
    batch_size: int = 32           # sentences per batch
    optimizer: str = "adam"        # "sgd" or "adam"
    lr: float = 1e-3               # learning rate
    momentum: float = 0.0          # SGD momentum
    clip_grad: float = 5.0         # clip the gradient's global norm (0 turns clipping off)
    lr_rule: str = "plateau"       # LR rule: "plateau" (He et al.'s and Li et al.'s code) or "skip-vae"
    decay_start_epoch: int = 15    # plateau: halve once more epochs than this are done; skip-vae: from this epoch on
    decay_patience: int = 2        # plateau: worse validation epochs in a row before the LR is halved
    max_decays: int = 5            # plateau: stop at the max_decays-th halving (its halved LR is never trained)
    min_lr: float = 0.03           # skip-vae: stop when the halved LR would fall below this (never trained)
    max_steps: int | None = None   # stop after this many optimiser steps (a training budget)
    seed: int = 0                  # seeds model init, data order, dropout and sampling
    threads: int | None = None     # torch CPU threads (None: leave torch's default)
    device: str = "auto"           # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    precision: str = "fp32"        # "fp32", or "bf16" autocast (opt-in: matmuls in bf16, softmax in fp32)
    monitor_size: int = 500        # validation sentences used for the per-epoch MI and AU
    monitor_every: int = 0         # also log Rec, KL, MI, AU on that subset every N steps (monitor.jsonl); 0: off
    progress: bool = True          # show progress (a bar on a terminal, plain lines otherwise: textsvae/core/progress.py)
    track: str = ""                # experiment trackers, comma-separated: tensorboard, mlflow, wandb ("" = none)
    track_project: str = "textsvae"  # the trackers' experiment / project name (bench: the benchmark's name)


@dataclass(frozen=True)
class EvalConfig:
    iw_samples: int = 500          # K, importance samples for IW-NLL
    eval_batch_size: int = 64      # sentences per evaluation batch
    mem_budget_mb: int = 512       # rough cap on the memory of one IW chunk (logits dominate)
    mi_samples: int = 64           # z samples per sentence in the MI estimate (>= 2 gives its standard error)
    au_threshold: float = 0.01     # AU counts dims with Var_x(E[z_d|x]) >= this
    eval_seed: int = 12345         # fixed seed for every Monte-Carlo estimate at evaluation
    eval_precision: str = "fp32"   # "fp32", or "bf16" or "fp16" autocast for evaluation
    workers: int = 1               # processes scoring IW-NLL on the CPU, sharing the threads (forked, Linux)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        sections = {}
        for f in fields(cls):
            section_cls = _SECTION_TYPES[f.name]
            given = dict(d.get(f.name, {}))
            known = {g.name for g in fields(section_cls)}
            unknown = set(given) - known
            if unknown:
                raise ConfigError(f"unknown config key(s) {sorted(unknown)} in section '{f.name}'")
            sections[f.name] = section_cls(**given)
        return check_config(cls(**sections))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# execution-only fields: how a run is executed, not what it computes (left out of run ids and checkpoint
# checks; a resumed run may change them)
EXECUTION_FIELDS = {"train": ("threads", "progress", "device", "track", "track_project"), "data": ("data_dir",),
                    "eval": ("workers",)}

# fields added after runs were committed: left out of run ids while at these values, so a run made
# before the field existed keeps its id (a run that sets another value gets a new one)
ID_NEUTRAL_DEFAULTS = {"model": {"init_state": "all-layers"}, "train": {"lr_rule": "plateau", "min_lr": 0.03}}

INIT_STATES = ("all-layers", "top-layer")   # the decoder's initial state (docs/protocol.md section 1)
LR_RULES = ("plateau", "skip-vae")          # train.LR_RULES implements them (docs/protocol.md section 6)
PRECISIONS = ("fp32", "bf16", "fp16")        # evaluation
TRAIN_PRECISIONS = ("fp32", "bf16")          # fp16 training would need loss scaling (a host sync per step)

_SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # seconds on a CPU: for tests and smoke runs
    "tiny": {
        "model": dict(emb_dim=32, enc_hidden=32, dec_hidden=32, latent_dim=8),
        "train": dict(epochs=3, batch_size=32, optimizer="adam", lr=1e-3, monitor_size=200),
        "eval": dict(iw_samples=50),
    },
    # docs/protocol.md section 3, PTB row (Li et al. 2019; BN-VAE; cyclical)
    "ptb": {
        "model": dict(emb_dim=256, enc_hidden=256, dec_hidden=256, latent_dim=32),
        "train": dict(epochs=40, batch_size=32, optimizer="sgd", lr=1.0, clip_grad=5.0),
    },
    # docs/protocol.md section 3, Yahoo/Yelp row (He et al. 2019; Kim et al. 2018; Skip-VAE)
    "yahoo": {
        "data": dict(max_vocab=20000),
        "model": dict(emb_dim=512, enc_hidden=1024, dec_hidden=1024, latent_dim=32),
        "train": dict(epochs=100, batch_size=32, optimizer="sgd", lr=1.0, clip_grad=5.0),
    },
}


def _field_type(section_cls: type, name: str) -> Any:
    return typing.get_type_hints(section_cls)[name]


def parse_value(text: str, typ: Any, key: str) -> Any:
    """Parse a command-line string into the field's type (int, float, bool, str, optional)."""
    args = typing.get_args(typ)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), typ) if args else typ
    if optional and text.lower() in ("none", "null"):
        return None
    try:
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
        return str(text)
    except ValueError:
        raise ConfigError(f"bad value {text!r} for {key}: expected {getattr(base, '__name__', base)}") from None


def all_field_names() -> dict[str, str]:
    """Map every field name to its section; names are unique across sections."""
    return {f.name: s for s, cls in _SECTION_TYPES.items() for f in fields(cls)}


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return config with fields replaced; keys are 'name' or 'section.name', values typed or strings."""
    owner = all_field_names()
    updates: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        if not section:
            section = owner.get(name, "")
        if section not in _SECTION_TYPES or name not in owner or owner[name] != section:
            valid = ", ".join(sorted(owner))
            raise ConfigError(f"unknown setting '{key}'; valid settings: {valid}")
        if isinstance(value, str):
            value = parse_value(value, _field_type(_SECTION_TYPES[section], name), key)
        updates.setdefault(section, {})[name] = value
    new = {s: replace(getattr(config, s), **u) for s, u in updates.items()}
    return check_config(replace(config, **new))


def preset_config(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; valid presets: {', '.join(PRESETS)}")
    flat = {f"{s}.{k}": v for s, kv in PRESETS[name].items() for k, v in kv.items()}
    return apply_overrides(RunConfig(), flat)


def check_config(config: RunConfig) -> RunConfig:
    """Check ranges and choices; raise ConfigError with a one-line message on the first problem."""
    d, m, t, e = config.data, config.model, config.train, config.eval
    seeds = {"seed": t.seed, "synthetic_seed": d.synthetic_seed, "eval_seed": e.eval_seed}
    checks = [
        *((0 <= v < 2**32, f"{k} must be in [0, 2**32), got {v}") for k, v in seeds.items()),
        (_device_ok(t.device), f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or another torch device, "
                               f"got '{t.device}'"),
        (t.precision in TRAIN_PRECISIONS, f"precision must be one of {', '.join(TRAIN_PRECISIONS)} "
                                          f"(fp16 training would need loss scaling), got '{t.precision}'"),
        (e.eval_precision in PRECISIONS, f"eval_precision must be one of {', '.join(PRECISIONS)}, "
                                         f"got '{e.eval_precision}'"),
        (d.tokenizer in ("word", "sentencepiece"), f"tokenizer must be 'word' or 'sentencepiece', got '{d.tokenizer}'"),
        (d.long_lines in ("truncate", "drop"), f"long_lines must be 'truncate' or 'drop', got '{d.long_lines}'"),
        (d.max_len is None or d.max_len >= 1, f"max_len must be >= 1, got {d.max_len}"),
        (d.max_lines is None or d.max_lines >= 1, f"max_lines must be >= 1, got {d.max_lines}"),
        (d.min_count >= 1, f"min_count must be >= 1, got {d.min_count}"),
        (d.max_vocab is None or d.max_vocab >= 1, f"max_vocab must be >= 1, got {d.max_vocab}"),
        (d.sp_vocab_size >= 10, f"sp_vocab_size must be >= 10, got {d.sp_vocab_size}"),
        (d.synthetic_topics >= 2, f"synthetic_topics must be >= 2, got {d.synthetic_topics}"),
        (d.synthetic_train >= 10, f"synthetic_train must be >= 10, got {d.synthetic_train}"),
        (m.decoder in decoder_names(), f"decoder must be one of {', '.join(decoder_names())}, got '{m.decoder}'"),
        (min(m.emb_dim, m.enc_hidden, m.dec_hidden, m.dec_layers, m.latent_dim) >= 1,
         "model sizes (emb_dim, enc_hidden, dec_hidden, dec_layers, latent_dim) must be >= 1"),
        (0.0 <= m.dropout_in < 1.0, f"dropout_in must be in [0, 1), got {m.dropout_in}"),
        (0.0 <= m.dropout_out < 1.0, f"dropout_out must be in [0, 1), got {m.dropout_out}"),
        (0 < m.init_range < math.inf and 0 < m.emb_init_range < math.inf, "init ranges must be finite and > 0"),
        (m.init_state in INIT_STATES, f"init_state must be one of {', '.join(INIT_STATES)}, got '{m.init_state}'"),
        (t.epochs >= 1, f"epochs must be >= 1, got {t.epochs}"),
        (t.batch_size >= 1, f"batch_size must be >= 1, got {t.batch_size}"),
        (t.optimizer in ("sgd", "adam"), f"optimizer must be 'sgd' or 'adam', got '{t.optimizer}'"),
        (0 < t.lr < math.inf, f"lr must be finite and > 0, got {t.lr}"),
        (0.0 <= t.momentum < 1.0, f"momentum must be in [0, 1), got {t.momentum}"),
        (t.clip_grad >= 0, f"clip_grad must be >= 0, got {t.clip_grad}"),
        (t.lr_rule in LR_RULES, f"lr_rule must be one of {', '.join(LR_RULES)}, got '{t.lr_rule}'"),
        (t.decay_patience >= 1 and t.max_decays >= 0 and t.decay_start_epoch >= 0,
         "decay_patience must be >= 1, max_decays and decay_start_epoch >= 0"),
        (0 <= t.min_lr < math.inf, f"min_lr must be finite and >= 0, got {t.min_lr}"),
        (t.max_steps is None or t.max_steps >= 1, f"max_steps must be >= 1, got {t.max_steps}"),
        (t.threads is None or t.threads >= 1, f"threads must be >= 1, got {t.threads}"),
        (t.monitor_every >= 0, f"monitor_every must be >= 0, got {t.monitor_every}"),
        (t.monitor_size >= 2, f"monitor_size must be >= 2, got {t.monitor_size}"),
        (e.iw_samples >= 1, f"iw_samples must be >= 1, got {e.iw_samples}"),
        (e.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {e.eval_batch_size}"),
        (e.mem_budget_mb >= 1, f"mem_budget_mb must be >= 1, got {e.mem_budget_mb}"),
        (e.mi_samples >= 1, f"mi_samples must be >= 1, got {e.mi_samples}"),
        (e.au_threshold >= 0, f"au_threshold must be >= 0, got {e.au_threshold}"),
        (e.workers >= 1, f"workers must be >= 1, got {e.workers}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return config


def without_execution_fields(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict (RunConfig.to_dict()) without its execution-only fields: what the run computes."""
    return {section: {k: v for k, v in values.items() if k not in EXECUTION_FIELDS.get(section, ())}
            for section, values in d.items()}


def identity_fields(d: dict[str, Any]) -> dict[str, Any]:
    """What a run id hashes: the computed fields, less those of ID_NEUTRAL_DEFAULTS at their neutral value."""
    d = without_execution_fields(d)
    return {section: {k: v for k, v in values.items()
                      if not (k in ID_NEUTRAL_DEFAULTS.get(section, {}) and ID_NEUTRAL_DEFAULTS[section][k] == v)}
            for section, values in d.items()}


def replace_eval(eval_cfg: EvalConfig, **changes: Any) -> EvalConfig:
    """eval_cfg with some fields replaced, checked by the same rules as a whole config (one place per setting)."""
    return check_config(RunConfig(eval=replace(eval_cfg, **changes))).eval


def _device_ok(name: str) -> bool:
    """Whether torch can parse the device string (availability is checked when training starts)."""
    if name == "auto":
        return True
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True
