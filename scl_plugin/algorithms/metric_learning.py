"""Metric learning over class labels: triplet (semi-hard, Schroff et al. 2015) or N-pair (Sohn 2016).

Batches are PK-sampled (P classes x K images, ``embed.pk_classes`` x ``embed.pk_images``, see
:class:`scl_plugin.training.PKBatches`); every anchor-positive pair of the batch is used
(batch-all) with the loss's own negatives rule (:mod:`scl_plugin.losses.metric_learning`).
The embedding is the projection head on the pooled features; evaluation uses the backbone's
pooled features, like every pretrained method::

    method = MetricLearning(backbone, loss="triplet", margin=0.2)
    loss, metrics = method.loss((images, labels))            # images: P*K, labels: P classes
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..losses import ProjectionHead, npair_loss, triplet_semihard_loss
from .learners import EmbeddingMethod

LOSSES = ("triplet", "npair")


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

    def loss(self, batch: Any) -> Tuple[torch.Tensor, Dict[str, Any]]:
        x, y = batch
        z = self.head(self.backbone(x))
        if self.kind == "triplet":
            loss = triplet_semihard_loss(z, y, self.margin)
        else:
            loss = npair_loss(z, y, self.l2)
        return loss, {"loss": loss.detach()}
