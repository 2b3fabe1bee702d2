"""MAML / first-order MAML through ``learn2learn.algorithms.MAML``.

The model is backbone + linear head (ways outputs). Each task clones the meta-model,
takes ``inner_steps`` gradient steps on the support set and is scored on the query set;
the meta-loss averages query losses over the meta-batch.

BatchNorm: ``MAML.clone()`` shares BN running buffers with the meta-model, so adapting clones
in train mode would silently update the meta-model's statistics. We follow the backbone
module's policy (``scl_plugin.backbones.maml_bn_policy``): BN uses the statistics of the
current batch during adaptation and querying (transductive, as in MAML's reference code),
and running buffers are never written.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import learn2learn as l2l
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import maml_bn_policy
from ..data import split_support_query
from ..evaluation.features import model_device
from .learners import check_labels


class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, ways: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, ways)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def widen_head(head: nn.Linear, ways: int) -> nn.Linear:
    """A ``ways``-output head whose every row is the mean of ``head``'s rows.

    Evaluating at another N than meta-trained: every class starts from the mean of the
    meta-learned head rows ("Unicorn-MAML", Ye & Chao, ICLR 2022), so the initial model is
    permutation-invariant and any N works. The tensors are written into ``_parameters`` like
    learn2learn's ``clone_module`` does, so ``adapt()`` updates them and gradients flow back.
    """
    new = nn.Linear(head.in_features, ways)
    new._parameters["weight"] = head.weight.mean(0, keepdim=True).expand(ways, -1).clone()
    new._parameters["bias"] = head.bias.mean().expand(ways).clone()
    return new


class MAMLMethod(nn.Module):
    """(First-order) MAML through ``learn2learn.algorithms.MAML`` on a backbone + linear head.

    Example::

        maml = MAMLMethod(create_backbone("conv4", in_chans=1, image_size=28), ways=5, shots=1, queries=15,
                          first_order=True)
        loss, metrics = maml.loss(meta_batch)             # list of (x, y) tasks
        learner = maml.adapt(support_x, support_y)        # eval_inner_steps steps on the support set
        logits = learner(query_x)
    """

    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, inner_lr: float = 0.4,
                 inner_steps: int = 1, eval_inner_steps: int = 3, first_order: bool = False):
        super().__init__()
        maml_bn_policy(backbone)
        self.maml = l2l.algorithms.MAML(_Classifier(backbone, ways), lr=inner_lr, first_order=first_order)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.inner_steps, self.eval_inner_steps = inner_steps, eval_inner_steps

    @property
    def backbone(self) -> nn.Module:
        return self.maml.module.backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def _clone(self, first_order=None) -> nn.Module:
        return self.maml.clone(first_order=first_order)

    def _widen(self, learner: nn.Module, ways: int) -> None:
        learner.module.head = widen_head(learner.module.head, ways)

    def _adapt(self, xs: torch.Tensor, ys: torch.Tensor, steps: int, first_order=None):
        learner = self._clone(first_order)
        ways = int(ys.max()) + 1
        if ways != self.ways:
            self._widen(learner, ways)
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(xs), ys), first_order=first_order)
        return learner

    def loss(self, tasks: List[Sequence[torch.Tensor]]) -> Tuple[torch.Tensor, Dict[str, Any]]:
        losses, accs = [], []
        for x, y in tasks:
            xs, ys, xq, yq = split_support_query(x, y, self.ways, self.shots, self.queries)
            learner = self._adapt(xs, ys, self.inner_steps)
            logits = learner(xq)
            losses.append(F.cross_entropy(logits, yq))
            accs.append((logits.argmax(-1) == yq).float().mean())
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "acc": torch.stack(accs).mean().detach()}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> nn.Module:
        """Adapted learner for evaluation (first-order inner steps: no meta-gradient needed)."""
        check_labels(support_y)
        device = model_device(self)
        with torch.enable_grad():
            learner = self._adapt(support_x.to(device), support_y.to(device), self.eval_inner_steps, first_order=True)
        return _Detached(learner, device)


class _Detached(nn.Module):
    def __init__(self, learner: nn.Module, device: torch.device):
        super().__init__()
        self.learner, self.device = learner, device

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.learner(x.to(self.device))
