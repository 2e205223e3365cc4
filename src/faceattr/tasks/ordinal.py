"""Task losses as small pure functions with shape checks; a label of -1 (missing) contributes nothing.

Each returns the mean loss over the samples that have a label (0 with a zero gradient when none has),
and the number of those samples.

Ordinal labels may be *interval-censored*: ``upper`` (same shape as ``labels``) gives the highest level the
sample may have, ``labels`` the lowest (e.g. a FairFace group "20-29" on a model of exact ages 1..116 is
levels 19..28). Of the K-1 sub-problems "is the level > k?" those with k < lower are known yes, those with
k >= upper are known no, the ones in between are unknown and left out of the loss. ``upper=None`` (or
``upper == labels``) is the usual exact label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceattr.tasks.labels import MISSING


def _check(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be N x C, got shape {tuple(logits.shape)}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be (N,) with N={logits.shape[0]}, got shape {tuple(labels.shape)}")


def levels_from_labels(labels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Binary targets (N x K-1): target[i, k] = 1 if label_i > k ("is the level above threshold k?")."""
    k = torch.arange(num_levels - 1, device=labels.device)
    return (labels[:, None] > k[None, :]).to(torch.float32)


def _interval(
    logits: torch.Tensor, labels: torch.Tensor, upper: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mask of labelled samples, their lower levels, their upper levels), checked against K = C+1 levels."""
    _check(logits, labels)
    if upper is None:
        upper = labels
    elif upper.shape != labels.shape:
        raise ValueError(f"upper must have the shape of labels {tuple(labels.shape)}, got {tuple(upper.shape)}")
    mask = labels != MISSING
    lo, hi = labels[mask], torch.where(upper[mask] == MISSING, labels[mask], upper[mask])
    if len(lo) and (int(lo.min()) < 0 or int(hi.max()) > logits.shape[1] or bool((hi < lo).any())):
        raise ValueError(f"ordinal label out of range for {logits.shape[1] + 1} levels (or upper < lower)")
    return mask, lo, hi


def ordinal_binary_loss(
    logits: torch.Tensor, labels: torch.Tensor, upper: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Masked binary cross-entropy over the K-1 "y > k" sub-problems, summed over k, averaged over samples.

    This is the loss of CORAL (Cao, Mirjalili & Raschka, "Rank consistent ordinal regression for neural
    networks", Pattern Recognition Letters 2020, eq. 4, unit task weights) and of OR-CNN (Niu et al., CVPR 2016).
    ``logits``: N x (K-1); ``labels``: N level indices in [0, K-1] or -1; ``upper``: optional upper levels of
    interval-censored labels (the sub-problems inside the interval are unknown and do not count).
    """
    mask, lo, hi = _interval(logits, labels, upper)
    k = torch.arange(logits.shape[1], device=logits.device)[None, :]
    known = (lo[:, None] > k) | (hi[:, None] <= k)
    has = known.any(1)  # an interval spanning every level says nothing
    n = int(has.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    target = levels_from_labels(lo, logits.shape[1] + 1)
    bce = F.binary_cross_entropy_with_logits(logits[mask].float(), target, reduction="none")
    per = (bce * known).sum(1)[has]
    return per.mean(), n


def corn_loss(
    logits: torch.Tensor, labels: torch.Tensor, upper: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """CORN's negative log-likelihood (Shi, Cao & Raschka, arXiv 2111.08851): ``logits[:, k]`` is the logit of
    P(y > k | y > k-1), so P(y >= j) = prod_{k < j} p_k and P(y = j) = P(y >= j) (1 - p_j).

    For a label interval [lo, hi] (exact: lo = hi) the likelihood is P(lo <= y <= hi) = prod_{k < lo} p_k *
    (1 - prod_{k=lo}^{hi} p_k), the second factor being 1 when hi is the top level. Summed over the conditional
    sub-problems of a sample and averaged over samples, as :func:`ordinal_binary_loss` is (coral-pytorch's
    ``corn_loss`` instead divides by the number of (sample, sub-problem) pairs: a constant factor per batch).
    For an exact label this is exactly the sum of the binary cross-entropies of the conditional training subsets
    (sub-problem k sees the samples with y > k-1, target y > k).
    """
    mask, lo, hi = _interval(logits, labels, upper)
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    lg = logits[mask].float()
    k = torch.arange(lg.shape[1], device=lg.device)[None, :]
    ls = F.logsigmoid(lg)
    below = (ls * (k < lo[:, None])).sum(1)  # log P(y >= lo)
    inside = (ls * ((k >= lo[:, None]) & (k <= hi[:, None]))).sum(1)  # log prod_{k=lo..hi} p_k
    top = hi >= lg.shape[1]  # interval reaches the top level: no second factor
    # log(1 - exp(s)) for s <= 0, stably (log1mexp)
    s = inside.clamp(max=-1e-7)
    log1mexp = torch.where(s > -0.6931, torch.log(-torch.expm1(s)), torch.log1p(-torch.exp(s)))
    nll = -(below + torch.where(top, torch.zeros_like(log1mexp), log1mexp))
    return nll.mean(), n


def interval_cross_entropy_loss(
    logits: torch.Tensor, labels: torch.Tensor, upper: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Softmax over K levels with an interval label: -log P(lower <= y <= upper) (cross-entropy when exact)."""
    if upper is None:
        return cross_entropy_loss(logits, labels)
    _check(logits, labels)
    mask, lo, hi = _interval(logits[:, 1:], labels, upper)  # K class logits: the same range check as K-1 thresholds
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    lg = logits[mask].float()
    k = torch.arange(logits.shape[1], device=logits.device)[None, :]
    inside = (k >= lo[:, None]) & (k <= hi[:, None])
    log_in = torch.logsumexp(lg.masked_fill(~inside, float("-inf")), 1)
    return (torch.logsumexp(lg, 1) - log_in).mean(), n


def cross_entropy_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, int]:
    """Masked softmax cross-entropy (nominal tasks, and the softmax formulation of ordinal ones)."""
    _check(logits, labels)
    mask = labels != MISSING
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits[mask].float(), labels[mask], label_smoothing=label_smoothing), n


def l1_index_loss(
    pred: torch.Tensor, labels: torch.Tensor, upper: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Masked L1 between a scalar prediction (N x 1) and the level index (plain regression baseline).
    An interval label costs the distance to the interval (0 inside it)."""
    _check(pred, labels)
    if pred.shape[1] != 1:
        raise ValueError(f"regression output must be N x 1, got {tuple(pred.shape)}")
    upper = labels if upper is None else torch.where(upper == MISSING, labels, upper)
    mask = labels != MISSING
    n = int(mask.sum())
    if n == 0:
        return pred.sum() * 0.0, 0
    p, lo, hi = pred[mask, 0].float(), labels[mask].float(), upper[mask].float()
    return (F.relu(lo - p) + F.relu(p - hi)).mean(), n  # |p - y| when the interval is [y, y]
