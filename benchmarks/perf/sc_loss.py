"""SC loss: memory-efficient implementation vs the naive vectorised one (CPU).

Run with no arguments (about 3-5 min on 2 cores). For every (B, HW) of the grid, d = 512,
d' = 80, one forward + backward of ``spatial_contrastive_loss`` (projection MLPs included,
supervised keys, two views) runs in a fresh child process, for

* ``efficient``: ``scl_plugin.losses.spatial_contrastive_loss`` (automatic chunk size);
* ``naive``: the same loss with the similarity computed in one shot, materialising the
  B x B x HW x HW attention and the B x B x HW x d' aligned values for autograd. It computes
  ``T_ab = sim(a, b | a)`` once for all ordered pairs and ``S = T + T^T`` (the cheaper of the
  two naive ways; computing both directions per pair would double its cost).

Measured: ``time_s`` = wall time of forward + backward (best of up to 3 runs while the total
stays under 4 s, else 1 run; the machine may be shared, so times are noisy);
``peak_mb`` = increase of the process's peak resident set size (``ru_maxrss``) during the
first measured forward + backward over the RSS just before it: the extra memory the step
needs, allocator caching included (inputs and parameters excluded). For the smallest
configurations this is close to the noise floor (a few MB).

The naive run is skipped where its estimated peak exceeds 16 GB. Prints a table; the last
line is a JSON object with ``mem_ratio`` and ``time_ratio`` (efficient / naive at B=256, HW=49)
and the grid, also written to ``benchmarks/perf/results/sc_loss.json``.
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

GRID_B = tuple(int(x) for x in os.environ.get("SC_BENCH_B", "64,128,256").split(","))
GRID_HW = tuple(int(x) for x in os.environ.get("SC_BENCH_HW", "4,25,49").split(","))
D, DP = 512, 80
NAIVE_LIMIT_GB = 16.0
RESULTS = Path(__file__).resolve().parent / "results" / "sc_loss.json"


def naive_estimate_gb(b: int, hw: int) -> float:
    # ~8 live tensors of B*B*HW*(HW + d') floats (measured 11.5 GB at B=256, HW=49)
    return 8 * b * b * hw * (hw + DP) * 4 / 1e9


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(impl: str, b: int, hw: int) -> dict:
    import torch
    import torch.nn.functional as F
    from scl_plugin.losses import SpatialAttention, spatial_contrastive_loss, supcon_from_similarity

    def naive_loss(feats, keys, att, tau):
        q, k, v = att.project(feats)
        w = torch.softmax(q.unsqueeze(1) @ k.transpose(1, 2).unsqueeze(0) / math.sqrt(DP), -1)
        aligned = w @ v.unsqueeze(0)                                   # (B, B, HW, d')
        t = F.cosine_similarity(v.unsqueeze(1), aligned, dim=-1).mean(-1)
        return supcon_from_similarity(t + t.t(), keys, keys, torch.arange(len(keys)), tau)

    def efficient_loss(feats, keys, att, tau):
        return spatial_contrastive_loss(feats, keys, att, tau)

    fn = naive_loss if impl == "naive" else efficient_loss
    torch.manual_seed(0)
    att = SpatialAttention(D, DP)
    side = int(math.isqrt(hw))
    keys = torch.randint(0, max(2, b // 8), (b // 2,)).repeat(2)

    def step(n):
        feats = torch.randn(n, D, side, side, requires_grad=True)
        fn(feats, keys[:n], att, 0.1).backward()

    step(4)                                            # warm-up (kernels, allocator)
    att.zero_grad(set_to_none=True)
    feats = torch.randn(b, D, side, side, requires_grad=True)
    before = _rss_mb()
    times, peak = [], None
    while len(times) < 3 and sum(times) < 4.0:
        t0 = time.perf_counter()
        fn(feats, keys, att, 0.1).backward()
        times.append(time.perf_counter() - t0)
        feats.grad = None
        att.zero_grad(set_to_none=True)
        if peak is None:
            peak = max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
    return {"time_s": min(times), "peak_mb": peak, "runs": len(times)}


def run_child(impl: str, b: int, hw: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", impl, str(b), str(hw)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    grid = []
    head = f"{'B':>4} {'HW':>3} | {'eff s':>7} {'eff MB':>8} | {'naive s':>8} {'naive MB':>9} | {'t ratio':>7} {'m ratio':>7}"
    print(head)
    print("-" * len(head))
    for b in GRID_B:
        for hw in GRID_HW:
            eff = run_child("efficient", b, hw)
            if naive_estimate_gb(b, hw) > NAIVE_LIMIT_GB:
                nai = {"skipped": f"estimated {naive_estimate_gb(b, hw):.1f} GB > {NAIVE_LIMIT_GB} GB"}
            else:
                nai = run_child("naive", b, hw)
            row = {"B": b, "HW": hw, "d": D, "proj_dim": DP, "efficient": eff, "naive": nai}
            if "time_s" in eff and "time_s" in nai:
                row["time_ratio"] = eff["time_s"] / nai["time_s"]
                row["mem_ratio"] = eff["peak_mb"] / max(nai["peak_mb"], 1e-9)
            grid.append(row)

            def f(x, k, w, p):
                return f"{x[k]:{w}.{p}f}" if k in x else f"{'-':>{w}}"
            print(f"{b:>4} {hw:>3} | {f(eff, 'time_s', 7, 2)} {f(eff, 'peak_mb', 8, 0)} | "
                  f"{f(nai, 'time_s', 8, 2)} {f(nai, 'peak_mb', 9, 0)} | "
                  f"{f(row, 'time_ratio', 7, 3)} {f(row, 'mem_ratio', 7, 3)}"
                  + ("" if "time_s" in nai else f"  naive: {nai.get('skipped') or nai.get('error')}"),
                  flush=True)
    last = next((r for r in grid if r["B"] == 256 and r["HW"] == 49), {})
    result = {"mem_ratio": last.get("mem_ratio"), "time_ratio": last.get("time_ratio"),
              "targets": {"mem_ratio": 0.25, "time_ratio": 1.0},
              "memory_measure": "peak RSS increase during one forward+backward (fresh process)",
              "grid": grid}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
