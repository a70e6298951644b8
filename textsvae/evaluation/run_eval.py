"""Evaluate a run folder: rebuild its best model, read a split as in training, score it with
`scoring.evaluate_scored` and save RUN_DIR/eval_<split>_k<K>.json, with its per-sentence scores
beside it in RUN_DIR/scores_<split>_k<K>.parquet (columns: `scoring.sentence_columns` plus text_hash)."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..core.config import ConfigError, EvalConfig, RunConfig, replace_eval
from ..core.metric_registry import metric_lines
from .scoring import SentenceScores, evaluate_scored, sentence_columns

if TYPE_CHECKING:
    from ..data.corpus import Corpus
    from ..methods import Method
    from ..model.models import TextVAE

log = logging.getLogger(__name__)
EVAL_SPLITS = ("valid", "test")


def load_model(run_dir: str | Path, device: str | torch.device | None = None):
    """Rebuild a run's best model: (model in eval mode, method, config, vocab, device)."""
    from ..core.rundir import RunError, check_checkpoint, load_checkpoint, read_run_config
    from ..data.vocab import load_vocab
    from ..kernels.device import cpu_lstm_runs_in, resolve_device
    from ..methods import build_method
    from ..methods.context import EvalSetup
    from ..model.models import TextVAE

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder not found: {run_dir}")
    config = read_run_config(run_dir)
    if not (run_dir / "vocab.json").is_file():
        raise RunError(f"{run_dir} has no vocab.json")
    vocab = load_vocab(run_dir)
    ckpt = load_checkpoint(run_dir / "best.pt")
    check_checkpoint(ckpt, run_dir / "best.pt", vocab)
    dev = device if isinstance(device, torch.device) else resolve_device(device or "auto")
    model = TextVAE(len(vocab), config.model).to(dev)
    method = build_method(config.train.method, config.train.method_params)
    method.setup(EvalSetup(model, config, dev))
    model.to(dev)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise RunError(f"{run_dir}/best.pt does not match the run's config: {str(exc).splitlines()[0]}") from None
    method.load_state_dict(ckpt.get("method", {}))
    model.eval()
    if dev.type == "cpu" and not cpu_lstm_runs_in(config.eval.eval_precision):  # a run trained on a GPU, say
        log.warning("eval_precision=%s cannot run on this CPU's LSTM kernels: evaluating in fp32",
                    config.eval.eval_precision)
        config = replace(config, eval=replace(config.eval, eval_precision="fp32"))
    return model, method, config, vocab, dev


def split_sentences(config: RunConfig, vocab, split: str) -> list[list[int]]:
    """Token ids of a split, read and length-limited exactly as in training, with the run's vocabulary."""
    from ..data.corpus import load_corpus

    if split not in EVAL_SPLITS:
        raise ConfigError(f"split must be one of {', '.join(EVAL_SPLITS)}, got '{split}'")
    return load_corpus(config.data, vocab=vocab, needed=(split,)).splits[split]


def eval_path(run_dir: str | Path, split: str, iw_samples: int | None, precision: str | None = None) -> Path:
    """RUN_DIR/eval_<split>_k<K>.json; eval_<split>_k<K>_<precision>.json for a precision other than the run's."""
    tag = f"_{precision}" if precision else ""
    return Path(run_dir) / f"eval_{split}_k{iw_samples if iw_samples is not None else 0}{tag}.json"


def scores_path(run_dir: str | Path, split: str, iw_samples: int | None, precision: str | None = None) -> Path:
    """RUN_DIR/scores_<split>_k<K>[_<precision>].parquet: the per-sentence scores beside eval_path's JSON."""
    return scores_beside(eval_path(run_dir, split, iw_samples, precision))


def scores_beside(json_path: Path) -> Path:
    """eval_<...>.json -> scores_<...>.parquet in the same folder."""
    return json_path.with_name("scores_" + json_path.name[len("eval_"):]).with_suffix(".parquet")


