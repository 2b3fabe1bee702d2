"""Metric learning over class labels: triplet (semi-hard, Schroff et al. 2015) or N-pair (Sohn 2016).

Batches are PK-sampled (P classes x K images, ``embed.pk_classes`` x ``embed.pk_images``, see
:class:`scl_plugin.training.PKBatches`); every anchor-positive pair of the batch is used
(batch-all) with the loss's own negatives rule (:mod:`scl_plugin.losses.metric_learning`).
The embedding is the projection head on the pooled features; evaluation uses the backbone's
pooled features, like every pretrained method. Registered as ``triplet`` and ``npair``.

Example::

    >>> import torch
    >>> from scl_plugin.backbones import create_backbone
    >>> method = MetricLearning(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), loss="triplet",
    ...                         proj_dim=16, margin=0.2)
    >>> images, labels = torch.randn(8, 1, 28, 28), torch.arange(4).repeat_interleave(2)   # P=4 classes x K=2
    >>> loss, metrics = method.loss((images, labels))
    >>> loss.ndim
    0
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..losses import ProjectionHead, npair_loss, triplet_semihard_loss
from ..registry import register_method
from .base import EmbeddingMethod

LOSSES = ("triplet", "npair")


@register_method("npair", batches="pk", classifier="logreg", loss="npair")
@register_method("triplet", batches="pk", classifier="logreg", loss="triplet")
class MetricLearning(EmbeddingMethod):
    pk_batches = True

    def __init__(self, backbone: nn.Module, loss: str = "triplet", proj_dim: int = 128, margin: float = 0.2,
                 l2: float = 0.002):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.backbone = backbone
        self.head = ProjectionHead(backbone.feature_dim, proj_dim)
        self.kind, self.margin, self.l2 = loss, margin, l2

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, loss: str = "triplet", **options):
        m = cfg.embed
        return cls(backbone, loss, m.proj_dim, m.margin, m.npair_l2, **options)

    def loss(self, batch: Any) -> Tuple[torch.Tensor, Dict[str, Any]]:
        x, y = batch
        z = self.head(self.backbone(x))
        if self.kind == "triplet":
            loss = triplet_semihard_loss(z, y, self.margin)
        else:
            loss = npair_loss(z, y, self.l2)
        return loss, {"loss": loss.detach()}
