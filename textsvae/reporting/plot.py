"""Training curves from monitor.jsonl (every N steps) or log.jsonl (per epoch), one line per run:
by default KL, MI, AU, beta and reconstruction; any of PANEL_TITLES with `panels` (the LR rule's
picture: valid_loss and lr, per epoch)."""
from __future__ import annotations

import io
import logging
from pathlib import Path

from ..core.config import ConfigError
from ..core.io import atomic_write_bytes, read_jsonl
from ..core.rundir import read_config_dict

log = logging.getLogger(__name__)

# log.jsonl key -> panel title; validation values are at beta = 1, MI and AU on the monitor subset
PANEL_TITLES = {"valid_loss": "loss, -ELBO (valid)", "valid_kl": "KL (valid)", "valid_mi": "MI (valid)",
                "valid_au": "active units (valid)", "beta": "beta (train)", "valid_rec": "reconstruction (valid)",
                "lr": "learning rate", "train_loss": "loss (train, at beta)", "train_kl": "KL (train)"}
PANELS = ("valid_kl", "valid_mi", "valid_au", "beta", "valid_rec")
PROTOCOL_PANELS = ("valid_loss", "valid_kl", "valid_mi", "valid_au", "lr")


LATENT_KEYS = ("valid_kl", "valid_mi", "valid_au", "train_kl", "beta")   # nothing to draw for a model without z


def _config(run_dir: Path) -> dict:
    return read_config_dict(run_dir)


def run_label(run_dir: Path) -> str:
    """'decoder method sN' ('LSTM-LM sN' for the LM), then the training precision if not fp32, from the
    run's config.json; else the folder name."""
    try:
        config = _config(run_dir)
        seed = config["train"]["seed"]
        precision = config["train"].get("precision", "fp32")
        suffix = "" if precision == "fp32" else f" {precision}"
        if config["model"]["decoder"] == "lm":
            return f"LSTM-LM s{seed}{suffix}"
        return f"{config['model']['decoder']} {config['train']['method']} s{seed}{suffix}"
    except KeyError:
        return run_dir.name


def without_latent(rows: list[dict]) -> list[dict]:
    """An LM's log rows without the z columns it logs as zeros (KL 0 there means 'no z', not 'collapsed')."""
    return [{k: v for k, v in row.items() if k not in LATENT_KEYS} for row in rows]


def check_panels(panels: tuple[str, ...]) -> None:
    """One-line error for an empty panel list or a key outside PANEL_TITLES."""
    unknown = [p for p in panels if p not in PANEL_TITLES]
    if unknown or not panels:
        raise ConfigError(f"unknown panel(s) {unknown or '(none given)'}; valid panels: {', '.join(PANEL_TITLES)}")


def read_logs(run_dirs: list[str | Path], per_epoch: bool = False) -> list[tuple[str, list[dict]]]:
    """(label, log rows) per run folder: monitor.jsonl where it exists (unless per_epoch), else log.jsonl
    (an LM's without its z columns); labelled by run_label, with the folder's name added where two runs
    share a label."""
    logs = []
    for d in map(Path, run_dirs):
        # monitor.jsonl (every `monitor_every` steps, all on the monitor subset) when the run has it
        rows = (None if per_epoch else read_jsonl(d / "monitor.jsonl")) or read_jsonl(d / "log.jsonl")
        if not rows:
            raise ConfigError(f"{d} has no training log (log.jsonl missing or empty)")
        if _config(d).get("model", {}).get("decoder") == "lm":
            rows = without_latent(rows)
        logs.append((run_label(d), rows))
    labels = [label for label, _ in logs]
    if len(set(labels)) < len(labels):  # same config in two folders: name them by folder
        logs = [(f"{label} ({Path(d).name})", rows) for (label, rows), d in zip(logs, run_dirs)]
    return logs


