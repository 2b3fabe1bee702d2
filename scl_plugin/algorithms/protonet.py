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


def prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int,
                     distance: str = "euclidean", scale: float = 10.0) -> torch.Tensor:
    protos = torch.zeros(ways, support.shape[-1], device=support.device, dtype=support.dtype)
    protos = protos.index_add(0, support_y, support) / torch.bincount(support_y, minlength=ways).clamp(min=1)[:, None]
    if distance == "cosine":
        return scale * F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).T
    return -torch.cdist(query, protos).pow(2)


class PrototypeLearner(nn.Module):
    def __init__(self, backbone: nn.Module, support_x, support_y, ways: int, distance: str):
        super().__init__()
        self.backbone, self.ways, self.distance = backbone, ways, distance
        self.device = model_device(backbone)
        with torch.no_grad():
            self.support, self.support_y = backbone(support_x.to(self.device)), support_y.to(self.device)

    @torch.no_grad()
    def forward(self, query_x: torch.Tensor) -> torch.Tensor:
        return prototype_logits(self.support, self.support_y, self.backbone(query_x.to(self.device)), self.ways,
                                self.distance)


class ProtoNet(nn.Module):
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

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, **_: Any) -> PrototypeLearner:
        self.eval()
        return PrototypeLearner(self.backbone, support_x, support_y, int(support_y.max()) + 1, self.distance)
