"""Global contrastive (GC) loss on projected pooled features.

    z_i = g(mean_hw f_i),     g: Linear(d, d) -> ReLU -> Linear(d, d')   (no biases)
    S_ij = <z_i/||z_i||, z_j/||z_j||>
    L_GC = supcon(S, keys, tau)              (see :mod:`scl_plugin.losses.contrastive`)

With ``gather=True`` the normalised projections and keys of all processes are gathered
(:func:`scl_plugin.distributed.all_gather_with_grad`); the local samples are the anchors and
the global batch is the contrast set, anchor ``a`` of rank ``r`` sitting at column
``r*M + a``. Self-supervised keys must then be globally unique (see ``make_keys``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed as D
from .contrastive import in_fp32, supcon_from_similarity

__all__ = ["ProjectionHead", "global_contrastive_loss"]


class ProjectionHead(nn.Sequential):
    """MLP ``d -> d -> d'`` without biases and with a ReLU in between (the SCL projector)."""

    def __init__(self, in_dim: int, proj_dim: int = 80):
        super().__init__(nn.Linear(in_dim, in_dim, bias=False), nn.ReLU(),
                         nn.Linear(in_dim, proj_dim, bias=False))


@in_fp32        # normalisation and similarities in float32 under autocast
def global_contrastive_loss(z: torch.Tensor, keys: torch.Tensor, tau: float, *,
                            gather: bool = False) -> torch.Tensor:
    """GC loss of projected features ``z`` (M, d') with integer ``keys`` (M,)."""
    z = F.normalize(z, dim=1)
    M = z.shape[0]
    index = torch.arange(M, device=z.device)
    z_all, keys_all = z, keys
    if gather and D.world_size() > 1:
        z_all = D.all_gather_with_grad(z)
        keys_all = D.all_gather(keys.to(z.device))
        index = index + D.rank() * M
    return supcon_from_similarity(z @ z_all.t(), keys, keys_all, index, tau)
