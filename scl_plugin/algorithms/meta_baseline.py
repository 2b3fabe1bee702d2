"""Meta-Baseline (Chen et al., ICCV 2021): episodic fine-tuning of a pretrained backbone with a
cosine nearest-centroid classifier whose temperature is learned.

    logits = tau * cos(f(x_q), mean_{support of class c} f(x_s)),   tau learnable, init 10

The backbone starts from a CE ("Classifier-Baseline") or SCL run (``episodic.init_from``),
which is the paper's two-stage recipe; the whole backbone is fine-tuned.

Example::

    >>> import torch
    >>> from scl_plugin.backbones import create_backbone
    >>> method = MetaBaseline(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), ways=5, shots=1,
    ...                       queries=2, scale_init=10.0)
    >>> tasks = [(torch.randn(15, 1, 28, 28), torch.arange(5).repeat(3)) for _ in range(2)]
    >>> loss, metrics = method.loss(tasks)
    >>> method.adapt(torch.randn(5, 1, 28, 28), torch.arange(5))(torch.randn(3, 1, 28, 28)).shape
    torch.Size([3, 5])
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_method
from .base import EpisodicMethod
from .protonet import prototype_logits


@register_method("meta_baseline", batches="episodes", classifier="native", needs_init="CE or SCL")
class MetaBaseline(EpisodicMethod):
    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, scale_init: float = 10.0):
        super().__init__(backbone, ways, shots, queries)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, **options):
        return super().from_config(cfg, backbone, data, scale_init=cfg.episodic.scale_init, **options)

    def task_logits(self, support, support_y, query, ways):
        return prototype_logits(support, support_y, query, ways, distance="cosine", scale=self.scale)