def text_hash(text: str) -> int:
    """A signed 64-bit digest of a sentence's text (blake2b), to tell two runs' sentences apart."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def write_scores(path: str | Path, scores: SentenceScores, ids: list[list[int]], vocab) -> Path:
    """The per-sentence scores of a split as parquet, atomically; text_hash is that of the decoded sentence."""
    import io

    import pandas as pd

    from ..core.io import atomic_write_bytes

    frame = pd.DataFrame(sentence_columns(scores))
    frame.insert(1, "text_hash", [text_hash(vocab.decode(s)) for s in ids])
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def evaluate_loaded(model: "TextVAE", method: "Method", config: RunConfig, vocab, device: torch.device,
                    run_dir: str | Path | None, split: str = "test", iw_samples: int | None = None,
                    sentences: list[str] | None = None, mi_batch: bool | int = False,
                    save: bool = True, corpus: "Corpus | None" = None, recon: bool = False,
                    file_precision: str | None = None) -> dict[str, Any]:
    """Evaluate a loaded run on a split (saved as RUN_DIR/eval_<split>_k<K>.json, with `_<file_precision>`
    before .json when given, and its per-sentence scores as `scores_path`) or on given raw sentences; a split is read from `corpus` when given (loaded
    once for several splits), else from the run's data."""
    from ..core.io import atomic_write_json

    if iw_samples is not None:
        config = replace(config, eval=replace_eval(config.eval, iw_samples=iw_samples))
    if sentences is not None:
        ids = [vocab.encode(s) for s in sentences]
    elif corpus is not None and split in corpus.splits:
        ids = corpus.splits[split]
    else:
        ids = split_sentences(config, vocab, split)
    out, scores = evaluate_scored(model, method, ids, config.eval, device, mi_batch=mi_batch, recon=recon,
                                  vocab=vocab)
    out["split"] = "sentences" if sentences is not None else split
    if run_dir is not None:
        out["run_dir"] = str(run_dir)
    if save and sentences is None and run_dir is not None:
        write_scores(scores_path(run_dir, split, out["iw_samples"], file_precision), scores, ids, vocab)
        atomic_write_json(eval_path(run_dir, split, out["iw_samples"], file_precision), out)
    return out


def evaluate_run(run_dir: str | Path, split: str = "test", iw_samples: int | None = None,
                 device: str | torch.device | None = None, sentences: list[str] | None = None,
                 mi_batch: bool | int = False, workers: int | None = None, recon: bool = False,
                 precision: str | None = None) -> dict[str, Any]:
    """Load RUN_DIR/best.pt and evaluate it; a split's result is written to RUN_DIR/eval_<split>_k<K>.json.

    workers overrides the run's eval.workers (processes scoring IW-NLL on the CPU); recon adds the
    reconstruction metrics (recon_bleu, recon_acc); precision overrides the run's eval.eval_precision
    (the autocast of the evaluation), and a result in a precision other than the run's own is written to
    eval_<split>_k<K>_<precision>.json, beside the run's own evaluation."""
    from ..core.rundir import read_run_config
    from ..kernels.device import check_cpu_precision

    if sentences is None and split not in EVAL_SPLITS:
        raise ConfigError(f"split must be one of {', '.join(EVAL_SPLITS)}, got '{split}'")
    overrides = {k: v for k, v in (("iw_samples", iw_samples), ("workers", workers), ("eval_precision", precision))
                 if v is not None}
    replace_eval(EvalConfig(), **overrides)   # a bad value fails before the model loads
    model, method, config, vocab, dev = load_model(run_dir, device)
    if precision is not None and dev.type == "cpu":
        check_cpu_precision("precision", precision)
    own = read_run_config(run_dir).eval.eval_precision   # before load_model's fallback to fp32 on such a CPU
    config = replace(config, eval=replace_eval(config.eval, **overrides))
    file_precision = precision if precision is not None and precision != own else None
    return evaluate_loaded(model, method, config, vocab, dev, run_dir, split, iw_samples, sentences, mi_batch,
                           recon=recon, file_precision=file_precision)


def format_metrics(result: dict[str, Any]) -> str:
    """The CLI's account of an evaluation: its sentences, K, seed and time, then its metrics (metric_lines)."""
    head = (f"{result.get('split')}: {result['n_sentences']} sentences, {result['n_tokens']} tokens, "
            f"K={result.get('iw_samples')}, eval_seed={result['eval_seed']}, "
            + (f"{result['eval_precision']}, " if result.get("eval_precision", "fp32") != "fp32" else "")
            + f"{result['seconds']:.1f}s")
    return "\n".join([head, *metric_lines(result)])
