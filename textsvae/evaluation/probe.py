"""A linear probe: how much of a known label (the synthetic corpus's topic) a model's z recovers.

A multinomial logistic regression q(y|z) is fitted on the training split and scored on the test
split. Its test cross-entropy CE gives the Barber & Agakov (2003) variational lower bound

    I(z; y) >= H(y) - E[-log q(y|z)] = H(y) - CE,

in nats, where H(y) is the (plug-in) entropy of the test labels; the bound is at most
H(y) <= log K. Features are either posterior means mu(x) or samples z ~ q(z|x): a collapsed
encoder can keep the label in tiny variations of mu that the noise of z drowns, so only the
sampled-z probe bounds the information that z itself carries.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float          # test accuracy of argmax q(y|z)
    cross_entropy: float     # test E[-log q(y|z)] in nats
    label_entropy: float     # H(y) of the test labels in nats (plug-in)
    mi_lower_bound: float    # H(y) - CE: a lower bound on I(z; y) in nats (can be < 0 for a useless probe)
    log_k: float             # log K, the ceiling of I(z; y) for K classes
    n_train: int
    n_test: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def label_entropy(y: torch.Tensor, n_classes: int) -> float:
    """H(y) = -sum_k p_k log p_k of the empirical label distribution, in nats."""
    p = torch.bincount(y, minlength=n_classes).double() / len(y)
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def fit_probe(train_x: torch.Tensor, train_y: Sequence, test_x: torch.Tensor, test_y: Sequence,
              weight_decay: float = 1e-4, max_iter: int = 200) -> ProbeResult:
    """Fit softmax(W x + b) on train by L-BFGS (L2 penalty on W), score on test."""
    classes = sorted(set(train_y) | set(test_y), key=str)
    index = {c: i for i, c in enumerate(classes)}
    ytr = torch.tensor([index[c] for c in train_y], dtype=torch.long)
    yte = torch.tensor([index[c] for c in test_y], dtype=torch.long)
    xtr, xte = train_x.detach().double().cpu(), test_x.detach().double().cpu()
    k, d = len(classes), xtr.size(1)
    weight = torch.zeros(k, d, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ weight.T + bias, ytr) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logits = xte @ weight.T + bias                                # (N_test, K)
        ce = float(F.cross_entropy(logits, yte))
        acc = float((logits.argmax(-1) == yte).double().mean())
    h = label_entropy(yte, k)
    return ProbeResult(accuracy=acc, cross_entropy=ce, label_entropy=h, mi_lower_bound=h - ce,
                       log_k=math.log(k), n_train=len(ytr), n_test=len(yte))


PROBE_SPLITS = ("train", "test")


def probe_loaded(model, method, config, corpus, device, seed: int = 12345) -> dict[str, float] | None:
    """{probe_*} metrics on test of a loaded run whose corpus holds train and test, or None without labels/z.

    probe_acc, probe_mi: features z ~ q(z|x) (one sample, fixed seed); probe_acc_mu, probe_mi_mu:
    features mu(x); probe_h: H(y); probe_log_k: log K.
    """
    from ..kernels.metrics import sample_diag_gaussian
    from .scoring import encode_ids

    if model.is_lm:
        return None
    train_labels, test_labels = corpus.labels.get("train") or [], corpus.labels.get("test") or []
    if not train_labels or any(label is None for label in list(train_labels) + list(test_labels)):
        return None
    generator = torch.Generator().manual_seed(seed)
    features = {}
    for split in PROBE_SPLITS:
        mu, logvar = encode_ids(model, method, corpus.splits[split], config.eval, device)
        mu, logvar = mu.detach().double().cpu(), logvar.detach().double().cpu()
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        features[split] = {"mu": mu, "z": sample_diag_gaussian(mu, logvar, eps)}
    out: dict[str, float] = {}
    for kind, suffix in (("z", ""), ("mu", "_mu")):
        r = fit_probe(features["train"][kind], train_labels, features["test"][kind], test_labels)
        out[f"probe_acc{suffix}"] = r.accuracy
        out[f"probe_mi{suffix}"] = r.mi_lower_bound
        out["probe_h"], out["probe_log_k"], out["probe_n"] = r.label_entropy, r.log_k, r.n_test
    return out
