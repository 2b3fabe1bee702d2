"""Prototypical Networks (Snell et al., 2017) on any backbone, episodic.

learn2learn ships no ProtoNet module (only an example script), so this is the short version:
class prototypes are mean support embeddings; logits are negative squared Euclidean distances
(or scaled cosine similarities) from each query to each prototype. ``loss(tasks)`` averages
the query cross-entropy over a meta-batch of tasks. Initialising the backbone from an SCL
checkpoint gives the paper's "SCL as pretraining for ProtoNet" use (``episodic.init_from``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data import split_support_query
from ..evaluation.features import model_device
from .learners import check_labels


def prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int,
                     distance: str = "euclidean", scale: float = 10.0) -> torch.Tensor:
    protos = torch.zeros(ways, support.shape[-1], device=support.device, dtype=support.dtype)
    protos = protos.index_add(0, support_y, support) / torch.bincount(support_y, minlength=ways).clamp(min=1)[:, None]
    if distance == "cosine":
        return scale * F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).T
    return -torch.cdist(query, protos).pow(2)


class PrototypeLearner(nn.Module):
    """Nearest-prototype classifier on a frozen backbone (embeds in eval mode, then restores
    the backbone's train/eval mode)."""

    def __init__(self, backbone: nn.Module, support_x, support_y, ways: int, distance: str):
        super().__init__()
        self.backbone, self.ways, self.distance = backbone, ways, distance
        self.device = model_device(backbone)
        self.support, self.support_y = self._embed(support_x), support_y.to(self.device)

    @torch.no_grad()
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            return self.backbone(x.to(self.device))
        finally:
            self.backbone.train(was_training)

    @torch.no_grad()
    def forward(self, query_x: torch.Tensor) -> torch.Tensor:
        return prototype_logits(self.support, self.support_y, self._embed(query_x), self.ways, self.distance)


class ProtoNet(nn.Module):
    """Prototypical Networks: ``loss(tasks)`` for meta-training, ``adapt(xs, ys)`` to evaluate.

    Example::

        protonet = ProtoNet(create_backbone("conv4", in_chans=1, image_size=28), ways=5, shots=1, queries=15)
        loss, metrics = protonet.loss([task_x, task_y] for task_x, task_y in meta_batch)
        learner = protonet.adapt(support_x, support_y)     # labels 0..K-1
        logits = learner(query_x)
    """

    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, distance: str = "euclidean"):
        super().__init__()
        self.backbone = backbone
        self.ways, self.shots, self.queries, self.distance = ways, shots, queries, distance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def loss(self, tasks: List[Sequence[torch.Tensor]]) -> Tuple[torch.Tensor, Dict[str, Any]]:
        # One forward for the whole meta-batch (BatchNorm sees all tasks, as in learn2learn's example).
        xs = torch.cat([x for x, _ in tasks])
        emb = self.backbone(xs).split([x.shape[0] for x, _ in tasks])
        losses, accs = [], []
        for e, (_, y) in zip(emb, tasks):
            es, ys, eq, yq = split_support_query(e, y, self.ways, self.shots, self.queries)
            logits = prototype_logits(es, ys, eq, self.ways, self.distance)
            losses.append(F.cross_entropy(logits, yq))
            accs.append((logits.argmax(-1) == yq).float().mean())
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "acc": torch.stack(accs).mean()}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> PrototypeLearner:
        """Prototypes of the support set (labels ``0..K-1``); the backbone's mode is left as it was."""
        return PrototypeLearner(self.backbone, support_x, support_y, check_labels(support_y), self.distance)
