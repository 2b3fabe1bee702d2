"""Meta-Baseline (Chen et al., ICCV 2021): episodic fine-tuning of a pretrained backbone with a
cosine nearest-centroid classifier whose temperature is learned.

    logits = tau * cos(f(x_q), mean_{support of class c} f(x_s)),   tau learnable, init 10

The backbone starts from a CE ("Classifier-Baseline") or SCL run (``episodic.init_from``),
which is the paper's two-stage recipe; the whole backbone is fine-tuned.

Example::

    method = MetaBaseline(backbone, ways=5, shots=1, queries=15, scale_init=10.0)
    loss, metrics = method.loss(tasks)
    logits = method.adapt(xs, ys)(xq)
"""
from __future__ import annotations

import torch
from torch import nn

from .episodic_head import EpisodicHead
from .protonet import prototype_logits


class MetaBaseline(EpisodicHead):
    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, scale_init: float = 10.0):
        super().__init__(backbone, ways, shots, queries)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def logits(self, support, support_y, query, ways):
        return prototype_logits(support, support_y, query, ways, distance="cosine", scale=self.scale)
