"""MoCo v2 (He et al., CVPR 2020; Chen et al., arXiv 2003.04297): momentum key encoder and a queue.

The query encoder is ``backbone`` + MLP head; the key encoder is its EMA copy (``momentum``,
0.999 in the paper), updated before the keys of each step are computed. Each query's positive
is the key of the other view of its image; the negatives are the ``queue_size`` most recent
keys (initialised random unit vectors). After the loss, this step's keys enter the queue,
oldest first out (a ring buffer, ``queue_ptr`` the next slot).

Several processes: keys of every process are gathered (rank order) before they are enqueued,
so all queues stay identical and hold the global batch's keys, as in the reference code. The
reference code's shuffled BatchNorm across GPUs is not reproduced (single-process BN sees
query and key batches separately anyway).

Example::

    >>> from scl_plugin.backbones import create_backbone
    >>> backbone = create_backbone("conv4", in_chans=1, image_size=28, hidden=8)
    >>> method = MoCo(backbone, proj_dim=16, queue_size=32, momentum=0.999, temperature=0.2)
    >>> for step in range(3):                                 # labels are ignored
    ...     loss, metrics = method.loss(((torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)), None))
    >>> int(method.queue_ptr)                                # 3 steps x 4 keys entered the queue
    12
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed as D
from ..losses import ProjectionHead, infonce_queue_loss
from .ema import ema_update, frozen_copy
from ..registry import register_method
from .base import EmbeddingMethod


@register_method("moco", batches="flat", classifier="logreg")
class MoCo(EmbeddingMethod):
    needs_two_views = True

    def __init__(self, backbone: nn.Module, proj_dim: int = 128, queue_size: int = 4096, momentum: float = 0.999,
                 temperature: float = 0.2, gather: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(backbone.feature_dim, proj_dim)
        self.key_backbone, self.key_head = frozen_copy(backbone), frozen_copy(self.head)
        self.momentum, self.temperature, self.gather = momentum, temperature, gather
        g = torch.Generator().manual_seed(0)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim, generator=g), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg, backbone, data=None, *, gather=False, **options):
        m = cfg.embed
        return cls(backbone, m.proj_dim, m.queue_size, m.momentum, m.temperature, gather=gather, **options)

    @torch.no_grad()
    def momentum_update(self) -> None:
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_head, self.head, self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (this process's, gathered from all when ``gather``) at the queue pointer."""
        if self.gather:
            keys = D.all_gather(keys)
        size = self.queue.shape[0]
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[slots[-size:]] = keys[-size:].to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def loss(self, batch: Any) -> Tuple[torch.Tensor, Dict[str, Any]]:
        (x1, x2), _ = batch
        q = self.head(self.backbone(x1))
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            k = F.normalize(self.key_head(self.key_backbone(x2)), dim=1)
        loss = infonce_queue_loss(q, k, self.queue.clone(), self.temperature)
        if self.training:
            self.enqueue(k)
        return loss, {"loss": loss.detach()}