def curves_figure(logs: list[tuple[str, list[dict]]], x: str = "epoch", panels: tuple[str, ...] = PANELS,
                  title: str = "", panel_size: tuple[float, float] = (4, 3.4),
                  ylim: dict[str, tuple[float, float]] | None = None):
    """A matplotlib figure: one panel per key of `panels`, one line per (label, rows) of logs; ylim fixes
    the y range of some panels (active units: 0 to the latent size)."""
    check_panels(panels)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    width, height = panel_size
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), constrained_layout=True,
                             squeeze=False)
    axes = axes[0]
    for ax, key in zip(axes, panels):
        for i, (label, rows) in enumerate(logs):  # fixed style per run: panels where a run has no value agree
            points = [(r[x], r[key]) for r in rows if r.get(key) is not None and x in r]
            style = {"color": f"C{i % 10}", "linestyle": ("-", "--", ":", "-.")[(i // 10) % 4]}
            ax.plot(*(zip(*points) if points else ([], [])), marker="o", markersize=3, label=label, **style)
        ax.set_title(PANEL_TITLES[key])
        if key == "lr":
            ax.set_yscale("log", base=2)
        if key.endswith("_au"):                   # a count of latent dimensions
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if key in (ylim or {}):
            ax.set_ylim(*ylim[key])
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_runs(run_dirs: list[str | Path], out: str | Path, x: str = "epoch",
              panels: tuple[str, ...] = PANELS, per_epoch: bool = False) -> Path:
    """Write a PNG with one panel per key of `panels`; x is 'epoch' or 'step'. per_epoch reads
    log.jsonl even where monitor.jsonl exists (lr and valid_loss are logged per epoch only)."""
    check_panels(panels)
    return save_png(curves_figure(read_logs(run_dirs, per_epoch), x, panels), out)


def png_bytes(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes; closes it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def save_png(fig, out: str | Path) -> Path:
    """Write the figure as a PNG atomically (its folder made if missing) and close it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, png_bytes(fig))
    return out


def principal_components(mu, k: int = 2):
    """(N, k) projection of the centred rows of mu (N, D) on their first k principal directions (SVD), and
    the fraction of the total variance each explains (k,); components past D are zero."""
    import torch

    centred = mu.double() - mu.double().mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    out = torch.zeros(mu.size(0), k, dtype=torch.float64)
    used = min(k, vh.size(0))
    out[:, :used] = centred @ vh[:used].T
    power = s.pow(2)
    share = torch.zeros(k, dtype=torch.float64)
    share[:used] = power[:used] / power.sum().clamp(min=1e-300)
    return out, share


def plot_latent(mu, labels: list | None, au_threshold: float, out: str | Path, title: str = "") -> Path:
    """Write a PNG: the posterior means mu (N, D) on their first two principal components, coloured by
    label when there are labels, beside a bar chart of Var_x(mu_d) per dimension with the AU threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..kernels.metrics import active_units

    if mu.size(0) < 2:
        raise ConfigError(f"the latent plot needs at least 2 sentences, got {mu.size(0)}")
    points, share = principal_components(mu.cpu())
    au, variances = active_units(mu.cpu().double(), au_threshold)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    _scatter_by_label(left, points.numpy(), labels)
    left.set_xlabel(f"PC1 ({100 * float(share[0]):.0f}% of the variance)")
    left.set_ylabel(f"PC2 ({100 * float(share[1]):.0f}% of the variance)")
    left.set_title("posterior means, first two principal components")
    dims = list(range(1, variances.numel() + 1))
    right.bar(dims, variances.clamp(min=1e-12).numpy(), color="C0")
    right.axhline(au_threshold, color="C3", linestyle="--", label=f"AU threshold {au_threshold:g}")
    right.set_yscale("log")
    right.set_xlabel("latent dimension")
    right.set_ylabel("Var_x(E[z_d | x])")
    right.set_title(f"active units: {au} of {variances.numel()}")
    right.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return save_png(fig, out)


def _scatter_by_label(ax, points, labels: list | None) -> None:
    """One colour per label (sorted; a legend up to 20 labels), or one colour without labels."""
    if not labels or all(label is None for label in labels):
        ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.6, color="C0")
        return
    names = sorted({str(label) for label in labels}, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
    for i, name in enumerate(names):
        rows = [r for r, label in enumerate(labels) if str(label) == name]
        ax.scatter(points[rows, 0], points[rows, 1], s=8, alpha=0.6, color=f"C{i % 10}", label=name)
    if len(names) <= 20:
        ax.legend(title="label", fontsize="small", markerscale=2)
