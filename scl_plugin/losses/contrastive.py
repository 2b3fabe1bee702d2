"""Supervised-contrastive core shared by the global and the spatial contrastive losses.

Given similarities ``S`` (A anchors x M contrast samples), a temperature ``tau``, integer keys
(positives share a key) and, for every anchor, its own column ``i(a)`` in the contrast set::

    P(a)   = {p != i(a) : key(p) == key(a)}
    l(a)   = -1/|P(a)| * sum_{p in P(a)} [ S_ap/tau - log sum_{m != i(a)} exp(S_am/tau) ]
    L      = 1/A * sum_a l(a)          (anchors with P(a) empty contribute 0)

(Khosla et al., 2020). Keys unify both kinds of positives: class labels give the supervised
loss, image indices (the same index for the views of one image) the self-supervised one.

Normalisation: the mean is over *all* anchors, an anchor without positives counting 0
(as the SCL authors' code). With two views every anchor has a positive, so this equals the
mean over anchors with positives; the convention also makes the average of per-rank losses
equal the loss of the global batch exactly (equal per-rank batch sizes) in distributed runs.
"""
from __future__ import annotations

import functools

import torch

__all__ = ["supcon_from_similarity", "make_keys", "in_fp32"]


_LOW = (torch.float16, torch.bfloat16)


def in_fp32(fn):
    """Decorator: run ``fn`` with autocast off and its fp16/bf16 tensor arguments in float32
    (float32 and float64 arguments are left as they are).

    Mixed precision (``train.mixed_precision=bf16|fp16``) keeps the backbone and the projection
    MLPs in low precision but the contrastive similarities, their softmax and logsumexp in
    float32: bf16 has 8 bits of mantissa, and ``exp(s / tau)`` with ``tau = 0.1`` turns a
    similarity error of 4e-3 into a 4% error of a logit's weight. Gradients flow back in the
    callers' dtype. (Autocast has no per-op "keep fp32" list for matmul, hence this wrapper.)
    An argument passed twice stays one tensor (callers test identity, e.g. ``qa is qb``).
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        cast = {}
        args = [cast.setdefault(id(a), a.float()) if isinstance(a, torch.Tensor) and a.dtype in _LOW else a
                for a in args]
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)
    return wrapper


@in_fp32
def supcon_from_similarity(sim: torch.Tensor, anchor_keys: torch.Tensor,
                           contrast_keys: torch.Tensor, anchor_index: torch.Tensor,
                           tau: float) -> torch.Tensor:
    """Supervised contrastive loss from a similarity matrix; see the module docstring.

    sim: (A, M); anchor_keys: (A,); contrast_keys: (M,); anchor_index: (A,) long, the column
    of each anchor itself in ``sim`` (excluded from numerator and denominator).
    """
    A, M = sim.shape
    idx = anchor_index.to(sim.device, torch.long).view(A, 1)
    self_mask = torch.zeros(A, M, dtype=torch.bool, device=sim.device).scatter_(1, idx, True)
    logits = (sim / tau).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (anchor_keys.view(A, 1).to(sim.device) == contrast_keys.view(1, M).to(sim.device))
    pos = pos & ~self_mask
    n_pos = pos.sum(1)
    pos_log_prob = torch.where(pos, log_prob, torch.zeros((), dtype=sim.dtype, device=sim.device))
    per_anchor = -pos_log_prob.sum(1) / n_pos.clamp(min=1).to(sim.dtype)
    return per_anchor.mean()


def make_keys(labels: torch.Tensor, mode: str, n_views: int = 2, offset: int = 0) -> torch.Tensor:
    """Keys for ``n_views`` views stacked view-major (``torch.cat([view_1, ..., view_k])``).

    ``mode="supervised"``: the class labels; ``"selfsup"``: the image index ``offset + i``.
    With gathering across processes pass ``offset = rank * len(labels)`` for ``selfsup`` so
    that image indices are globally unique.
    """
    if mode == "supervised":
        base = labels
    elif mode == "selfsup":
        base = torch.arange(labels.shape[0], device=labels.device) + offset
    else:
        raise ValueError(f"mode must be 'supervised' or 'selfsup', got {mode!r}")
    return base.repeat(n_views)
