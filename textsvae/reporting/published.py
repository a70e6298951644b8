"""Published numbers (docs/protocol.md section 5), shown as extra table rows labelled "reported".

A benchmark opts in with `reported = ["he2019-yahoo"]` only where its protocol matches the
paper's (sizes, corpus, IW-NLL), so these rows never sit beside numbers made another way.
Metric names are the results store's (iw_nll, kl, mi, ppl); NaN-free dicts, missing = not reported. A value
sits under the metric that was computed the way the paper computed it: He et al.'s MI is the mean over their
evaluation minibatches (one length, at most 32 sentences), so it is `mi_minibatch`, not the whole-split `mi`.
`method` (with `params`, a subset of the run's) names the suite's method that reproduces a row, for
`textsvae table --gaps`; a row without it (a model this suite does not have) has no gap.
"""
from __future__ import annotations

from typing import Any

_HE = "He et al. 2019"

REPORTED: dict[str, dict[str, Any]] = {
    # He et al. 2019 (ICLR), 512/1024/32 LSTM, NLL by importance sampling, nats per document; MI per evaluation
    # minibatch (jxhe/vae-lagging-encoder, text.py: calc_mi on each batch, averaged weighted by batch size)
    "he2019-yahoo": {"dataset": "yahoo", "source": _HE, "rows": [
        {"label": "LSTM-LM (exact NLL)", "decoder": "lm", "method": "vae", "iw_nll": 328.1},
        {"label": "vae", "decoder": "standard", "method": "vae", "iw_nll": 328.8, "kl": 0.0, "mi_minibatch": 0.0},
        {"label": "vae + anneal", "decoder": "standard", "method": "anneal", "iw_nll": 328.6, "kl": 0.0,
         "mi_minibatch": 0.0},
        {"label": "beta-VAE (0.2)", "decoder": "standard", "method": "beta", "params": {"beta": 0.2},
         "iw_nll": 333.1, "kl": 18.7, "mi_minibatch": 3.4},
        {"label": "beta-VAE (0.4)", "decoder": "standard", "method": "beta", "params": {"beta": 0.4},
         "iw_nll": 328.5, "kl": 3.8, "mi_minibatch": 2.2},
        {"label": "SA-VAE + anneal", "decoder": "standard", "method": "sa-vae+anneal",
         "iw_nll": 327.4, "kl": 3.5, "mi_minibatch": 1.9},
        {"label": "aggressive + anneal", "decoder": "standard", "method": "aggressive+anneal",
         "iw_nll": 326.6, "kl": 6.7, "mi_minibatch": 3.2},
        {"label": "CNN-VAE (Yang et al. 2017, bound)", "decoder": "cnn", "iw_nll": 332.1, "kl": 10.0},
    ]},
    "he2019-yelp": {"dataset": "yelp", "source": _HE, "rows": [
        {"label": "LSTM-LM (exact NLL)", "decoder": "lm", "method": "vae", "iw_nll": 357.3},
        {"label": "vae", "decoder": "standard", "method": "vae", "iw_nll": 358.2, "kl": 0.0, "mi_minibatch": 0.0},
        {"label": "vae + anneal", "decoder": "standard", "method": "anneal", "iw_nll": 358.1, "kl": 0.0,
         "mi_minibatch": 0.0},
        {"label": "beta-VAE (0.2)", "decoder": "standard", "method": "beta", "params": {"beta": 0.2},
         "iw_nll": 360.4, "kl": 11.3, "mi_minibatch": 3.3},
        {"label": "beta-VAE (0.4)", "decoder": "standard", "method": "beta", "params": {"beta": 0.4},
         "iw_nll": 358.8, "kl": 4.0, "mi_minibatch": 1.8},
        {"label": "SA-VAE + anneal", "decoder": "standard", "method": "sa-vae+anneal",
         "iw_nll": 355.9, "kl": 2.3, "mi_minibatch": 1.3},
        {"label": "aggressive + anneal", "decoder": "standard", "method": "aggressive+anneal",
         "iw_nll": 355.9, "kl": 3.7, "mi_minibatch": 2.3},
        {"label": "CNN-VAE (Yang et al. 2017, bound)", "decoder": "cnn", "iw_nll": 359.1, "kl": 7.6},
    ]},
    # Li et al. 2019 ("A Surprisingly Effective Fix ..."), as quoted in Optimus (Li et al. 2020), Table 8:
    # PTB test, 256/256/32 LSTM, IW-NLL with K = 500; their "-ELBO" column is stored as elbo = -(Rec + KL),
    # and the LM's 101.04 is its exact NLL
    "li2019-ptb": {"dataset": "ptb", "source": "Li et al. 2019", "rows": [
        {"label": "LSTM-LM (exact NLL)", "decoder": "lm", "method": "vae", "ppl": 100.47, "iw_nll": 101.04},
        {"label": "vae + anneal", "decoder": "standard", "method": "anneal",
         "ppl": 101.40, "elbo": -101.28, "kl": 0.00, "mi": 0.00, "au": 0},
        # from a script Li et al. did not release (their repository has no cyclical run). Its PPL implies an IW-NLL
        # of 21.917 * ln 108.81 = 102.78, only 0.03 below its -ELBO of 102.81 although its KL is 1.37 (the other
        # rows: 0.30 below with KL 0.93, 2.18 with KL 6.54): it looks like a bound, not an IW estimate
        {"label": "cyclical anneal", "decoder": "standard", "method": "cyclical",
         "ppl": 108.81, "elbo": -102.81, "kl": 1.37, "mi": 1.27, "au": 5},
        # He et al.'s recipe, which their code runs with KL annealing (--warm_up 10 --kl_start 0.1)
        {"label": "aggressive", "decoder": "standard", "method": "aggressive+anneal",
         "ppl": 99.83, "elbo": -101.19, "kl": 0.93, "mi": 0.83, "au": 4},
        {"label": "AE pretrain + free bits (lambda 5)", "decoder": "standard", "method": "pretrain-fb",
         "params": {"target": 5.0}, "ppl": 96.86, "elbo": -102.41, "kl": 6.54, "mi": 5.31, "au": 32},
    ]},
    # Bowman et al. 2016: their own model sizes, so no benchmark here matches their protocol
    "bowman2016-ptb": {"dataset": "ptb", "source": "Bowman et al. 2016 (own sizes)", "rows": [
        {"label": "LSTM-LM", "decoder": "lm", "ppl": 116.0},
        {"label": "vae", "decoder": "standard", "method": "vae", "ppl": 119.0},
    ]},
}


def reported_rows(keys: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """Flat rows {dataset, source, label, decoder, metric: value...} for the given keys."""
    from ..bench.grid import BenchmarkError

    out = []
    for key in keys:
        if key not in REPORTED:
            raise BenchmarkError(f"unknown reported set '{key}'; valid: {', '.join(REPORTED)}")
        entry = REPORTED[key]
        for row in entry["rows"]:
            out.append({"dataset": entry["dataset"], "source": entry["source"], **row})
    return out
