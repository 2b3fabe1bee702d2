"""SimCLR (Chen et al., ICML 2020): NT-Xent between two augmented views, no labels.

This is SCL's global contrastive loss with self-supervised keys and no CE term, on the same
projection head; use it with ``data.augment=simclr``. With ``gather=True`` (several processes)
every anchor is contrasted with the global batch.

Example::

    >>> import torch
    >>> from scl_plugin.backbones import create_backbone
    >>> method = SimCLR(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), proj_dim=16, temperature=0.5)
    >>> views, labels = (torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)), torch.arange(4)
    >>> loss, metrics = method.loss((views, labels))          # labels are ignored
    >>> learner = method.adapt(torch.randn(4, 1, 28, 28), torch.tensor([0, 0, 1, 1]))   # logistic regression
    >>> learner(torch.randn(3, 1, 28, 28)).shape
    torch.Size([3, 2])
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..distributed import rank
from ..losses import ProjectionHead, nt_xent_loss
from ..registry import register_method
from .base import EmbeddingMethod


@register_method("simclr", batches="flat", classifier="logreg")
class SimCLR(EmbeddingMethod):
    needs_two_views = True

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, temperature: float = 0.5, gather: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(backbone.feature_dim, proj_dim)
        self.temperature, self.gather = temperature, gather

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, **options):
        m = cfg.embed
        return cls(backbone, m.proj_dim, m.temperature, gather=gather, **options)

    def loss(self, batch: Any) -> Tuple[torch.Tensor, Dict[str, Any]]:
        (x1, x2), _ = batch
        z = self.head(self.backbone(torch.cat([x1, x2])))
        loss = nt_xent_loss(z, self.temperature, gather=self.gather, offset=rank() * x1.shape[0])
        return loss, {"loss": loss.detach()}
