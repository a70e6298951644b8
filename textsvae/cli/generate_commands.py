"""What a model generates: sample, reconstruct, interpolate, encode, plot-latent (textsvae/inference/generate.py)."""
from __future__ import annotations

import functools
import json

import click

from .app import UserError, cli


SPLIT_NAMES = ("train", "valid", "test")

# the fields of textsvae.model.decoding.DecodeOptions, with its defaults (tests/test_generate.py checks they agree)
DECODE_OPTIONS = (
    click.option("--decode", "strategy", default="greedy", show_default=True, metavar="greedy|beam|sample",
                 help="Decoding: argmax per step, beam search, or sampling."),
    click.option("--beam-size", "beam_size", type=int, default=5, show_default=True, help="Beams per sentence (beam)."),
    click.option("--length-penalty", "length_penalty", type=float, default=0.0, show_default=True,
                 help="Beam: rank finished hypotheses by log p / length^this (0: plain log p)."),
    click.option("--temperature", type=float, default=1.0, show_default=True, help="Sample: softmax(logits / T)."),
    click.option("--top-p", "top_p", type=float, default=1.0, show_default=True,
                 help="Sample: nucleus mass in (0, 1] (1 keeps every word)."),
    click.option("--max-len", "max_len", type=int, default=100, show_default=True, help="Words per sentence at most."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed of every random draw: z from the prior or q(z|x), and sampled words."),
)


def decoding_options(command):
    """Add the shared decoding options to a command, which receives them as one dict `decoding` (keyword
    arguments of generate.decode_options), checked before the model loads."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from ..inference.generate import DECODE_FIELDS, decode_options

        decoding = {name: kwargs.pop(name) for name in DECODE_FIELDS}
        decode_options(**decoding)
        return command(*args, decoding=decoding, **kwargs)

    for option in reversed(DECODE_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def run_options(command):
    """--device and --json, shared by sample, reconstruct and interpolate."""
    command = click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")(command)
    command = click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")(command)
    return command


def _load_run(run_dir: str, device: str | None):
    from ..inference.api import load_run

    return load_run(run_dir, device)


def _echo_rows(rows: list[dict], as_json: bool, text) -> None:
    """One JSON object a line, or text(row) a line."""
    for row in rows:
        click.echo(json.dumps(row, ensure_ascii=False) if as_json else text(row))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("-n", "n", type=int, default=10, show_default=True, help="Sentences to sample.")
@decoding_options
@run_options
def sample(run_dir, n, decoding, device, as_json):
    """Sentences decoded from z ~ N(0, I) drawn under --seed (an LM run decodes without z)."""
    from ..inference.generate import check_at_least

    check_at_least(n, 1, "n")
    texts = _load_run(run_dir, device).sample(n, **decoding)
    _echo_rows([{"text": t, "index": i} for i, t in enumerate(texts)], as_json, lambda r: r["text"])


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("sentences", nargs=-1)
@click.option("--file", "file", default=None, help="Read the sentences from this file, one a line.")
@click.option("--split", type=click.Choice(SPLIT_NAMES), default=None, help="Take them from the run's corpus.")
@click.option("-n", "n", type=int, default=20, show_default=True, help="With --split: its first N sentences.")
@click.option("--z", "z_mode", type=click.Choice(["mean", "sample"]), default="mean", show_default=True,
              help="Decode the posterior mean, or draws z ~ q(z|x).")
@click.option("--samples", type=int, default=None,
              help="Reconstructions per sentence (default 3 with --z sample or --decode sample, else 1).")
@decoding_options
@run_options
def reconstruct(run_dir, sentences, file, split, n, z_mode, samples, decoding, device, as_json):
    """Each sentence beside its reconstruction(s): '> input', then '= reconstruction' lines."""
    from ..inference.generate import check_at_least, read_lines, require_latent, split_lines

    given = [name for name, v in (("sentences", sentences), ("--file", file), ("--split", split)) if v]
    if len(given) != 1:
        raise UserError("give sentences, --file F or --split SPLIT" if not given else
                        f"give one of sentences, --file or --split, not {' and '.join(given)}")
    if samples is None:
        samples = 3 if "sample" in (z_mode, decoding["strategy"]) else 1
    if file:
        texts = read_lines(file)[0]
    elif sentences:
        texts = list(sentences)
    else:
        check_at_least(n, 1, "n")
    run = _load_run(run_dir, device)
    if split:
        require_latent(run.model, "reconstruct")
        texts = split_lines(run.config, run.vocab, split)[0][:n]
    out = run.reconstruct(texts, z=z_mode, samples=samples, **decoding)
    _echo_rows([{"input": t, "reconstructions": r} for t, r in zip(texts, out)], as_json,
               lambda row: "\n".join([f"> {row['input']}"] + [f"= {r}" for r in row["reconstructions"]]))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--steps", type=int, default=8, show_default=True, help="Points from A (t = 0) to B (t = 1), >= 2.")
@click.option("--prior", is_flag=True, help="Between two draws of N(0, I) under --seed instead of two sentences.")
@decoding_options
@run_options
def interpolate(run_dir, a, b, steps, prior, decoding, device, as_json):
    """Decode z(t) = (1 - t) z_A + t z_B between the posterior means of sentences A and B: 't sentence' lines."""
    from ..inference.generate import interpolation_points

    interpolation_points(steps)                      # checks --steps before the model loads
    rows = _load_run(run_dir, device).interpolate(a, b, steps, prior=prior, **decoding)
    _echo_rows([{"t": t, "text": text, "index": i} for i, (t, text) in enumerate(rows)], as_json,
               lambda r: f"{r['t']:.3f}  {r['text']}")


def latent_source(command):
    """--split, --file and --device, shared by encode and plot-latent."""
    command = click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")(command)
    command = click.option("--file", "file", default=None,
                           help="Sentences to encode, one a line (label<TAB>text keeps the label).")(command)
    return click.option("--split", type=click.Choice(SPLIT_NAMES), default=None,
                        help="A split of the run's corpus (default test).")(command)


def _latent_arguments(split: str | None, file: str | None) -> dict:
    """Keyword arguments of Run.latents / Run.plot_latent for --split or --file."""
    from ..inference.generate import read_lines

    if split and file:
        raise UserError("give --split or --file, not both")
    if file:
        texts, labels = read_lines(file)
        return {"sentences": texts, "labels": labels}
    return {"split": split or "test"}


@cli.command()
@click.argument("run_dir", type=click.Path())
@latent_source
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Parquet file to write.")
def encode(run_dir, split, file, device, out):
    """Write q(z|x) of each sentence as parquet rows: text, label, mu, logvar."""
    from ..inference.generate import write_parquet

    source = _latent_arguments(split, file)
    frame = _load_run(run_dir, device).latents(**source)
    click.echo(f"wrote {write_parquet(frame, out)} ({len(frame)} rows)")


@cli.command("plot-latent")
@click.argument("run_dir", type=click.Path())
@latent_source
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
def plot_latent(run_dir, split, file, device, out):
    """Posterior means on their first two principal components beside each dimension's variance (AU)."""
    source = _latent_arguments(split, file)
    click.echo(f"wrote {_load_run(run_dir, device).plot_latent(out, **source)}")
