"""BYOL (Grill et al., NeurIPS 2020): online network + predictor regress an EMA target; no negatives.

Online: backbone -> projector -> predictor; target: EMA copy of backbone -> projector. The
loss is the symmetrised normalised MSE ``byol_loss(p1, z2) + byol_loss(p2, z1)``. The EMA
rate follows the paper's cosine schedule from ``momentum`` (tau_base, 0.996) to 1 over
``total_steps`` (set by the training pipeline; 0 = constant). The target is updated before
the forward of each training step, i.e. right after the previous optimizer step. Projector and
predictor are Linear-BN-ReLU-Linear MLPs (the paper's 4096 -> 256 scaled to ``hidden_dim`` -> ``proj_dim``).

Example::

    >>> import torch
    >>> from scl_plugin.backbones import create_backbone
    >>> method = BYOL(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), proj_dim=16, hidden_dim=32,
    ...               momentum=0.996, total_steps=1000)
    >>> views, labels = (torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)), torch.arange(4)
    >>> loss, metrics = method.loss((views, labels))          # labels are ignored
    >>> int(method.ema_step)                                 # the target moved once
    1
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..losses import byol_loss
from .ema import byol_momentum, ema_update, frozen_copy
from ..registry import register_method
from .base import EmbeddingMethod


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


@register_method("byol", batches="flat", classifier="logreg")
class BYOL(EmbeddingMethod):
    needs_two_views = True

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, hidden_dim: int = 0, momentum: float = 0.996,
                 total_steps: int = 0):
        super().__init__()
        hidden = hidden_dim or backbone.feature_dim
        self.backbone = backbone
        self.projector = mlp(backbone.feature_dim, hidden, proj_dim)
        self.predictor = mlp(proj_dim, hidden, proj_dim)
        self.target_backbone, self.target_projector = frozen_copy(backbone), frozen_copy(self.projector)
        self.base_momentum, self.total_steps = momentum, total_steps
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, **options):
        m = cfg.embed
        return cls(backbone, m.proj_dim, m.hidden_dim, m.momentum, **options)

    def current_momentum(self) -> float:
        return byol_momentum(int(self.ema_step), self.total_steps, self.base_momentum)

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.current_momentum()
        ema_update(self.target_backbone, self.backbone, m)
        ema_update(self.target_projector, self.projector, m)
        self.ema_step += 1

    def loss(self, batch: Any) -> Tuple[torch.Tensor, Dict[str, Any]]:
        (x1, x2), _ = batch
        x = torch.cat([x1, x2])
        p1, p2 = self.predictor(self.projector(self.backbone(x))).chunk(2)
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            z1, z2 = self.target_projector(self.target_backbone(x)).chunk(2)
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return loss, {"loss": loss.detach()}
