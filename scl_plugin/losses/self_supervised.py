"""Losses of the self-supervised baselines: SimCLR's NT-Xent, MoCo's InfoNCE with a queue, BYOL's regression.

    NT-Xent (Chen et al. 2020):   the global contrastive loss with self-supervised keys (the other
                                   view of the same image is the only positive), no CE term;
    InfoNCE (He et al. 2020):      l = -log exp(q.k+/tau) / (exp(q.k+/tau) + sum_{k- in queue} exp(q.k-/tau));
    BYOL (Grill et al. 2020):      l = || p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)  (z: target, no gradient).

NT-Xent reuses :func:`global_contrastive_loss` (and so its cross-process gathering); the other
two are a few lines each (no maintained library ships them as plain functions on tensors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .contrastive import make_keys
from .global_contrastive import global_contrastive_loss

__all__ = ["nt_xent_loss", "infonce_queue_loss", "byol_loss"]


def nt_xent_loss(z: torch.Tensor, tau: float, *, gather: bool = False, offset: int = 0) -> torch.Tensor:
    """NT-Xent of projections ``z`` (2B, d') stacked view-major ``[view1; view2]``.

    ``offset``: index of this process's first image in the global batch when gathering
    (``rank * B``), so that image ids are globally unique.
    """
    n = z.shape[0] // 2
    keys = make_keys(torch.empty(n, device=z.device), "selfsup", n_views=2, offset=offset)
    return global_contrastive_loss(z, keys, tau, gather=gather)


def infonce_queue_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo's InfoNCE: queries ``q`` (B, d'), positive keys ``k`` (B, d'), negatives ``queue`` (K, d').

    ``q`` and ``k`` are L2-normalised here; ``queue`` rows are expected unit-norm already. Keys
    and queue carry no gradient.
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ queue.detach().t()
    logits = torch.cat([l_pos, l_neg], 1) / tau
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean of ``2 - 2 cos(p_i, z_i)`` (normalised MSE); the target ``z`` is detached."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()
