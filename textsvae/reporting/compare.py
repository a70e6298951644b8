"""Paired comparisons of two runs scored on the same sentences, and of two groups of runs over seeds
(`textsvae compare`; docs/protocol.md section 6.2). Every difference is B - A.

Over sentences (one run each), with d_n = s_n(B) - s_n(A) the per-sentence difference of a score:
    mean d = (1/N) sum_n d_n,  se = sd(d) / sqrt(N) (sd with N - 1),  normal 95%: mean +- z_0.975 se,
    per token R = sum_n d_n / sum_n T_n,  se(R) = sqrt(sum_n (d_n - R T_n)^2 / (N (N - 1))) / mean(T)
    (the delta method for a ratio), and percentile intervals of the paired bootstrap (sentences resampled
    with replacement, the same rows for A and B; scipy.stats.bootstrap with a fixed seed).
MI and AU are functions of the whole split: the bootstrap recomputes both runs' MI and AU on each resample
of sentences, MI with `MI_SAMPLES` draws per sentence shared by A and B.
Over seeds (runs paired by seed), with D_s the per-seed difference:
    mean D,  std D (n - 1),  t 95%: mean +- t_{0.975, n-1} std / sqrt(n); none for n = 1.
"""
from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..core.config import ConfigError
from ..core.metric_registry import metric
from ..core.rundir import read_config_dict
from ..evaluation.run_eval import scores_beside
from ..kernels.metrics import log_aggregate_posterior, log_normal_diag
from .tables import t_interval

if TYPE_CHECKING:
    from ..bench.grid import Benchmark

SENTENCE_METRICS = ("iw_nll", "elbo", "rec", "kl")   # means of per-sentence columns
POPULATION_METRICS = ("mi", "au")                     # functions of the whole split
METRICS = SENTENCE_METRICS + POPULATION_METRICS
LATENT_COLUMNS = ("elbo", "rec", "kl", "mu", "logvar")
Z95 = 1.959963984540054                               # the normal's 0.975 quantile
BOOTSTRAP_BATCH = 100                                 # resamples per vectorized call (bounds the memory)
MI_SAMPLES = 8                                        # z draws per sentence for MI in each bootstrap resample


class CompareError(ConfigError):
    """Runs that cannot be compared, or a comparison asked of runs without scores: one line."""


@dataclass
class RunScores:
    """One run's evaluation of one split: the saved metrics (eval_*.json) and its per-sentence scores."""

    run_dir: Path
    meta: dict[str, Any]
    frame: pd.DataFrame
    seed: int | None = None

    @property
    def is_lm(self) -> bool:
        return "kl" not in self.frame.columns

    def values(self, name: str) -> np.ndarray:
        """Per-sentence values of a sentence metric (iw_nll = -iw_ll)."""
        if name == "iw_nll":
            return -self.frame["iw_ll"].to_numpy(np.float64)
        return self.frame[name].to_numpy(np.float64)


# -- loading -------------------------------------------------------------------------------------------
_EVAL_FILE = re.compile(r"eval_(?P<split>[a-z]+)_k(?P<k>\d+)(?:_(?P<tag>[a-z0-9]+))?\.json")


