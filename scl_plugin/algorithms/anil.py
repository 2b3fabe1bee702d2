"""ANIL, "Almost No Inner Loop" (Raghu et al., ICLR 2020): MAML whose inner loop adapts only the
linear head; the backbone is trained in the outer loop only.

As in learn2learn's ANIL examples, ``learn2learn.algorithms.MAML`` wraps the head alone:
each task embeds its support and query images once with the shared backbone, clones the
head, takes ``inner_steps`` gradient steps on the support features and is scored on the
query features; the meta-gradient reaches the backbone through the features (second order
through the head's inner steps unless ``first_order``). The backbone keeps ordinary
BatchNorm (batch statistics in training, running statistics at test), since it is never
cloned. Evaluating at another N starts every class from the mean of the learned head rows,
as :class:`~scl_plugin.algorithms.MAMLMethod` does.

Example::

    method = ANIL(backbone, ways=5, shots=1, queries=15, inner_lr=0.1, inner_steps=5)
    loss, metrics = method.loss(tasks)
    logits = method.adapt(xs, ys)(xq)
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import learn2learn as l2l
import torch
import torch.nn.functional as F
from torch import nn

from ..data import split_support_query
from ..evaluation.features import model_device
from .maml import widen_head


class ANIL(nn.Module):
    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, inner_lr: float = 0.1,
                 inner_steps: int = 5, eval_inner_steps: int = 10, first_order: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = l2l.algorithms.MAML(nn.Linear(backbone.feature_dim, ways), lr=inner_lr, first_order=first_order)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.inner_steps, self.eval_inner_steps = inner_steps, eval_inner_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def _adapt_head(self, fs: torch.Tensor, ys: torch.Tensor, steps: int, first_order=None) -> nn.Module:
        learner = self.head.clone(first_order=first_order)
        ways = int(ys.max()) + 1
        if ways != self.ways:
            learner.module = widen_head(learner.module, ways)
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(fs), ys), first_order=first_order)
        return learner

    def loss(self, tasks: List[Sequence[torch.Tensor]]) -> Tuple[torch.Tensor, Dict[str, Any]]:
        emb = self.backbone(torch.cat([x for x, _ in tasks])).split([x.shape[0] for x, _ in tasks])
        losses, accs = [], []
        for e, (_, y) in zip(emb, tasks):
            fs, ys, fq, yq = split_support_query(e, y.to(e.device), self.ways, self.shots, self.queries)
            logits = self._adapt_head(fs, ys, self.inner_steps)(fq)
            losses.append(F.cross_entropy(logits, yq))
            accs.append((logits.argmax(-1) == yq).float().mean())
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "acc": torch.stack(accs).mean().detach()}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, **_: Any) -> nn.Module:
        """Head adapted on frozen support features (eval-mode backbone, first-order steps)."""
        self.eval()
        device = model_device(self)
        with torch.no_grad():
            fs = self.backbone(support_x.to(device))
        with torch.enable_grad():
            head = self._adapt_head(fs, support_y.to(device), self.eval_inner_steps, first_order=True)
        return _HeadOnFeatures(self.backbone, head, device)


class _HeadOnFeatures(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, device: torch.device):
        super().__init__()
        self.backbone, self.head, self.device = backbone, head, device

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x.to(self.device)))
