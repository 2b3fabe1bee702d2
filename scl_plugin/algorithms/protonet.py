"""Prototypical Networks (Snell et al., 2017) on any backbone, episodic.

learn2learn ships no ProtoNet module (only an example script), so this is the short version:
class prototypes are mean support embeddings; logits are negative squared Euclidean distances
(or scaled cosine similarities) from each query to each prototype. ``loss(tasks)`` averages
the query cross-entropy over a meta-batch of tasks (:class:`~scl_plugin.algorithms.EpisodicMethod`).
Initialising the backbone from an SCL run gives the paper's "SCL as pretraining for ProtoNet"
(``scl_protonet``, :mod:`.scl_protonet`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..evaluation.classifiers import prototypes
from ..registry import register_method
from .base import EpisodicMethod


def prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int,
                     distance: str = "euclidean", scale: float = 10.0) -> torch.Tensor:
    """Query logits against the class means of the support features: ``-||q - p_c||^2``
    (``distance="euclidean"``) or ``scale * cos(q, p_c)`` (``"cosine"``)."""
    protos = prototypes(support, support_y, ways)
    if distance == "cosine":
        return scale * F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).T
    return -torch.cdist(query, protos).pow(2)


@register_method("protonet", batches="episodes", classifier="proto_euclidean")
class ProtoNet(EpisodicMethod):
    """Prototypical Networks: ``loss(tasks)`` for meta-training, ``adapt(xs, ys)`` to evaluate.

    Arguments:
        backbone: images -> pooled features.
        ways, shots, queries: the training episodes' shape.
        distance: ``"euclidean"`` (squared, the paper's) or ``"cosine"`` (scaled by 10).

    Example::

        >>> import torch
        >>> from scl_plugin.backbones import create_backbone
        >>> protonet = ProtoNet(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), ways=5, shots=1,
        ...                     queries=2)
        >>> meta_batch = [(torch.randn(15, 1, 28, 28), torch.arange(5).repeat(3)) for _ in range(2)]
        >>> loss, metrics = protonet.loss(meta_batch)
        >>> learner = protonet.adapt(torch.randn(5, 1, 28, 28), torch.arange(5))     # labels 0..K-1
        >>> learner(torch.randn(3, 1, 28, 28)).shape
        torch.Size([3, 5])
    """

    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, distance: str = "euclidean"):
        super().__init__(backbone, ways, shots, queries)
        self.distance = distance

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, **options):
        return super().from_config(cfg, backbone, data, distance=cfg.episodic.distance, **options)

    def task_logits(self, support, support_y, query, ways):
        return prototype_logits(support, support_y, query, ways, self.distance)