def load_scores(run_dir: str | Path, split: str = "test", iw_samples: int | None = None,
                precision: str | None = None) -> RunScores:
    """The evaluation of `split` in RUN_DIR: the run's own precision (or `precision`), the only K present
    (or `iw_samples`; an LM's exact scores have none), with its scores_*.parquet beside it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CompareError(f"run folder not found: {run_dir}")
    found = []
    for path in sorted(run_dir.glob(f"eval_{split}_k*.json")):
        m = _EVAL_FILE.fullmatch(path.name)
        if m is None or m["split"] != split:
            continue
        meta = json.loads(path.read_text())
        k = int(m["k"])
        if iw_samples is not None and k not in (iw_samples, 0):
            continue
        if (precision is None and m["tag"]) or (precision is not None and meta.get("eval_precision") != precision):
            continue
        scores = scores_beside(path)
        if scores.is_file():
            found.append((k, meta, scores))
    if not found:
        options = "".join(f" {o} {v}" for o, v in (("-k", iw_samples), ("--precision", precision)) if v is not None)
        raise CompareError(f"{run_dir} has no per-sentence scores for split {split}: run "
                           f"`textsvae eval {run_dir} --split {split}{options}`")
    if len(found) > 1:
        ks = ", ".join(str(k) for k, _, _ in found)
        raise CompareError(f"{run_dir} has scores for several K on split {split} ({ks}): choose one with -k")
    _, meta, path = found[0]
    seed = _run_seed(run_dir)
    return RunScores(run_dir, meta, pd.read_parquet(path), seed)


def _run_seed(run_dir: Path) -> int | None:
    try:
        return int(read_config_dict(run_dir)["train"]["seed"])
    except (KeyError, TypeError, ValueError):
        return None


def check_comparable(a: RunScores, b: RunScores) -> None:
    """A CompareError naming what differs: the split, the sentences, K (an LM's exact scores have none)
    or the autocast precision."""
    ma, mb = a.meta, b.meta
    if ma.get("split") != mb.get("split"):
        raise CompareError(f"cannot compare: the splits differ (A: {ma.get('split')}, B: {mb.get('split')})")
    if len(a.frame) != len(b.frame):
        raise CompareError(f"cannot compare: the sentences differ (A: {len(a.frame)} sentences, "
                           f"B: {len(b.frame)})")
    same = (a.frame["text_hash"].to_numpy() == b.frame["text_hash"].to_numpy()) & (
        a.frame["n_tokens"].to_numpy() == b.frame["n_tokens"].to_numpy())
    if not same.all():
        raise CompareError(f"cannot compare: the sentences differ ({int((~same).sum())} of {len(same)}, "
                           f"the first at sentence {int(np.argmin(same))})")
    ka, kb = ma.get("iw_samples"), mb.get("iw_samples")
    if ka is not None and kb is not None and ka != kb:
        raise CompareError(f"cannot compare: K differs (A: K={ka}, B: K={kb}); evaluate both with one "
                           f"`textsvae eval RUN -k K`")
    pa, pb = ma.get("eval_precision", "fp32"), mb.get("eval_precision", "fp32")
    if pa != pb:
        raise CompareError(f"cannot compare: the precisions differ (A: {pa}, B: {pb}); evaluate one in the "
                           f"other's with `textsvae eval RUN --precision {pa}`")


def bench_group(bench: "Benchmark", results_dir: str | Path, group: str, dataset: str | None = None) -> list[Path]:
    """The finished run folders of group "LABEL/DECODER" (the decoder after the last '/') in a benchmark."""
    from ..bench.results import read_outcome

    label, sep, decoder = group.rpartition("/")
    if not sep or not label:
        raise CompareError(f"a group is LABEL/DECODER, e.g. vae/standard; got '{group}'")
    specs = [s for s in bench.runs if s.label == label and s.decoder == decoder
             and (dataset is None or s.dataset == dataset)]
    if len({s.dataset for s in specs}) > 1:
        raise CompareError(f"group {group} has runs on several datasets: choose one with --dataset")
    folders = [Path(results_dir) / s.run_id for s in specs]
    done = [f for f in folders if read_outcome(f).get("status") == "finished"]
    if not done:
        known = ", ".join(dict.fromkeys(f"{s.label}/{s.decoder}" for s in bench.runs))
        raise CompareError(f"group {group} has no finished run in {results_dir} (benchmark {bench.name}: "
                           f"{len(specs)} run(s) of it; groups: {known})")
    return done


def pair_by_seed(a: list[RunScores], b: list[RunScores]) -> tuple[list[tuple[RunScores, RunScores]], list[int]]:
    """(A, B) pairs of the seeds both groups have, in seed order, and the seeds only one group has."""
    by_a = {r.seed: r for r in a}
    by_b = {r.seed: r for r in b}
    common = sorted(set(by_a) & set(by_b), key=lambda s: (s is None, s))
    if not common:
        raise CompareError(f"the groups share no seed (A: {sorted(by_a)}, B: {sorted(by_b)})")
    return [(by_a[s], by_b[s]) for s in common], sorted(set(by_a) ^ set(by_b))


# -- statistics --------------------------------------------------------------------------------------------
def paired_mean(d: np.ndarray) -> dict[str, Any]:
    """mean d, se = sd(d) / sqrt(N) and the normal 95% interval mean +- z se."""
    n = d.size
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": mean, "se": se, "normal": [mean - Z95 * se, mean + Z95 * se]}


def paired_ratio(d: np.ndarray, tokens: np.ndarray) -> dict[str, Any]:
    """R = sum d / sum T, its delta-method se and the normal 95% interval (per token)."""
    n = d.size
    r = float(d.sum() / tokens.sum())
    se = float(math.sqrt(((d - r * tokens) ** 2).sum() / (n * (n - 1))) / tokens.mean()) if n > 1 else 0.0
    return {"mean": r, "se": se, "normal": [r - Z95 * se, r + Z95 * se]}


def _rng_keyword() -> str:
    import scipy.stats

    return "rng" if "rng" in inspect.signature(scipy.stats.bootstrap).parameters else "random_state"


def bootstrap_interval(data: tuple[np.ndarray, ...], statistic, n_resamples: int, seed: int,
                       vectorized: bool = True) -> list[float]:
    """The 95% percentile interval of `statistic` over paired resamples of the rows (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    if np.all([np.all(x == x[0]) for x in data]) and vectorized:   # a constant sample: no spread to resample
        value = float(statistic(*data, axis=-1))
        return [value, value]
    res = bootstrap(data, statistic, n_resamples=n_resamples, paired=True, vectorized=vectorized,
                    batch=BOOTSTRAP_BATCH if vectorized else None, method="percentile", confidence_level=0.95,
                    **{_rng_keyword(): np.random.default_rng(seed)})
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def _mean(d, axis=-1):
    return np.mean(d, axis=axis)


def _ratio(d, t, axis=-1):
    return np.sum(d, axis=axis) / np.sum(t, axis=axis)


def sentence_difference(a: RunScores, b: RunScores, name: str, n_resamples: int, seed: int) -> dict[str, Any]:
    """B - A of a per-sentence score: per sentence and per token, se, normal and bootstrap intervals."""
    d = b.values(name) - a.values(name)
    tokens = a.frame["n_tokens"].to_numpy(np.float64)
    per_sentence = {**paired_mean(d), "bootstrap": bootstrap_interval((d,), _mean, n_resamples, seed)}
    per_token = {**paired_ratio(d, tokens), "bootstrap": bootstrap_interval((d, tokens), _ratio, n_resamples, seed)}
    return {"per_sentence": per_sentence, "per_token": per_token}


def _posterior(run: RunScores) -> tuple[torch.Tensor, torch.Tensor]:
    mu = torch.tensor(np.stack(run.frame["mu"].to_numpy()), dtype=torch.float64)
    logvar = torch.tensor(np.stack(run.frame["logvar"].to_numpy()), dtype=torch.float64)
    return mu, logvar


def mi_from_noise(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> float:
    """MI = mean_ns [log q(z_ns|x_n) - log q(z_ns)] with z_ns = mu_n + sigma_n eps_ns; eps (N, S, D)."""
    z = mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps
    own = log_normal_diag(z, mu.unsqueeze(1), logvar.unsqueeze(1))
    return float((own - log_aggregate_posterior(z, mu, logvar)).mean())


def au_count(mu: np.ndarray, threshold: float, axis: int = 0) -> np.ndarray:
    """AU: the number of dimensions whose unbiased variance of mu over the sentences is >= threshold."""
    return (np.var(mu, axis=axis, ddof=1) >= threshold).sum(axis=-1)


def population_difference(a: RunScores, b: RunScores, name: str, n_resamples: int, seed: int) -> dict[str, Any]:
    """B - A of MI or AU on the split (from the saved evaluations) and its bootstrap interval over sentences;
    MI also carries both runs' Monte-Carlo se (mi_se)."""
    mu_a, logvar_a = _posterior(a)
    mu_b, logvar_b = _posterior(b)
    n = mu_a.size(0)
    index = np.arange(n)
    if name == "au":
        threshold = float(a.meta.get("au_threshold", 0.01))
        ma, mb = mu_a.numpy(), mu_b.numpy()

        def au_diff(i, axis=-1):
            i = np.asarray(i)
            return (au_count(mb[i], threshold, axis=-2) - au_count(ma[i], threshold, axis=-2)).astype(np.float64)

        interval = bootstrap_interval((index,), au_diff, n_resamples, seed)
        return {"value": float(b.meta["au"] - a.meta["au"]), "bootstrap": interval}
    gen = torch.Generator().manual_seed(seed)

    def mi_diff(i):
        i = torch.as_tensor(np.asarray(i))
        eps = torch.randn(i.numel(), MI_SAMPLES, mu_a.size(1), generator=gen, dtype=torch.float64)
        return mi_from_noise(mu_b[i], logvar_b[i], eps) - mi_from_noise(mu_a[i], logvar_a[i], eps)

    interval = bootstrap_interval((index,), mi_diff, n_resamples, seed, vectorized=False)
    return {"value": float(b.meta["mi"] - a.meta["mi"]), "bootstrap": interval,
            "mc_se": [a.meta.get("mi_se"), b.meta.get("mi_se")]}


def over_seeds(differences: list[float]) -> dict[str, Any]:
    """Mean, sample std and the t 95% interval (n - 1 degrees of freedom) of per-seed differences."""
    x = np.asarray(differences, dtype=np.float64)
    std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    low, high = t_interval(float(x.mean()), std, x.size)
    return {"n": int(x.size), "mean": float(x.mean()), "std": None if math.isnan(std) else std,
            "t95": None if x.size < 2 else [low, high]}


def compare(pairs: list[tuple[RunScores, RunScores]], metrics: list[str] | None = None, n_resamples: int = 1000,
            seed: int = 0, mi_resamples: int = 200) -> dict[str, Any]:
    """B - A for each metric: per pair of runs (over sentences) and over the pairs (over seeds)."""
    for a, b in pairs:
        check_comparable(a, b)
        check_comparable(pairs[0][0], a)   # every seed on the same sentences
    latent = not any(r.is_lm for pair in pairs for r in pair)
    if metrics is None:
        metrics = [m for m in METRICS if latent or m == "iw_nll"]
    for name in metrics:
        if name not in METRICS:
            raise CompareError(f"unknown metric '{name}'; valid: {', '.join(METRICS)}")
        if name != "iw_nll" and not latent:
            raise CompareError(f"an LSTM language model (decoder lm) has no per-sentence {name}: compare iw_nll")
    first = pairs[0][0]
    out: dict[str, Any] = {"a": [str(a.run_dir) for a, _ in pairs], "b": [str(b.run_dir) for _, b in pairs],
                           "seeds": [b.seed for _, b in pairs], "split": first.meta.get("split"),
                           "n_sentences": len(first.frame), "n_tokens": int(first.frame["n_tokens"].sum()),
                           "iw_samples": next((r.meta.get("iw_samples") for p in pairs for r in p
                                               if r.meta.get("iw_samples") is not None), None),
                           "precision": first.meta.get("eval_precision", "fp32"), "metrics": {}}
    for name in metrics:
        runs = []
        for a, b in pairs:
            if name in SENTENCE_METRICS:
                runs.append(sentence_difference(a, b, name, n_resamples, seed))
            else:
                runs.append(population_difference(a, b, name, mi_resamples if name == "mi" else n_resamples, seed))
        entry: dict[str, Any] = {"higher_is_better": metric(name).higher_is_better, "runs": runs}
        if name in SENTENCE_METRICS:
            entry["over_seeds"] = {unit: over_seeds([r[unit]["mean"] for r in runs])
                                   for unit in ("per_sentence", "per_token")}
        else:
            entry["over_seeds"] = over_seeds([r["value"] for r in runs])
        out["metrics"][name] = entry
    return out


# -- text ---------------------------------------------------------------------------------------------------
def _f(value: float | None, digits: int) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:+.{digits}f}"


def _interval(pair: list[float] | None, digits: int) -> str:
    return "-" if pair is None else f"[{_f(pair[0], digits)}, {_f(pair[1], digits)}]"


def _seed_lines(over: dict[str, Any], digits: int, unit: str = "") -> str:
    if over["n"] < 2:
        return "over seeds: n = 1, no interval over seeds (one pair of runs; groups of seeds: --bench)"
    return (f"over seeds: n = {over['n']}{unit}  mean {_f(over['mean'], digits)}  std {over['std']:.{digits}f}  "
            f"t 95% {_interval(over['t95'], digits)}")


def format_comparison(result: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> str:
    """The comparison as a few lines per metric (B - A)."""
    lines = [f"B - A on {result['split']}: {result['n_sentences']} sentences, {result['n_tokens']} tokens, "
             f"K={result['iw_samples']}, {result['precision']}; A = {names[0]}, B = {names[1]}"]
    for name, entry in result["metrics"].items():
        better = {True: "higher is better", False: "lower is better", None: ""}[entry["higher_is_better"]]
        lines.append(f"{name} ({better})" if better else name)
        for seed, run in zip(result["seeds"], entry["runs"]):
            who = "run" if len(result["seeds"]) == 1 and seed is None else f"seed {seed}"
            if name in SENTENCE_METRICS:
                for unit, digits in (("per_sentence", 3), ("per_token", 4)):
                    r = run[unit]
                    lines.append(f"  {who:8s} {unit.replace('_', ' '):12s} {_f(r['mean'], digits)} "
                                 f"(se {r['se']:.{digits}f})  normal 95% {_interval(r['normal'], digits)}  "
                                 f"bootstrap 95% {_interval(run[unit]['bootstrap'], digits)}")
                    who = ""
            else:
                digits = 0 if name == "au" else 3
                extra = ("" if name == "au" else "  (mc se A " + ", B ".join(
                    "-" if v is None else f"{v:.3f}" for v in run["mc_se"]) + ")")
                lines.append(f"  {who:8s} {_f(run['value'], digits)}  bootstrap over sentences 95% "
                             f"{_interval(run['bootstrap'], digits)}{extra}")
        over = entry["over_seeds"]
        if name in SENTENCE_METRICS:
            lines.append("  " + _seed_lines(over["per_sentence"], 3, " (per sentence)"))
            if over["per_sentence"]["n"] > 1:
                lines.append("  " + _seed_lines(over["per_token"], 4, " (per token)"))
        else:
            lines.append("  " + _seed_lines(over, 0 if name == "au" else 3))
    return "\n".join(lines)
