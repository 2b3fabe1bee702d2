"""SimCLR (Chen et al., ICML 2020): NT-Xent between two augmented views, no labels.

This is SCL's global contrastive loss with self-supervised keys and no CE term, on the same
projection head; use it with ``data.augment=simclr``::

    method = SimCLR(backbone, proj_dim=128, temperature=0.5)
    loss, metrics = method.loss(((view1, view2), labels))   # labels are ignored
    learner = method.adapt(support_x, support_y)            # logistic regression on features

With ``gather=True`` (several processes) every anchor is contrasted with the global batch.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..distributed import rank
from ..losses import ProjectionHead, nt_xent_loss
from .learners import EmbeddingMethod


class SimCLR(EmbeddingMethod):
    needs_two_views = True

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, temperature: float = 0.5, gather: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(backbone.feature_dim, proj_dim)
        self.temperature, self.gather = temperature, gather

    def loss(self, batch: Any) -> Tuple[torch.Tensor, Dict[str, Any]]:
        (x1, x2), _ = batch
        z = self.head(self.backbone(torch.cat([x1, x2])))
        loss = nt_xent_loss(z, self.temperature, gather=self.gather, offset=rank() * x1.shape[0])
        return loss, {"loss": loss.detach()}
