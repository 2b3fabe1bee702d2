"""SCL: a backbone pretrained with CE + global (GC) and/or spatial (SC) contrastive losses.

In the style of ``learn2learn.algorithms``: the module wraps a backbone and its heads,
``loss(batch)`` is the pretraining objective (Ouali et al. 2021, Eq. 7)::

    L = lambda_ce * L_CE + lambda_global * L_GC + lambda_spatial * L_SC

and ``adapt(support_x, support_y)`` returns a learner whose call on query images gives
logits, so evaluation treats SCL exactly like ``MAML.clone().adapt(...)`` or a ProtoNet.
With ``lambda_global = lambda_spatial = 0`` this is the CE-only RFS baseline.

Batches: ``(x, y)`` or, when a contrastive term is on, ``((view1, view2), y)``: both views go
through the backbone as one 2N batch; CE is averaged over both views. Contrastive keys are
the class labels (supervised: positives share a class) or the image index within the global
batch (self-supervised: the only positive is the other view of the same image).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError, SCLLossConfig
from ..distributed import rank
from ..losses import ProjectionHead, make_keys, SpatialAttention, global_contrastive_loss, spatial_contrastive_loss
from ..registry import register_method
from .base import EmbeddingMethod


def check_spatial_map(cfg: Config, backbone: nn.Module, lambda_spatial: float) -> None:
    """The SC loss aligns positions of the feature map: with fewer than 2x2 it compares one
    position (or one row) with itself, silently. Stop and say how to get a larger map."""
    h, w = backbone.spatial_shape
    if lambda_spatial > 0 and min(h, w) < 2:
        depth = " or model.kwargs.depth=3" if cfg.model.name == "conv4" else ""
        raise ConfigError(f"the spatial loss (loss.lambda_spatial={lambda_spatial}) needs a feature map of at "
                          f"least 2x2 but {cfg.model.name} gives {h}x{w} on {cfg.data.image_size}px images: "
                          f"use a larger data.image_size{depth}, another model.name, or loss.lambda_spatial=0")


@register_method("scl", batches="flat", classifier="logreg", distills=True)
@register_method("ce", batches="flat", classifier="logreg", distills=True, contrastive=False)
class SCL(EmbeddingMethod):
    """A backbone with a linear classifier, a projection head (GC) and spatial attention (SC).

    Registered as ``scl`` (``cfg.loss`` as configured) and ``ce`` (the GC and SC weights set to
    0: the RFS baseline); both may be followed by distillation generations (:class:`Distiller`).

    Arguments:
        backbone: a :class:`~scl_plugin.backbones.Backbone` (``forward_spatial`` for the SC loss).
        num_classes: the training split's classes (the linear classifier).
        loss: one :class:`~scl_plugin.config.SCLLossConfig`, or its fields as keyword arguments.
        gather: contrast against the global batch of all processes.

    Example::

        >>> import torch
        >>> from scl_plugin.backbones import create_backbone
        >>> backbone = create_backbone("conv4", in_chans=1, image_size=28, depth=3, hidden=8)
        >>> scl = SCL(backbone, num_classes=4, lambda_spatial=1.0)          # CE + SC
        >>> views, labels = (torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)), torch.arange(4).repeat(2)
        >>> loss, metrics = scl.loss((views, labels))
        >>> sorted(metrics)
        ['ce', 'loss', 'sc']
        >>> learner = scl.adapt(torch.randn(6, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2, 2]))   # logistic regression
        >>> learner(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 3])
    """

    def __init__(self, backbone: nn.Module, num_classes: int, loss: Optional[SCLLossConfig] = None,
                 gather: bool = False, **loss_options: Any):
        if loss is None:
            try:
                loss = SCLLossConfig(**loss_options)
            except TypeError:
                allowed = ", ".join(f.name for f in dataclasses.fields(SCLLossConfig))
                unknown = sorted(set(loss_options) - {f.name for f in dataclasses.fields(SCLLossConfig)})
                raise TypeError(f"SCL: unknown loss option(s) {unknown}; allowed: {allowed}") from None
        elif loss_options:
            raise TypeError(f"SCL: give loss options {sorted(loss_options)} either as keywords or in loss=, not both")
        super().__init__()
        self.backbone = backbone
        self.cfg = loss
        self.gather = gather
        d = backbone.feature_dim
        self.classifier = nn.Linear(d, num_classes)
        self.head = ProjectionHead(d, loss.proj_dim)            # used by GC and distillation
        self.attention = SpatialAttention(d, loss.proj_dim, aggregation=loss.aggregation,
                                          lambda_lse=loss.lambda_lse) \
            if loss.lambda_spatial > 0 else None

    @classmethod
    def from_config(cls, cfg: Config, backbone: nn.Module, data: Any, *, gather: bool = False,
                    contrastive: bool = True) -> "SCL":
        """``cfg.loss`` on ``data.num_classes`` classes; ``contrastive=False``: CE only (the GC and SC
        weights set to 0, the RFS baseline)."""
        loss = cfg.loss if contrastive else dataclasses.replace(cfg.loss, lambda_global=0.0, lambda_spatial=0.0)
        check_spatial_map(cfg, backbone, loss.lambda_spatial)
        return cls(backbone, data.num_classes, loss, gather=gather)

    @classmethod
    def released_config(cls, cfg: Config, ckpt: Any) -> Config:
        """A released SCL checkpoint's projection size ``d'`` becomes ``loss.proj_dim``."""
        if ckpt.proj_dim and ckpt.proj_dim != cfg.loss.proj_dim:
            return dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, proj_dim=ckpt.proj_dim))
        return cfg

    def load_released(self, ckpt: Any) -> None:
        """Backbone, classifier and (from SCL's code) projection head and attention of a released file."""
        from ..backbones.rfs import load_into_scl
        load_into_scl(self, ckpt)

    @property
    def needs_two_views(self) -> bool:
        return self.cfg.lambda_global > 0 or self.cfg.lambda_spatial > 0

    def features(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        spatial = self.backbone.forward_spatial(x)
        return spatial, spatial.mean(dim=(2, 3))

    def _keys(self, y: torch.Tensor, mode: str) -> torch.Tensor:
        # self-supervised ids must be unique across processes when features are gathered
        return make_keys(y, mode, n_views=2, offset=rank() * y.numel())

    @property
    def find_unused_parameters(self) -> bool:
        """DDP: the projection head is kept but unused without the GC term (and the classifier
        without CE), so data-parallel training must look for unused parameters."""
        return self.cfg.lambda_global <= 0 or self.cfg.lambda_ce <= 0

    def loss(self, batch: Any) -> Tuple[torch.Tensor, Dict[str, float]]:
        x, y = batch
        two = isinstance(x, (list, tuple))
        if self.needs_two_views and not two:
            raise ValueError("GC/SC losses need two augmented views: build the pretraining set with two_view=True")
        inputs = torch.cat(list(x), 0) if two else x
        spatial, pooled = self.features(inputs)
        logits = self.classifier(pooled)
        targets = y.repeat(len(x)) if two else y
        cfg, metrics = self.cfg, {}
        ce = F.cross_entropy(logits, targets)
        total = cfg.lambda_ce * ce
        metrics["ce"] = ce.detach()
        if cfg.lambda_global > 0:
            gc = global_contrastive_loss(self.head(pooled), self._keys(y, cfg.global_mode), cfg.tau_global,
                                         gather=self.gather)
            total = total + cfg.lambda_global * gc
            metrics["gc"] = gc.detach()
        if cfg.lambda_spatial > 0:
            sc = spatial_contrastive_loss(spatial, self._keys(y, cfg.spatial_mode), self.attention, cfg.tau_spatial,
                                          chunk_size=cfg.chunk_size, gather=self.gather)
            total = total + cfg.lambda_spatial * sc
            metrics["sc"] = sc.detach()
        metrics["loss"] = total.detach()
        return total, metrics
