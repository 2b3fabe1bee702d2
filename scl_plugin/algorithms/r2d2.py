"""R2-D2 (Bertinetto et al., ICLR 2019): episodic training through closed-form ridge
regression fitted on each support set.

With support features X (n x d, a constant 1 appended for the bias) and one-hot targets Y,
the ridge solution in its Woodbury form (n << d in few-shot episodes) is

    W = X^T (X X^T + lambda I_n)^{-1} Y,      logits = alpha * X_q W + beta

and is differentiable in X, so the query loss trains the backbone. lambda (kept positive
through its log), alpha and beta are learned, as in the paper. No solver library needed: one
n x n ``torch.linalg.solve`` per episode (learn2learn has no ridge head).

Example::

    >>> import torch
    >>> from scl_plugin.backbones import create_backbone
    >>> method = R2D2(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), ways=5, shots=1, queries=2)
    >>> tasks = [(torch.randn(15, 1, 28, 28), torch.arange(5).repeat(3)) for _ in range(2)]
    >>> loss, metrics = method.loss(tasks)
    >>> method.adapt(torch.randn(5, 1, 28, 28), torch.arange(5))(torch.randn(3, 1, 28, 28)).shape
    torch.Size([3, 5])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_method
from .base import EpisodicMethod


def ridge_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int,
                 lam: torch.Tensor) -> torch.Tensor:
    """Query scores X_q W of the ridge regression of one-hot labels on [support, 1]."""
    ones = lambda z: torch.cat([z, z.new_ones(z.shape[0], 1)], dim=1)   # noqa: E731
    X, Xq = ones(support), ones(query)
    Y = F.one_hot(support_y, ways).to(X.dtype)
    gram = X @ X.T + lam * torch.eye(X.shape[0], dtype=X.dtype, device=X.device)
    return Xq @ (X.T @ torch.linalg.solve(gram, Y))


@register_method("r2d2", batches="episodes", classifier="native")
class R2D2(EpisodicMethod):
    def __init__(self, backbone: nn.Module, ways: int, shots: int, queries: int, lam_init: float = 1.0,
                 scale_init: float = 1.0):
        super().__init__(backbone, ways, shots, queries)
        self.log_lambda = nn.Parameter(torch.tensor(math.log(lam_init)))
        self.alpha = nn.Parameter(torch.tensor(float(scale_init)))
        self.beta = nn.Parameter(torch.tensor(0.0))

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, **options):
        e = cfg.episodic
        return super().from_config(cfg, backbone, data, lam_init=e.ridge_lambda, scale_init=e.scale_init, **options)

    def task_logits(self, support, support_y, query, ways):
        return self.alpha * ridge_logits(support, support_y, query, ways, self.log_lambda.exp()) + self.beta
