"""textsvae's training step against a plain PyTorch LSTM-VAE of the same sizes, side by side in one process.

    python benchmarks/perf/plain_reference.py --preset ptb --data ptb --threads 2 --steps 60

The plain model is what a paper's own script does (He et al. 2019's `lstm_vae`, written here in a few
lines): nn.Embedding, an nn.LSTM encoder read at each sentence's last word, z = mu + sigma eps, an
nn.LSTM decoder reading [dropout(emb); z] from h0 = tanh(W z), c0 = W z, nn.Linear from dropout(h) to the
vocabulary,
F.cross_entropy over the real targets, the Gaussian KL, torch's clip_grad_norm_ and SGD. Both train on
the same batches, batch by batch in turn (the variants rotate), so the machine's drift hits each
alike; bf16 variants run the forward pass under torch.autocast, as a plain script would. Prints
targets/s of each variant and its ratio to the plain fp32 step.
"""
from __future__ import annotations

import argparse
import itertools
import time

from timing import cpu_trainer  # a sibling: this folder is on sys.path


def plain_vae(vocab: int, m):
    """The plain LSTM-VAE (the standard decoder) at textsvae's ModelConfig m."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class PlainVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc_embed, self.dec_embed = nn.Embedding(vocab, m.emb_dim), nn.Embedding(vocab, m.emb_dim)
            self.encoder = nn.LSTM(m.emb_dim, m.enc_hidden, batch_first=True)
            self.to_params = nn.Linear(m.enc_hidden, 2 * m.latent_dim)
            self.init_state = nn.Linear(m.latent_dim, m.dec_hidden, bias=False)
            self.decoder = nn.LSTM(m.emb_dim + m.latent_dim, m.dec_hidden, batch_first=True)
            self.drop_in, self.drop_out = nn.Dropout(m.dropout_in), nn.Dropout(m.dropout_out)
            self.out = nn.Linear(m.dec_hidden, vocab)
            for p in self.parameters():
                nn.init.uniform_(p, -0.01, 0.01)

        def forward(self, tokens, lengths):
            out, _ = self.encoder(self.enc_embed(tokens))
            mu, logvar = self.to_params(out[torch.arange(tokens.size(0)), lengths - 1]).chunk(2, -1)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            inputs, targets = tokens[:, :-1], tokens[:, 1:]
            x = self.drop_in(self.dec_embed(inputs))
            x = torch.cat([x, z.unsqueeze(1).expand(-1, x.size(1), -1)], -1)
            c0 = self.init_state(z).unsqueeze(0)
            h, _ = self.decoder(x, (c0.tanh(), c0))
            logits = self.out(self.drop_out(h))
            mask = torch.arange(targets.size(1))[None, :] < (lengths - 1)[:, None]
            rec = F.cross_entropy(logits[mask].float(), targets[mask], reduction="sum")
            kl = 0.5 * (mu.float() ** 2 + logvar.float().exp() - logvar.float() - 1).sum()
            return (rec + kl) / tokens.size(0)

    return PlainVAE()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ptb")
    p.add_argument("--data", default="ptb", help="a corpus folder or an installed corpus name")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=60, help="timed steps of each variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precisions", default="fp32,bf16")
    args = p.parse_args()
    if min(args.threads, args.steps) < 1 or args.warmup < 0:
        p.error("--threads and --steps must be >= 1, --warmup >= 0")
    precisions = args.precisions.split(",")
    if set(precisions) - {"fp32", "bf16"}:
        p.error("--precisions: a comma-separated list of fp32 and bf16")

    import torch

    variants = {}
    for precision in precisions:
        trainer, cfg = cpu_trainer("plain_reference.py", args.preset, args.data, args.threads, "standard", precision)
        model = plain_vae(len(trainer.corpus.vocab), cfg.model)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr)
        dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]

        def plain(batch, model=model, optimizer=optimizer, dtype=dtype, clip=cfg.train.clip_grad):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = model(batch.tokens, batch.lengths)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()

        variants[f"plain PyTorch, {precision}"] = plain
        variants[f"textsvae, {precision}"] = lambda batch, trainer=trainer: trainer.method.train_step(trainer, batch, 1.0)
    torch.set_num_threads(args.threads)
    batches = itertools.chain.from_iterable(map(trainer.train_batches, itertools.count()))
    names = list(variants)
    for _ in range(args.warmup):
        batch = next(batches)
        for name in names:
            variants[name](batch)
    seconds, targets = dict.fromkeys(names, 0.0), 0
    for step in range(args.steps):
        batch = next(batches)
        targets += batch.n_targets
        for name in names[step % len(names):] + names[: step % len(names)]:
            began = time.perf_counter()
            variants[name](batch)
            seconds[name] += time.perf_counter() - began
    base = seconds[names[0]]
    print(f"{args.preset} preset, standard decoder, {args.threads} threads, {args.steps} steps each, "
          f"torch {torch.__version__}")
    print("| variant | targets/s | vs plain PyTorch, " + precisions[0] + " |")
    print("|---|---:|---:|")
    for name in names:
        print(f"| {name} | {targets / seconds[name]:,.0f} | {base / seconds[name]:.2f}x |")


if __name__ == "__main__":
    main()
