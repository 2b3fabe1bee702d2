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

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SCLLossConfig
from ..distributed import rank
from ..losses import ProjectionHead, make_keys, SpatialAttention, global_contrastive_loss, spatial_contrastive_loss
from .learners import FeatureLearner


class SCL(nn.Module):
    """A backbone with a linear classifier, a projection head (GC) and spatial attention (SC).

    Loss options are keyword arguments (any field of :class:`~scl_plugin.config.SCLLossConfig`)
    or one ``SCLLossConfig`` as ``loss``::

        backbone = create_backbone("conv4", in_chans=1, image_size=28, depth=3)
        scl = SCL(backbone, num_classes=64, lambda_spatial=1.0)          # CE + SC
        loss, metrics = scl.loss(((view1, view2), labels))
        learner = scl.adapt(support_x, support_y)                          # logistic regression
        logits = learner(query_x)
    """

    def __init__(self, backbone: nn.Module, num_classes: int, loss: Optional[SCLLossConfig] = None,
                 gather: bool = False, **loss_options: Any):
        if loss is None:
            try:
                loss = SCLLossConfig(**loss_options)
            except TypeError:
                import dataclasses
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

    @property
    def needs_two_views(self) -> bool:
        return self.cfg.lambda_global > 0 or self.cfg.lambda_spatial > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (the embedding used for few-shot evaluation)."""
        return self.backbone(x)

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

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, classifier: str = "logreg",
              C: float = 1.0, base_mean: Optional[torch.Tensor] = None) -> FeatureLearner:
        """Fit a classifier on frozen, L2-normalised support features (the paper's protocol).

        ``support_y`` must hold labels ``0..K-1``; ``C`` is the inverse L2 strength of the
        logistic regression (as scikit-learn's); ``base_mean`` is SimpleShot's base-class mean
        feature (``classifier="simpleshot"`` only)."""
        return FeatureLearner.fit(self.backbone, support_x, support_y, classifier=classifier, C=C,
                                  base_mean=base_mean)


