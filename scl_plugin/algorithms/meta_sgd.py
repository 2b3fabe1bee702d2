"""Meta-SGD (Li et al., 2017) through ``learn2learn.algorithms.MetaSGD``: MAML whose inner step
uses a learned learning rate for every parameter entry (initialised to ``inner_lr``).

Everything else (backbone + linear head, BatchNorm policy, evaluation at another N) is
:class:`~scl_plugin.algorithms.MAMLMethod`'s; only the wrapper and the head's learning
rates at another N differ (the widened head's rates start from the mean of the learned
rows, like its weights).

Example::

    >>> import torch
    >>> from scl_plugin.backbones import create_backbone
    >>> method = MetaSGDMethod(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), ways=5, shots=1,
    ...                        queries=2, inner_lr=0.4, inner_steps=1)
    >>> tasks = [(torch.randn(15, 1, 28, 28), torch.arange(5).repeat(3)) for _ in range(2)]
    >>> loss, metrics = method.loss(tasks)
    >>> method.adapt(torch.randn(3, 1, 28, 28), torch.arange(3))(torch.randn(4, 1, 28, 28)).shape   # 3-way
    torch.Size([4, 3])
"""
from __future__ import annotations

import learn2learn as l2l
from torch import nn

from ..registry import register_method
from .maml import MAMLMethod, _Classifier


@register_method("metasgd", batches="episodes", classifier="native")
class MetaSGDMethod(MAMLMethod):
    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, inner_lr: float = 0.4,
                 inner_steps: int = 1, eval_inner_steps: int = 3, first_order: bool = False):
        super().__init__(backbone, ways, shots, queries, inner_lr, inner_steps, eval_inner_steps, first_order)
        self.maml = l2l.algorithms.MetaSGD(_Classifier(self.maml.module.backbone, ways), lr=inner_lr,
                                           first_order=first_order)

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, **options):
        return super().from_config(cfg, backbone, data, first_order=cfg.episodic.first_order, **options)

    def _clone(self, first_order=None) -> nn.Module:
        return self.maml.clone()          # MetaSGD.clone() takes no order; adapt() gets it

    def _scale_lr(self, learner: nn.Module, scale: float) -> None:
        for i in range(len(learner.lrs)):        # its learned per-parameter rates
            learner.lrs[i] = learner.lrs[i] * scale

    def _widen(self, learner: nn.Module, ways: int) -> None:
        super()._widen(learner, ways)
        # the head's weight and bias are the last two parameters, hence the last two rates
        w, b = learner.lrs[-2], learner.lrs[-1]
        learner.lrs[-2] = w.mean(0, keepdim=True).expand(ways, -1)
        learner.lrs[-1] = b.mean().expand(ways)
