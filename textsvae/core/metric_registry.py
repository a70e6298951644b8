"""Every metric a run reports, declared once: its name, title, which direction is better, digits,
the settings its value depends on, and whether it needs z (an LM run reports None).

Result rows, table columns, bold marks and table footnotes all come from here; a key of an
evaluation that is not declared here is a setting or a diagnostic and never becomes a row.
Adding a metric: its function (metrics.py, probe.py, ...), the line of evaluation that stores it
under its name, and one `Metric(...)` below.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    title: str                          # column title in tables
    higher_is_better: bool | None       # None: no "best" (an error bar or a reference value)
    digits: int                         # printed decimals
    depends_on: tuple[str, ...] = ()    # the settings written beside its value in each row
    needs_latent: bool = False          # True: an LM run (no z) reports None
    count: bool = False                 # a whole number (AU): one value prints without decimals

    def digits_for(self, value: float, n: int) -> int:
        """Decimals to print `value`, a mean over `n` seeds: none for one whole count."""
        return 0 if self.count and n <= 1 and float(value).is_integer() else self.digits


SPLIT = ("n_sentences",)
IW = ("iw_samples", "n_sentences")
WHOLE_SPLIT = ("mi_n", "mi_samples", "n_sentences")

# KL, MI and AU count as "higher is better": the information kept in z is what this suite studies.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("iw_nll", "NLL", False, 2, IW),
    Metric("iw_nll_se", "NLL s.e.", None, 2, IW),
    Metric("iw_nll_mc_se", "NLL MC s.e.", None, 3, IW),
    Metric("ppl", "PPL", False, 2, IW),
    Metric("rec", "Rec", False, 2, IW, needs_latent=True),
    Metric("elbo", "ELBO", True, 2, IW),
    Metric("ppl_bound", "PPL bound", False, 2, IW),
    Metric("kl", "KL", True, 2, SPLIT, needs_latent=True),
    Metric("mi", "MI", True, 2, WHOLE_SPLIT, needs_latent=True),
    Metric("mi_se", "MI s.e.", None, 3, WHOLE_SPLIT, needs_latent=True),
    Metric("mi_minibatch", "MI (He et al. batches)", True, 2, SPLIT, needs_latent=True),
    Metric("agg_kl", "agg. KL", False, 2, WHOLE_SPLIT, needs_latent=True),
    Metric("au", "AU", True, 1, ("au_threshold", "n_sentences"), needs_latent=True, count=True),
    Metric("probe_acc", "topic acc.", True, 3, needs_latent=True),
    Metric("probe_mi", "I(z;topic)", True, 2, needs_latent=True),
    Metric("probe_acc_mu", "topic acc. (mu)", True, 3, needs_latent=True),
    Metric("probe_mi_mu", "I(mu;topic)", True, 2, needs_latent=True),
    Metric("probe_h", "H(topic)", None, 2, needs_latent=True),
    Metric("probe_log_k", "log K", None, 2, needs_latent=True),
    # greedy reconstructions of the posterior mean against the inputs (reconstruction.py; eval --recon)
    Metric("recon_bleu", "recon. BLEU", True, 2, SPLIT, needs_latent=True),
    Metric("recon_acc", "recon. acc.", True, 3, SPLIT, needs_latent=True),
)}
RECON_METRICS = ("recon_bleu", "recon_acc")


def metric(name: str) -> Metric:
    """The declaration of `name`; an undeclared name (a user's own column) prints as itself, never bold."""
    return METRICS.get(name, Metric(name, name, None, 3))


def latent_metric_names() -> tuple[str, ...]:
    return tuple(name for name, m in METRICS.items() if m.needs_latent)


def best_rule(names: list[str]) -> str:
    """The footnote's account of the bold marks for these columns, e.g. "NLL, PPL lower; KL, MI, AU higher"."""
    lower = [metric(n).title for n in names if metric(n).higher_is_better is False]
    higher = [metric(n).title for n in names if metric(n).higher_is_better is True]
    parts = ([f"{', '.join(lower)} lower"] if lower else []) + ([f"{', '.join(higher)} higher"] if higher else [])
    return "; ".join(parts)


def fixed(value: float, digits: int, signed: bool = False) -> str:
    """`value` with `digits` decimals, '+' on positives when `signed`, and no '-0.00': an estimate just
    below zero (MI's Monte-Carlo noise) prints as the zero it rounds to."""
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    if text.lstrip("+-").strip("0.") == "":
        return ("+" if signed else "") + text.lstrip("+-")
    return text
