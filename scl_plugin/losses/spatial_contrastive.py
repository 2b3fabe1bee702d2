"""Spatial contrastive (SC) loss: attention-aligned spatial similarity + supervised contrast.

For spatial maps ``f_a`` (HW x d) the attention module projects queries, keys and values
``q_a, k_a, v_a`` (HW x d', MLPs d -> d -> d'). B's values aligned to A's positions are

    v_{b|a} = softmax(q_a k_b^T / sqrt(d')) v_b                       (HW x d')
    sim(a, b | a) = agg_i cos(v_a[i], v_{b|a}[i])          agg in {mean, sum, max}
    S_ab = sim(a, b | a) + sim(b, a | b)                                (symmetric)
    L_SC = supcon(S, keys, tau_spatial)       (see :mod:`scl_plugin.losses.contrastive`)

(for ``max`` each direction is aggregated before the sum, so ``S`` stays symmetric).

Memory: the naive form materialises A*M*HW*HW attention weights (and A*M*HW*d' aligned
values) for autograd. Here anchors are processed in chunks whose intermediates are freed
after the forward and recomputed in the backward (``torch.utils.checkpoint``), so the peak
grows like A*M (the similarity) plus one chunk. Inside a chunk the aligned values are never
formed: with ``W = softmax(...)`` (HW x HW), ``G = v̂_a v_b^T`` and the Gram ``K_b = v_b v_b^T``,

    <v̂_a[i], v_{b|a}[i]> = sum_j W_ij G_ij,      ||v_{b|a}[i]||^2 = W_i K_b W_i^T,

which costs HW x HW per pair instead of HW x d'. When anchors and contrast set are the
same tensors ``S = T + T^T`` with ``T_ab = sim(a, b | a)``, so only one direction is computed.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .. import distributed as D
from .contrastive import in_fp32, supcon_from_similarity
from .global_contrastive import ProjectionHead

__all__ = ["SpatialAttention", "spatial_contrastive_loss", "auto_chunk_size", "AGGREGATIONS"]

AGGREGATIONS = ("mean", "sum", "max")
CHUNK_BYTES = 32 * 2**20   # automatic chunk: one (chunk x HW x M x HW) tensor <= 32 MiB


def auto_chunk_size(n_contrast: int, hw_query: int, hw_key: int, element_size: int = 4,
                    budget_bytes: int = CHUNK_BYTES) -> int:
    """Largest anchor chunk whose attention tensor (chunk*HW*M*HW elements) fits the budget."""
    per_anchor = hw_query * n_contrast * hw_key * element_size
    return max(1, budget_bytes // max(1, per_anchor))


def _directional_chunk(q, vhat, k, v, gram, scale: float, aggregation: str):
    """T[a, m] = agg_i cos(v_a[i], (softmax(q_a k_m^T * scale) v_m)[i]) for a chunk of anchors.

    Works in layout (M, HW_k, c*HW_q) so that both products with the contrast set are single
    GEMMs and every reduction is over dim 1.
    """
    c, P, dp = q.shape
    M, Pk = k.shape[:2]
    logits = (k.reshape(M * Pk, dp) @ (q.reshape(c * P, dp) * scale).t()).view(M, Pk, c * P)
    att = torch.softmax(logits, dim=1)
    G = (v.reshape(M * Pk, dp) @ vhat.reshape(c * P, dp).t()).view(M, Pk, c * P)
    num = (att * G).sum(1)                                   # <v̂_a[i], v_{m|a}[i]>
    sq = (torch.bmm(gram, att) * att).sum(1)                 # ||v_{m|a}[i]||^2
    cos = (num * torch.rsqrt(sq.clamp_min(1e-24))).view(M, c, P)
    if aggregation == "mean":
        t = cos.mean(-1)
    elif aggregation == "sum":
        t = cos.sum(-1)
    else:
        t = cos.amax(-1)
    return t.t()                                             # (c, M)


def _directional(q, vhat, k, v, gram, aggregation: str, chunk_size: int) -> torch.Tensor:
    A, P, dp = q.shape
    scale = 1.0 / math.sqrt(dp)
    if chunk_size <= 0:
        chunk_size = auto_chunk_size(k.shape[0], P, k.shape[1], q.element_size())
    fn = functools.partial(_directional_chunk, scale=scale, aggregation=aggregation)
    if chunk_size >= A:
        return fn(q, vhat, k, v, gram)
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (q, vhat, k, v, gram))
    rows = []
    for s in range(0, A, chunk_size):
        args = (q[s:s + chunk_size], vhat[s:s + chunk_size], k, v, gram)
        rows.append(checkpoint(fn, *args, use_reentrant=False) if recompute else fn(*args))
    return torch.cat(rows, 0)


class SpatialAttention(nn.Module):
    """Query/key/value projectors and the attention-aligned pairwise spatial similarity."""

    def __init__(self, in_dim: int, proj_dim: int = 80, aggregation: str = "mean"):
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.proj_dim = proj_dim
        self.aggregation = aggregation
        self.query = ProjectionHead(in_dim, proj_dim)
        self.key = ProjectionHead(in_dim, proj_dim)
        self.value = ProjectionHead(in_dim, proj_dim)

    def project(self, feats: torch.Tensor):
        """(B, d, H, W) -> q, k, v each (B, HW, d')."""
        x = feats.flatten(2).transpose(1, 2)
        return self.query(x), self.key(x), self.value(x)

    @in_fp32    # attention softmax and cosine similarities in float32 under autocast (mixed precision)
    def pairwise_similarity(self, qa, ka, va, qb, kb, vb, chunk_size: int = 0) -> torch.Tensor:
        """S (A, M) with S_ab = sim(a, b | a) + sim(b, a | b); chunk_size 0 = automatic.

        If ``(qa, ka, va)`` are the very same tensors as ``(qb, kb, vb)`` only one direction is
        computed (``S = T + T^T``); otherwise both directions are.
        """
        agg = self.aggregation
        vhat_b = F.normalize(vb, dim=-1)
        gram_b = torch.bmm(vb, vb.transpose(1, 2))
        if qa is qb and ka is kb and va is vb:
            t = _directional(qb, vhat_b, kb, vb, gram_b, agg, chunk_size)
            return t + t.t()
        vhat_a = F.normalize(va, dim=-1)
        gram_a = torch.bmm(va, va.transpose(1, 2))
        t_ab = _directional(qa, vhat_a, kb, vb, gram_b, agg, chunk_size)   # sim(a, b | a)
        t_ba = _directional(qb, vhat_b, ka, va, gram_a, agg, chunk_size)   # sim(b, a | b)
        return t_ab + t_ba.t()

    def forward(self, feats_a: torch.Tensor, feats_b=None, chunk_size: int = 0) -> torch.Tensor:
        qa, ka, va = self.project(feats_a)
        if feats_b is None:
            return self.pairwise_similarity(qa, ka, va, qa, ka, va, chunk_size)
        return self.pairwise_similarity(qa, ka, va, *self.project(feats_b), chunk_size=chunk_size)


def spatial_contrastive_loss(spatial_feats: torch.Tensor, keys: torch.Tensor,
                             attention: SpatialAttention, tau: float, *, chunk_size: int = 0,
                             gather: bool = False) -> torch.Tensor:
    """SC loss of spatial maps (M, d, H, W) with integer ``keys`` (M,).

    ``gather=True``: q, k, v of all processes are gathered with gradient; local samples are
    anchors against the global set (anchor ``a`` of rank ``r`` is column ``r*M + a``).
    """
    q, k, v = attention.project(spatial_feats)
    M = q.shape[0]
    index = torch.arange(M, device=q.device)
    if gather and D.world_size() > 1:
        dp = q.shape[-1]
        qb, kb, vb = D.all_gather_with_grad(torch.cat([q, k, v], -1)).split(dp, dim=-1)
        keys_all = D.all_gather(keys.to(q.device))
        sim = attention.pairwise_similarity(q, k, v, qb, kb, vb, chunk_size)
        index = index + D.rank() * M
    else:
        keys_all = keys
        sim = attention.pairwise_similarity(q, k, v, q, k, v, chunk_size)
    return supcon_from_similarity(sim, keys, keys_all, index, tau)
