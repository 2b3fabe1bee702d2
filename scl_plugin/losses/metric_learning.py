"""Metric-learning losses over class labels inside a PK batch (P classes x K images).

Triplet loss with semi-hard negatives (Schroff et al., FaceNet, 2015), batch-all over every
anchor-positive pair, on squared Euclidean distances of L2-normalised embeddings::

    n*(a, p) = argmin_{n: y_n != y_a, d_an > d_ap} d_an     (semi-hard; if none: argmax_n d_an)
    L = mean_{(a, p): y_a = y_p, a != p} max(0, d_ap - d_an* + margin)

(the rule of TensorFlow Addons' ``triplet_semihard_loss``). N-pair loss (Sohn, NeurIPS 2016),
batch-all: every anchor-positive pair against every sample of another class, on raw
embeddings with an L2 penalty::

    L = mean_{(a, p)} log(1 + sum_{n: y_n != y_a} exp(f_a.f_n - f_a.f_p)) + l2 * mean_i ||f_i||^2

Both are vectorised; tests compare them with explicit loops. (pytorch-metric-learning has
both, but it is a large dependency for two functions of ten lines.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["triplet_semihard_loss", "npair_loss"]


def _pairs(labels: torch.Tensor):
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(labels.numel(), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def triplet_semihard_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Semi-hard triplet loss of embeddings ``emb`` (B, d) with class ``labels`` (B,)."""
    z = F.normalize(emb, dim=1)
    d = (2 - 2 * z @ z.t()).clamp_min(0)
    pos, neg = _pairs(labels.to(emb.device))
    d_ap, d_an = d.unsqueeze(2), d.unsqueeze(1)                   # (a, p, 1), (a, 1, n)
    semi = neg.unsqueeze(1) & (d_an > d_ap)                       # (a, p, n)
    big = torch.finfo(d.dtype).max
    semi_min = torch.where(semi, d_an, torch.full_like(d_an, big)).amin(2)
    hardest = torch.where(neg, d, torch.full_like(d, -big)).amax(1, keepdim=True).expand_as(d)
    chosen = torch.where(semi.any(2), semi_min, hardest)
    losses = F.relu(d - chosen + margin)[pos]
    return losses.mean() if losses.numel() else emb.sum() * 0


def npair_loss(emb: torch.Tensor, labels: torch.Tensor, l2: float = 0.002) -> torch.Tensor:
    """Batch-all multi-class N-pair loss of embeddings ``emb`` (B, d) with class ``labels`` (B,)."""
    s = emb @ emb.t()
    pos, neg = _pairs(labels.to(emb.device))
    neg_lse = torch.where(neg, s, torch.full_like(s, float("-inf"))).logsumexp(1, keepdim=True)   # (a, 1)
    losses = F.softplus(neg_lse - s)[pos]          # log(1 + sum_n exp(s_an - s_ap))
    reg = l2 * emb.pow(2).sum(1).mean()
    return (losses.mean() if losses.numel() else emb.sum() * 0) + reg
