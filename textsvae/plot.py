"""Training curves from monitor.jsonl (every N steps) or log.jsonl (per epoch): KL, MI, AU, beta and
reconstruction, one line per run."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from .config import ConfigError
from .io import atomic_write_bytes, read_jsonl

log = logging.getLogger(__name__)

# (log.jsonl key, panel title); validation values are at beta = 1 on the monitor subset (MI, AU)
PANELS = (("valid_kl", "KL (valid)"), ("valid_mi", "MI (valid)"), ("valid_au", "active units (valid)"),
          ("beta", "beta (train)"), ("valid_rec", "reconstruction (valid)"))


def run_label(run_dir: Path) -> str:
    """'decoder method seed N' from the run's config.json, else the folder name."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        return f"{config['model']['decoder']} {config['train']['method']} s{config['train']['seed']}"
    except (OSError, ValueError, KeyError):
        return run_dir.name


def plot_runs(run_dirs: list[str | Path], out: str | Path, x: str = "epoch") -> Path:
    """Write a PNG with one panel per PANELS entry; x is 'epoch' or 'step'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = []
    for d in map(Path, run_dirs):
        # monitor.jsonl (every `monitor_every` steps, all on the monitor subset) when the run has it
        rows = read_jsonl(d / "monitor.jsonl") or read_jsonl(d / "log.jsonl")
        if not rows:
            raise ConfigError(f"{d} has no training log (log.jsonl missing or empty)")
        logs.append((run_label(d), rows))
    labels = [label for label, _ in logs]
    if len(set(labels)) < len(labels):  # same config in two folders: name them by folder
        logs = [(f"{label} ({Path(d).name})", rows) for (label, rows), d in zip(logs, run_dirs)]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4), constrained_layout=True)
    for ax, (key, title) in zip(axes, PANELS):
        for i, (label, rows) in enumerate(logs):  # fixed style per run: panels where a run has no value agree
            points = [(r[x], r[key]) for r in rows if r.get(key) is not None and x in r]
            style = {"color": f"C{i % 10}", "linestyle": ("-", "--", ":", "-.")[(i // 10) % 4]}
            ax.plot(*(zip(*points) if points else ([], [])), marker="o", markersize=3, label=label, **style)
        ax.set_title(title)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(out, buffer.getvalue())
    plt.close(fig)
    return out
