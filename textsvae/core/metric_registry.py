"""Every metric a run reports, declared once: its name, title, which direction is better, digits,
the settings its value depends on, whether it needs z (an LM run reports None), the evaluation option
that adds it, the line `textsvae eval` prints it on, and whether trackers show it as a headline number.

Result rows, table columns, bold marks, table footnotes, what `eval` prints, the trackers' headline
columns and which metrics a benchmark's `metrics = [...]` switches on all come from here; a key of an
evaluation that is not declared here is a setting or a diagnostic and never becomes a row.
Adding a metric: its function (kernels/metrics.py, evaluation/probe.py, ...), the line of evaluation
that stores it under its name, and one `Metric(...)` below.
"""
from __future__ import annotations

from dataclasses import dataclass

# options that add metrics to an evaluation ("" = every evaluation has them)
OPT_INS = {
    "": "every evaluation",
    "mi_batch": "He et al.'s per-minibatch MI (`eval --mi-batch`, or a benchmark whose metrics name it)",
    "probe": "the topic probe (benchmarks with `probe = true` on a labelled corpus)",
    "recon": "greedy reconstructions of the posterior mean (`eval --recon`, or a benchmark whose metrics name them)",
}


@dataclass(frozen=True)
class Metric:
    name: str
    title: str                          # column title in tables
    higher_is_better: bool | None       # None: no "best" (an error bar or a reference value)
    digits: int                         # printed decimals
    depends_on: tuple[str, ...] = ()    # the settings written beside its value in each row
    needs_latent: bool = False          # True: an LM run (no z) reports None
    count: bool = False                 # a whole number (AU): one value prints without decimals
    opt_in: str = ""                    # the option of OPT_INS that adds it; "" = always reported
    line: str = ""                      # `textsvae eval` prints the metrics of one line together
    headline: bool = False              # a tracker's summary column (TensorBoard's HParams tab)

    def digits_for(self, value: float, n: int) -> int:
        """Decimals to print `value`, a mean over `n` seeds: none for one whole count."""
        return 0 if self.count and n <= 1 and float(value).is_integer() else self.digits


SPLIT = ("n_sentences",)
IW = ("iw_samples", "n_sentences")
WHOLE_SPLIT = ("mi_n", "mi_samples", "n_sentences")

# KL, MI and AU count as "higher is better": the information kept in z is what this suite studies.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("iw_nll", "NLL", False, 2, IW, line="likelihood", headline=True),
    Metric("iw_nll_se", "NLL s.e.", None, 2, IW, line="likelihood"),
    Metric("iw_nll_mc_se", "NLL MC s.e.", None, 3, IW, line="likelihood"),
    Metric("ppl", "PPL", False, 2, IW, line="likelihood", headline=True),
    Metric("rec", "Rec", False, 2, IW, needs_latent=True, line="bound"),
    Metric("elbo", "ELBO", True, 2, IW, line="bound"),
    Metric("ppl_bound", "PPL bound", False, 2, IW, line="bound"),
    Metric("kl", "KL", True, 2, SPLIT, needs_latent=True, line="bound", headline=True),
    Metric("mi", "MI", True, 2, WHOLE_SPLIT, needs_latent=True, line="latent", headline=True),
    Metric("mi_se", "MI s.e.", None, 3, WHOLE_SPLIT, needs_latent=True, line="latent"),
    Metric("mi_minibatch", "MI (He et al. batches)", True, 2, SPLIT, needs_latent=True, opt_in="mi_batch",
           line="mi_batch"),
    Metric("agg_kl", "agg. KL", False, 2, WHOLE_SPLIT, needs_latent=True, line="latent"),
    Metric("au", "AU", True, 1, ("au_threshold", "n_sentences"), needs_latent=True, count=True, line="latent",
           headline=True),
    Metric("probe_acc", "topic acc.", True, 3, needs_latent=True, opt_in="probe", line="probe"),
    Metric("probe_mi", "I(z;topic)", True, 2, needs_latent=True, opt_in="probe", line="probe"),
    Metric("probe_acc_mu", "topic acc. (mu)", True, 3, needs_latent=True, opt_in="probe", line="probe"),
    Metric("probe_mi_mu", "I(mu;topic)", True, 2, needs_latent=True, opt_in="probe", line="probe"),
    Metric("probe_h", "H(topic)", None, 2, needs_latent=True, opt_in="probe", line="probe"),
    Metric("probe_log_k", "log K", None, 2, needs_latent=True, opt_in="probe", line="probe"),
    # greedy reconstructions of the posterior mean against the inputs (reconstruction.py)
    Metric("recon_bleu", "recon. BLEU", True, 2, SPLIT, needs_latent=True, opt_in="recon", line="recon"),
    Metric("recon_acc", "recon. acc.", True, 3, SPLIT, needs_latent=True, opt_in="recon", line="recon"),
)}


def metric(name: str) -> Metric:
    """The declaration of `name`; an undeclared name (a user's own column) prints as itself, never bold."""
    return METRICS.get(name, Metric(name, name, None, 3))


def metric_names(opt_ins: tuple[str, ...] = ("",)) -> tuple[str, ...]:
    """The metrics an evaluation with these options reports ("" = the ones every evaluation has)."""
    return tuple(name for name, m in METRICS.items() if m.opt_in in opt_ins)


def latent_metric_names(opt_ins: tuple[str, ...] = ("",)) -> tuple[str, ...]:
    """Those of `metric_names(opt_ins)` that need z: None for an LM."""
    return tuple(name for name in metric_names(opt_ins) if METRICS[name].needs_latent)


def opt_ins_for(names: list[str]) -> tuple[str, ...]:
    """The options that a benchmark's `metrics = [...]` switches on by naming their metrics."""
    return tuple(sorted({metric(n).opt_in for n in names} - {""}))


def headline_metric_names() -> tuple[str, ...]:
    return tuple(name for name, m in METRICS.items() if m.headline)


def metric_lines(result: dict) -> list[str]:
    """The declared metrics of an evaluation dict, a line per `Metric.line`, each as "name value" with its
    digits, followed by the settings they depend on that vary by line (e.g. MI's N and S)."""
    shown = {"n_sentences", "iw_samples"}            # in the evaluation's head line
    lines: dict[str, tuple[list[str], dict[str, object]]] = {}
    for name, m in METRICS.items():
        if name not in result:
            continue
        value = result[name]
        text = "-" if value is None else fixed(float(value), m.digits_for(value, 1))
        cells, settings = lines.setdefault(m.line, ([], {}))
        cells.append(f"{name} {text}")
        settings.update({k: result.get(k) for k in m.depends_on if k not in shown and result.get(k) is not None})
    return ["  ".join(cells) + (f"  ({', '.join(f'{k}={v}' for k, v in settings.items())})" if settings else "")
            for cells, settings in lines.values()]


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
