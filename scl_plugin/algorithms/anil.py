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

    >>> import torch
    >>> from scl_plugin.backbones import create_backbone
    >>> method = ANIL(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), ways=5, shots=1, queries=2,
    ...               inner_lr=0.1, inner_steps=2)
    >>> tasks = [(torch.randn(15, 1, 28, 28), torch.arange(5).repeat(3)) for _ in range(2)]
    >>> loss, metrics = method.loss(tasks)
    >>> method.adapt(torch.randn(5, 1, 28, 28), torch.arange(5))(torch.randn(3, 1, 28, 28)).shape
    torch.Size([3, 5])
"""
from __future__ import annotations

import learn2learn as l2l
import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_method
from .base import EpisodicMethod
from .learners import check_labels
from .maml import widen_head


@register_method("anil", batches="episodes", classifier="native")
class ANIL(EpisodicMethod):
    test_time_keys = ("episodic.eval_inner_steps", "episodic.eval_lr_scale")
    eval_lr_scale = 1.0

    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, inner_lr: float = 0.1,
                 inner_steps: int = 5, eval_inner_steps: int = 10, first_order: bool = False):
        super().__init__(backbone, ways, shots, queries)
        self.head = l2l.algorithms.MAML(nn.Linear(backbone.feature_dim, ways), lr=inner_lr, first_order=first_order)
        self.inner_steps, self.eval_inner_steps = inner_steps, eval_inner_steps

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, **options):
        e = cfg.episodic
        return super().from_config(cfg, backbone, data, inner_lr=e.inner_lr, inner_steps=e.inner_steps,
                                   eval_inner_steps=e.eval_inner_steps, first_order=e.first_order, **options)

    def _adapt_head(self, fs: torch.Tensor, ys: torch.Tensor, steps: int, ways: int, first_order=None,
                    lr_scale: float = 1.0) -> nn.Module:
        learner = self.head.clone(first_order=first_order)
        if ways != self.ways:
            learner.module = widen_head(learner.module, ways)
        learner.lr = learner.lr * lr_scale
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(fs), ys), first_order=first_order)
        return learner

    def task_logits(self, support, support_y, query, ways):
        return self._adapt_head(support, support_y, self.inner_steps, ways)(query)

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> nn.Module:
        """Head adapted on frozen support features (eval-mode backbone, first-order steps)."""
        ways = check_labels(support_y)
        fs = self.embed(support_x)
        with torch.enable_grad():
            head = self._adapt_head(fs, support_y.to(fs.device), self.eval_inner_steps, ways, first_order=True,
                                    lr_scale=self.eval_lr_scale)
        return _HeadOnFeatures(self, head)


class _HeadOnFeatures(nn.Module):
    def __init__(self, method: ANIL, head: nn.Module):
        super().__init__()
        self.method, self.head = method, head

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.method.embed(x))
