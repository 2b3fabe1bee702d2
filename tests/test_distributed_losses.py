"""2 gloo CPU processes with gathered losses == 1 process on the whole batch (loss and grads)."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from scl_plugin import distributed as D
from scl_plugin.losses import ProjectionHead, SpatialAttention, global_contrastive_loss, \
    spatial_contrastive_loss

WORLD = 2
N_IMAGES = 4          # global batch: 4 images x 2 views = 8 samples, 4 per process
LABELS = torch.tensor([0, 1, 1, 0])
CASES = [("gc", "supervised"), ("gc", "selfsup"), ("sc", "supervised"), ("sc", "selfsup")]


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = ProjectionHead(6, 5)
        self.attention = SpatialAttention(6, 4)

    def loss(self, x, keys, kind, gather):
        f = torch.relu(self.conv(x))
        if kind == "gc":
            return global_contrastive_loss(self.head(f.mean((2, 3))), keys, 0.2, gather=gather)
        return spatial_contrastive_loss(f, keys, self.attention, 0.1, chunk_size=3, gather=gather)


def global_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * N_IMAGES, 3, 3, 3, generator=g, dtype=torch.float64)
    keys = {"supervised": LABELS.repeat(2), "selfsup": torch.arange(N_IMAGES).repeat(2)}
    return x, keys


def run_case(kind, mode, rank=0, world=1):
    torch.manual_seed(0)
    model = TinyModel().double()
    x, keys = global_batch()
    n = x.shape[0] // world   # contiguous split: rank 0 holds the first views, rank 1 the second
    sl = slice(rank * n, (rank + 1) * n)
    loss = model.loss(x[sl], keys[mode][sl], kind, gather=world > 1)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    loss = loss.detach().clone()
    if world > 1:   # what DDP does: average gradients (and report the mean loss)
        for t in grads + [loss]:
            dist.all_reduce(t)
            t /= world
    return loss, grads


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {case: run_case(*case, rank=rank, world=WORLD) for case in CASES}
        try:   # unequal per-rank batch sizes are refused
            D.all_gather_with_grad(torch.zeros(2 + rank, 3))
            results["unequal_error"] = False
        except ValueError:
            results["unequal_error"] = True
        results["gathered"] = D.all_gather(torch.tensor([rank, 10 + rank]))
        bn = nn.BatchNorm2d(3).train()        # each rank's last forward sees its own shard
        bn(torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(rank)))
        results["bn_before"] = [b.clone() for b in bn.buffers()]
        D.broadcast_buffers(bn)
        results["bn_after"] = [b.clone() for b in bn.buffers()]
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("kind,mode", CASES)
def test_two_processes_equal_one(distributed_results, kind, mode):
    ref_loss, ref_grads = run_case(kind, mode)
    for res in distributed_results:
        loss, grads = res[(kind, mode)]
        assert torch.allclose(loss, ref_loss, atol=1e-10, rtol=1e-5)
        assert len(grads) == len(ref_grads) > 0
        for g, r in zip(grads, ref_grads):
            assert torch.allclose(g, r, atol=1e-10, rtol=1e-5)


def test_gather_helpers(distributed_results):
    for res in distributed_results:
        assert res["unequal_error"]
        assert res["gathered"].tolist() == [0, 10, 1, 11]
    assert D.world_size() == 1 and D.rank() == 0
    x = torch.randn(3, 2)
    assert D.all_gather_with_grad(x) is x


def test_buffers_are_rank_0s_on_every_rank(distributed_results):
    """After DDP training every rank must hold the saved model (rank 0's BatchNorm statistics)."""
    r0, r1 = distributed_results
    assert not torch.equal(r0["bn_before"][0], r1["bn_before"][0])
    for a, b, ref in zip(r0["bn_after"], r1["bn_after"], r0["bn_before"]):
        assert torch.equal(a, ref) and torch.equal(b, ref)
