"""Adapted learners for pretrained embeddings: ``learner(query_x) -> logits``.

``FeatureLearner.fit`` embeds the support set with the frozen backbone (eval mode, no grad),
L2-normalises the features and fits the requested classifier: logistic regression (the
paper's protocol, solved by :func:`scl_plugin.evaluation.logreg.fit_logreg`, the same
solver the batched evaluation uses) or nearest prototype. This is the per-episode
``adapt()`` path; bulk evaluation batches many episodes through the same solvers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..evaluation.features import model_device
from ..evaluation.logreg import decision_function, fit_logreg


def check_labels(support_y: torch.Tensor) -> int:
    """The number of classes K of support labels ``0..K-1``; other labels are refused (they
    would silently become extra, empty classes)."""
    present = torch.unique(support_y)
    k = int(present.numel())
    if support_y.dtype.is_floating_point or present.min() != 0 or present.max() != k - 1:
        raise ValueError(f"support labels must be 0..K-1 with every class present, got {present.tolist()[:10]}: "
                         f"remap them, e.g. torch.unique(y, return_inverse=True)[1]")
    return k


class FeatureLearner(nn.Module):
    """Classifier fitted on frozen support embeddings; ``learner(query_x)`` gives logits.

    Example::

        learner = FeatureLearner.fit(backbone, support_x, support_y, classifier="logreg", C=1.0)
        predictions = learner(query_x).argmax(-1)
    """

    def __init__(self, backbone: nn.Module, classifier: str, ways: int, W=None, b=None, protos=None):
        super().__init__()
        self.backbone, self.classifier, self.ways = backbone, classifier, ways
        self.W, self.b, self.protos = W, b, protos

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            return F.normalize(self.backbone(x.to(model_device(self.backbone))), dim=-1)
        finally:
            self.backbone.train(was_training)

    @classmethod
    def fit(cls, backbone: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
            classifier: str = "logreg", C: float = 1.0) -> "FeatureLearner":
        ways = check_labels(support_y)
        learner = cls(backbone, classifier, ways)
        z = learner.embed(support_x)
        support_y = support_y.to(z.device)
        if classifier == "logreg":
            learner.W, learner.b = fit_logreg(z[None], support_y[None], ways, C=C)
        elif classifier in ("proto_cosine", "proto_euclidean"):
            protos = torch.zeros(ways, z.shape[-1], dtype=z.dtype, device=z.device).index_add(0, support_y, z)
            learner.protos = protos / torch.bincount(support_y, minlength=ways).clamp(min=1)[:, None]
        else:
            raise ValueError(f"unknown classifier {classifier!r}: use logreg, proto_cosine or proto_euclidean")
        return learner

    @torch.no_grad()
    def forward(self, query_x: torch.Tensor) -> torch.Tensor:
        z = self.embed(query_x)
        if self.classifier == "logreg":
            return decision_function(z[None], self.W, self.b)[0].to(z.dtype)
        if self.classifier == "proto_cosine":
            return z @ F.normalize(self.protos, dim=-1).T
        return -torch.cdist(z, self.protos).pow(2)


class EmbeddingMethod(nn.Module):
    """Base of the methods that pretrain ``self.backbone`` with an embedding loss (SimCLR, MoCo,
    BYOL, triplet, N-pair): evaluated like SCL, with a classifier on frozen, L2-normalised
    features (``adapt``), and ``forward`` = pooled backbone features."""

    backbone: nn.Module
    needs_two_views = False     # flat batches of ((view1, view2), y) instead of (x, y)
    pk_batches = False          # P classes x K images batches (embed.pk_classes x embed.pk_images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, classifier: str = "logreg",
              **kwargs: Any) -> FeatureLearner:
        return FeatureLearner.fit(self.backbone, support_x, support_y, classifier=classifier, **kwargs)
