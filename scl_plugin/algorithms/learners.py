"""Adapted learners for pretrained embeddings: ``learner(query_x) -> logits``.

``FeatureLearner.fit`` embeds the support set with the frozen backbone (eval mode, no grad),
L2-normalises the features and fits the requested classifier: logistic regression (the
paper's protocol, solved by :func:`scl_plugin.evaluation.logreg.fit_logreg`, the same
solver the batched evaluation uses), nearest prototype, or SimpleShot's nearest centroid on
CL2N features (``base_mean=`` required). This is the per-episode
``adapt()`` path; bulk evaluation batches many episodes through the same solvers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..evaluation.classifiers import prototypes
from ..evaluation.features import eval_mode, model_device
from ..evaluation.logreg import decision_function, fit_logreg
from ..evaluation.simpleshot import cl2n


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

        >>> from scl_plugin.backbones import create_backbone
        >>> backbone = create_backbone("conv4", in_chans=1, image_size=28, hidden=8)
        >>> support_x, support_y = torch.randn(6, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2, 2])
        >>> learner = FeatureLearner.fit(backbone, support_x, support_y, classifier="logreg", C=1.0)
        >>> predictions = learner(torch.randn(4, 1, 28, 28)).argmax(-1)
        >>> predictions.shape
        torch.Size([4])
    """

    def __init__(self, backbone: nn.Module, classifier: str, ways: int, W=None, b=None, protos=None,
                 base_mean=None):
        super().__init__()
        self.backbone, self.classifier, self.ways = backbone, classifier, ways
        self.W, self.b, self.protos, self.base_mean = W, b, protos, base_mean

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised features; CL2N (centred on the base mean first) for SimpleShot."""
        with eval_mode(self.backbone):
            z = self.backbone(x.to(model_device(self.backbone)))
            return cl2n(z, self.base_mean) if self.classifier == "simpleshot" else F.normalize(z, dim=-1)

    @classmethod
    def fit(cls, backbone: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
            classifier: str = "logreg", C: float = 1.0, base_mean=None) -> "FeatureLearner":
        ways = check_labels(support_y)
        if classifier == "simpleshot" and base_mean is None:
            raise ValueError("classifier 'simpleshot' needs base_mean= (the mean feature of the base classes)")
        learner = cls(backbone, classifier, ways, base_mean=base_mean)
        z = learner.embed(support_x)
        support_y = support_y.to(z.device)
        if classifier == "logreg":
            learner.W, learner.b = fit_logreg(z[None], support_y[None], ways, C=C)
        elif classifier in ("proto_cosine", "proto_euclidean", "simpleshot"):
            learner.protos = prototypes(z, support_y, ways)
        else:
            raise ValueError(f"unknown classifier {classifier!r}: use logreg, proto_cosine, proto_euclidean "
                             f"or simpleshot")
        return learner

    @torch.no_grad()
    def forward(self, query_x: torch.Tensor) -> torch.Tensor:
        z = self.embed(query_x)
        if self.classifier == "logreg":
            return decision_function(z[None], self.W, self.b)[0].to(z.dtype)
        if self.classifier == "proto_cosine":
            return z @ F.normalize(self.protos, dim=-1).T
        return -torch.cdist(z, self.protos).pow(2)
