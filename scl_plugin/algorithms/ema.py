"""Exponential moving averages of a network's weights (MoCo's key encoder, BYOL's target).

    theta_target <- m * theta_target + (1 - m) * theta_online          (parameters only)

Buffers (BatchNorm statistics) are not averaged: the target network runs in train mode and
keeps its own, as in both papers' code. BYOL anneals ``m`` from ``base`` to 1 with a cosine,
``m_k = 1 - (1 - base) * (cos(pi k / K) + 1) / 2`` at step ``k`` of ``K`` (Grill et al. 2020, Sec. 3.2).

Under data parallelism the online parameters are identical on every process after each
optimizer step (DDP averages gradients), so every process computes the same target.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ema_update", "byol_momentum", "frozen_copy"]


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off (the initial target = the online network)."""
    import copy
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)


def byol_momentum(step: int, total_steps: int, base: float) -> float:
    """BYOL's cosine schedule; ``total_steps <= 0`` keeps ``base`` constant."""
    if total_steps <= 0:
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1.0) / 2.0
