"""Training-step cost of the contrastive terms: CE+GC+SC step time / CE-only step time.

Same backbone, same two-view batch, same optimizer; the only difference is the loss. The
baseline (CE-only, RFS) also sees both views, so the ratio isolates what GC and SC add.
Default: the default suite's model (Conv-4 with 3 blocks, 28x28, 3x3 map), batch 64 images
x 2 views, plus a second configuration with a larger spatial map (84x84 Conv-4, 5x5 map).

    python benchmarks/perf/train_step.py            # < 2 min on 2 CPU cores

Prints a table, then one JSON line (key ``step_ratio`` for the default configuration);
also writes benchmarks/perf/results/train_step.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from scl_plugin.algorithms import SCL
from scl_plugin.backbones import create_backbone
from scl_plugin.config import ModelConfig, SCLLossConfig

CONFIGS = [
    # name, image size, in_chans, model kwargs, batch
    ("default (conv4-3, 28px, omniglot)", 28, 1, {"depth": 3}, 64),
    ("conv4, 84px (5x5 map)", 84, 3, {}, 32),
]
LOSSES = {
    "CE only": SCLLossConfig(),
    "CE+GC+SC": SCLLossConfig(lambda_global=1.0, lambda_spatial=1.0),
}


def step_time(loss_cfg, size, chans, kwargs, batch, steps=12, warmup=3) -> float:
    torch.manual_seed(0)
    backbone = create_backbone(ModelConfig(name="conv4", kwargs=kwargs), in_chans=chans, image_size=size)
    method = SCL(backbone, 64, loss_cfg)
    opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    views = (torch.randn(batch, chans, size, size), torch.randn(batch, chans, size, size))
    y = torch.randint(0, 16, (batch,))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss, _ = method.loss((views, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return sum(times[: len(times) // 2]) / (len(times) // 2)      # mean of the faster half: robust to load


def main() -> dict:
    rows = []
    for name, size, chans, kwargs, batch in CONFIGS:
        # alternate baseline and candidate twice so background load hits both alike
        t = {k: [] for k in LOSSES}
        for _ in range(2):
            for k, cfg in LOSSES.items():
                t[k].append(step_time(cfg, size, chans, kwargs, batch))
        ce, full = min(t["CE only"]), min(t["CE+GC+SC"])
        rows.append({"config": name, "batch": f"{batch}x2", "ce_ms": 1000 * ce, "ce_gc_sc_ms": 1000 * full,
                     "ratio": full / ce})
    print(f"{'config':<36} {'batch':>6} {'CE-only ms':>11} {'CE+GC+SC ms':>12} {'ratio':>6}")
    for r in rows:
        print(f"{r['config']:<36} {r['batch']:>6} {r['ce_ms']:>11.1f} {r['ce_gc_sc_ms']:>12.1f} {r['ratio']:>6.2f}")
    result = {"step_ratio": rows[0]["ratio"], "baseline": "CE-only step, same backbone and two-view batch",
              "threads": torch.get_num_threads(), "rows": rows}
    out = Path(__file__).with_name("results") / "train_step.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
