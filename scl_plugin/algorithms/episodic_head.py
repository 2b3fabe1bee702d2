"""Episodic training of a backbone under a per-episode head: the shape MetaOptNet, R2-D2 and
Meta-Baseline share.

A head maps ``(support features, support labels, query features, ways)`` to query logits and
is differentiable in the features, so ``loss(tasks)`` back-propagates the query cross-entropy
through the head's solution into the backbone (one backbone forward per meta-batch, as
:class:`~scl_plugin.algorithms.ProtoNet`). ``adapt(xs, ys)`` embeds the support set with the
backbone in eval mode and returns a learner whose call on query images gives logits, so these
methods evaluate with the ``native`` classifier like MAML and ProtoNet.

Subclasses only implement :meth:`EpisodicHead.logits`. learn2learn has the SVM piece
(``learn2learn.nn.SVClassifier``) but no episodic wrapper around heads, hence this class.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data import split_support_query
from ..evaluation.features import model_device


class EpisodicHead(nn.Module):
    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int):
        super().__init__()
        self.backbone = backbone
        self.ways, self.shots, self.queries = ways, shots, queries

    def logits(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
               ways: int) -> torch.Tensor:
        """Query logits (Q, ways) from support (S, d), labels (S,) in 0..ways-1, query (Q, d)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def loss(self, tasks: List[Sequence[torch.Tensor]]) -> Tuple[torch.Tensor, Dict[str, Any]]:
        emb = self.backbone(torch.cat([x for x, _ in tasks])).split([x.shape[0] for x, _ in tasks])
        losses, accs = [], []
        for e, (_, y) in zip(emb, tasks):
            es, ys, eq, yq = split_support_query(e, y.to(e.device), self.ways, self.shots, self.queries)
            logits = self.logits(es, ys, eq, self.ways)
            losses.append(F.cross_entropy(logits, yq))
            accs.append((logits.argmax(-1) == yq).float().mean())
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "acc": torch.stack(accs).mean().detach()}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, **_: Any) -> "HeadLearner":
        self.eval()
        return HeadLearner(self, support_x, support_y)


class HeadLearner(nn.Module):
    """The head fitted on one support set; ``learner(query_x) -> logits``."""

    def __init__(self, method: EpisodicHead, support_x: torch.Tensor, support_y: torch.Tensor):
        super().__init__()
        self.method = method
        self.device = model_device(method.backbone)
        with torch.no_grad():
            self.support = method.backbone(support_x.to(self.device))
        self.support_y = support_y.to(self.device)
        self.ways = int(support_y.max()) + 1

    @torch.no_grad()
    def forward(self, query_x: torch.Tensor) -> torch.Tensor:
        query = self.method.backbone(query_x.to(self.device))
        return self.method.logits(self.support, self.support_y, query, self.ways)
