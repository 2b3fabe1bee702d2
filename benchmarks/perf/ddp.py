"""Data-parallel SCL: 2 processes with batch B each against 1 process with batch 2B, same data.

Measures, for a CE+GC+SC training step (Conv-4, 3 blocks, 28x28, the default suite's model):

* the gathered-negatives loss: each of the 2 gloo processes contrasts its B anchors against the
  whole global batch (the gradient-carrying all-gather), so the mean of the two processes'
  losses must equal the 1-process loss on the 2B images up to rounding. BatchNorm is put in
  eval mode for this comparison only (per-process batch statistics are not the global ones:
  that difference is BatchNorm's, not the gather's);
* one training step's wall time (forward, backward, DDP's gradient all-reduce, SGD step;
  ``find_unused_parameters=False``, as the trainer uses for this method), median of the faster
  half of the steps; the ratio is 2-process step time / 1-process step time.

On CPU the two processes share the machine's cores, so the ratio says what the gather and the
all-reduce cost, not a speed-up. Run::

    python benchmarks/perf/ddp.py            # ~15 s on 2 CPU cores; --batch 32 --steps 10

Prints a table; the last line is JSON (also written to benchmarks/perf/results/ddp.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scl_plugin.algorithms import SCL
from scl_plugin.backbones import create_backbone
from scl_plugin.config import ModelConfig, SCLLossConfig

LOSS = SCLLossConfig(lambda_global=1.0, lambda_spatial=1.0)


def make_method(gather: bool) -> SCL:
    torch.manual_seed(0)
    backbone = create_backbone(ModelConfig(name="conv4", kwargs={"depth": 3}), in_chans=1, image_size=28)
    return SCL(backbone, 16, LOSS, gather=gather)


def make_batch(n: int):
    g = torch.Generator().manual_seed(1)
    views = (torch.rand(n, 1, 28, 28, generator=g), torch.rand(n, 1, 28, 28, generator=g))
    return views, torch.randint(0, 16, (n,), generator=g)


def shard(batch, rank: int, world: int):
    (v1, v2), y = batch
    n = y.shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    return (v1[sl], v2[sl]), y[sl]


def eval_bn_loss(method: SCL, batch) -> float:
    for m in method.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    loss, _ = method.loss(batch)
    method.train()
    return float(loss.detach())


def step_times(model, method: SCL, batch, steps: int) -> float:
    opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    times = []
    for i in range(steps + 2):
        if dist.is_initialized():
            dist.barrier()
        t0 = time.perf_counter()
        loss, _ = model(batch) if model is not method else method.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    half = times[: max(len(times) // 2, 1)]
    return sum(half) / len(half)


class _Loss(torch.nn.Module):
    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.loss(batch)


def _worker(rank: int, world: int, init: str, out: str, batch_size: int, steps: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        method = make_method(gather=True)
        mine = shard(make_batch(2 * batch_size), rank, world)
        loss = torch.tensor(eval_bn_loss(method, mine), dtype=torch.float64)
        dist.all_reduce(loss)
        ddp = torch.nn.parallel.DistributedDataParallel(_Loss(method), find_unused_parameters=False)
        seconds = torch.tensor(step_times(ddp, method, mine, steps))
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)        # a step ends when the slowest rank does
        if rank == 0:
            Path(out).write_text(json.dumps({"loss": float(loss) / world, "step_s": float(seconds)}))
    finally:
        dist.destroy_process_group()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32, help="B: images per process (two views each)")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(1)          # each of the 2 processes gets one thread too: same compute per process
    one = make_method(gather=False)
    full = make_batch(2 * args.batch)
    loss_one = eval_bn_loss(one, full)
    step_one = step_times(one, one, full, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.json")
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), out, args.batch, args.steps), nprocs=2, join=True)
        two = json.loads(Path(out).read_text())
    result = {"benchmark": "ddp", "baseline": "1 process, batch 2B", "batch_per_process": args.batch,
              "loss_1proc": loss_one, "loss_2proc": two["loss"], "loss_abs_diff": abs(loss_one - two["loss"]),
              "step_s_1proc": round(step_one, 5), "step_s_2proc": round(two["step_s"], 5),
              "step_time_ratio": round(two["step_s"] / step_one, 3), "threads_per_process": 1}
    print(f"{'':28s}{'1 process, 2B':>16s}{'2 processes, B':>16s}")
    print(f"{'gathered CE+GC+SC loss':28s}{loss_one:16.8f}{two['loss']:16.8f}   |diff| {result['loss_abs_diff']:.2e}")
    print(f"{'step time (s)':28s}{step_one:16.4f}{two['step_s']:16.4f}   ratio {result['step_time_ratio']:.2f}")
    path = Path(__file__).resolve().parent / "results" / "ddp.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
