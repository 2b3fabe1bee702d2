"""Cross-process gathering for contrastive losses.

Contrastive losses compare every local anchor with the *global* batch, so the features of
all processes must be gathered. :func:`all_gather_with_grad` does that while keeping the
autograd graph: its backward all-reduces (sums) the gradient arriving at the gathered
tensor and returns this rank's slice. Rank ``r`` then holds ``sum_r' dL_r'/dx_r``; DDP's
gradient averaging divides by the world size, so the parameter gradients equal those of one
process minimising ``mean_r L_r`` on the whole batch (exact when every rank has the same
batch size, which is required and checked).

Memory cost of gathering (per process, plus the same again for the gradient in backward):
``world * B x d'`` floats for the global contrastive loss (projected features) and
``3 x world * B x HW x d'`` floats for the spatial contrastive loss (queries, keys, values).

Without an initialised process group every function is the single-process identity.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_initialized", "rank", "world_size", "all_gather", "all_gather_with_grad", "broadcast_buffers",
           "check_launch"]


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def _check_equal_sizes(x: torch.Tensor) -> None:
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    if len(set(sizes)) != 1:
        raise ValueError(f"all_gather_with_grad needs the same batch size on every process; "
                         f"got per-rank sizes {sizes}")


def _gather(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x)
    return torch.cat(out, 0)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[0]
        return _gather(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        r = rank()
        return grad[r * ctx.n:(r + 1) * ctx.n]


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` of every rank along dim 0 (rank order), without gradient."""
    if world_size() == 1:
        return x
    _check_equal_sizes(x)
    with torch.no_grad():
        return _gather(x)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``(B, ...) -> (world*B, ...)`` gather whose backward sums gradients over ranks.

    Rows ``rank*B:(rank+1)*B`` of the result are this rank's ``x`` itself (same values; the
    gradient reaching them is included in the all-reduced sum). Identity when no process
    group is initialised. Raises ``ValueError`` if batch sizes differ across ranks.
    """
    if world_size() == 1:
        return x
    _check_equal_sizes(x)
    return _AllGatherWithGrad.apply(x)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every buffer (BatchNorm running statistics...) of rank ``src`` to all ranks.

    DDP keeps *weights* identical but each rank's BatchNorm updates its running statistics
    from its own shard in the last forward; rank 0's are the ones saved in ``final.pt``, so
    after training every rank must hold them to evaluate exactly the saved model.
    """
    if not is_initialized():
        return
    for b in module.buffers():
        if b is not None:
            dist.broadcast(b.data, src=src)


def check_launch(num_processes: int, environ=None) -> None:
    """Refuse a launch where the launcher started several processes but this one runs alone
    (``accelerate launch --multi_gpu`` on a machine without GPUs): they would train unsynchronised
    copies writing the same files."""
    import os
    env = os.environ if environ is None else environ
    launched = int(env.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and num_processes == 1:
        from .config import ConfigError
        raise ConfigError(f"{launched} processes were launched but they are not connected (--multi_gpu without "
                          f"GPUs?): on CPU launch with `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node "
                          f"{launched} -m scl_plugin.cli ...` (see README, Several GPUs)")
