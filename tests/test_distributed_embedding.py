"""2 gloo CPU processes == 1 process on the whole batch for SimCLR's gathered NT-Xent and MoCo's
gathered queue (issue 19): loss, gradients, and the queue after the step."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from scl_plugin.algorithms import MoCo, SimCLR

WORLD, N_IMAGES = 2, 4      # 4 images, 2 per process


class TinyBackbone(nn.Module):   # no BatchNorm: per-process batch statistics would differ by design
    feature_dim = 6

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean((2, 3))


def build(kind, gather):
    torch.manual_seed(0)
    if kind == "simclr":
        return SimCLR(TinyBackbone(), proj_dim=5, temperature=0.3, gather=gather).double()
    return MoCo(TinyBackbone(), proj_dim=5, queue_size=7, momentum=0.9, temperature=0.2, gather=gather).double()


def run(kind, rank=0, world=1):
    model = build(kind, gather=world > 1)
    g = torch.Generator().manual_seed(1)
    v1, v2 = (torch.randn(N_IMAGES, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    n = N_IMAGES // world
    sl = slice(rank * n, (rank + 1) * n)
    with torch.no_grad():    # the step's key encoder must differ from the query encoder
        for p in model.backbone.parameters():
            p.add_(0.1)
    loss, _ = model.loss(((v1[sl], v2[sl]), torch.zeros(n, dtype=torch.long)))
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    loss = loss.detach().clone()
    if world > 1:            # what DDP does: average gradients (and the reported loss)
        for t in grads + [loss]:
            dist.all_reduce(t)
            t /= world
    extra = (model.queue.clone(), int(model.queue_ptr), [p.clone() for p in model.key_backbone.parameters()]) \
        if kind == "moco" else None
    return loss, grads, extra


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.save({k: run(k, rank, WORLD) for k in ("simclr", "moco")}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist-embed")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("kind", ["simclr", "moco"])
def test_two_processes_equal_one(results, kind):
    ref_loss, ref_grads, ref_extra = run(kind)
    for res in results:
        loss, grads, extra = res[kind]
        assert torch.allclose(loss, ref_loss, atol=1e-10, rtol=1e-6)
        assert len(grads) == len(ref_grads) > 0
        for g, r in zip(grads, ref_grads):
            assert torch.allclose(g, r, atol=1e-10, rtol=1e-6)
        if kind == "moco":   # same queue (global batch's keys, rank order), pointer and key encoder everywhere
            assert torch.allclose(extra[0], ref_extra[0], atol=1e-12)
            assert extra[1] == ref_extra[1] == N_IMAGES
            assert all(torch.allclose(a, b) for a, b in zip(extra[2], ref_extra[2]))
