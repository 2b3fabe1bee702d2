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

import learn2learn as l2l
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import maml_bn_policy
from ..evaluation.features import eval_mode, model_device
from ..registry import register_method
from .base import EpisodicMethod
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


@register_method("fomaml", batches="episodes", classifier="native", first_order=True)
@register_method("maml", batches="episodes", classifier="native")
class MAMLMethod(EpisodicMethod):
    """(First-order) MAML through ``learn2learn.algorithms.MAML`` on a backbone + linear head.

    Each task's ``task_logits`` clones the meta-model, takes ``inner_steps`` steps on the support
    images and scores the query images; ``adapt`` takes ``eval_inner_steps`` first-order steps.

    Arguments:
        backbone: images -> pooled features (its BatchNorm layers switched to batch statistics).
        ways, shots, queries: the training episodes' shape (the head has ``ways`` outputs).
        inner_lr, inner_steps, eval_inner_steps: the inner loop, in training and at test time.
        first_order: first-order meta-gradient (FOMAML).

    Example::

        >>> import torch
        >>> from scl_plugin.backbones import create_backbone
        >>> maml = MAMLMethod(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), ways=5, shots=1,
        ...                   queries=2, first_order=True)
        >>> meta_batch = [(torch.randn(15, 1, 28, 28), torch.arange(5).repeat(3)) for _ in range(2)]
        >>> loss, metrics = maml.loss(meta_batch)            # list of (x, y) tasks
        >>> learner = maml.adapt(torch.randn(5, 1, 28, 28), torch.arange(5))   # eval_inner_steps steps
        >>> learner(torch.randn(3, 1, 28, 28)).shape
        torch.Size([3, 5])
    """

    embeds_tasks = False     # the backbone runs inside each task's clone
    compile_unsupported = "learn2learn's MAML clones the model every task"

    test_time_keys = ("episodic.eval_inner_steps", "episodic.eval_lr_scale")
    eval_lr_scale = 1.0

    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, inner_lr: float = 0.4,
                 inner_steps: int = 1, eval_inner_steps: int = 3, first_order: bool = False):
        super().__init__(None, ways, shots, queries)
        maml_bn_policy(backbone)
        self.maml = l2l.algorithms.MAML(_Classifier(backbone, ways), lr=inner_lr, first_order=first_order)
        self.inner_steps, self.eval_inner_steps = inner_steps, eval_inner_steps

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, **options):
        e = cfg.episodic
        options = {"first_order": False, **options}
        return super().from_config(cfg, backbone, data, inner_lr=e.inner_lr, inner_steps=e.inner_steps,
                                   eval_inner_steps=e.eval_inner_steps, **options)

    @property
    def backbone(self) -> nn.Module:
        return self.maml.module.backbone

    def _clone(self, first_order=None) -> nn.Module:
        return self.maml.clone(first_order=first_order)

    def _widen(self, learner: nn.Module, ways: int) -> None:
        learner.module.head = widen_head(learner.module.head, ways)

    def _scale_lr(self, learner: nn.Module, scale: float) -> None:
        learner.lr = learner.lr * scale

    def _adapt(self, xs: torch.Tensor, ys: torch.Tensor, steps: int, ways: int, first_order=None,
               lr_scale: float = 1.0):
        learner = self._clone(first_order)
        if ways != self.ways:
            self._widen(learner, ways)
        if lr_scale != 1.0:
            self._scale_lr(learner, lr_scale)
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(xs), ys), first_order=first_order)
        return learner

    def task_logits(self, support, support_y, query, ways):
        return self._adapt(support, support_y, self.inner_steps, ways)(query)

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> nn.Module:
        """Adapted learner for evaluation (first-order inner steps: no meta-gradient needed), in
        eval mode; the method's own mode is restored."""
        ways = check_labels(support_y)
        device = model_device(self)
        with eval_mode(self), torch.enable_grad():
            learner = self._adapt(support_x.to(device), support_y.to(device), self.eval_inner_steps, ways,
                                  first_order=True, lr_scale=self.eval_lr_scale)
        return _Detached(learner, device)


class _Detached(nn.Module):
    def __init__(self, learner: nn.Module, device: torch.device):
        super().__init__()
        self.learner, self.device = learner, device

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.learner(x.to(self.device))
