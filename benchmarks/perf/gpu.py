"""The GPU path, measured: training-step throughput, SC loss vs naive, loaders, evaluation.

    python benchmarks/perf/gpu.py        # on a CUDA machine: a few minutes; writes results/gpu.json

Without CUDA it prints one line saying so and exits 0 (nothing is measured, nothing written).
``--device cpu --tiny`` runs every code path with tiny sizes on CPU to check the script; those
figures are not GPU results and are written only where ``--out`` says (never to results/).

Measured, all on the same device in one run (baselines named per key):

* ``step``: one training step (forward, backward, SGD) of ResNet-12 at 84x84, batch 64 with
  two views (128 images) for every loss, CE vs CE+SC vs CE+GC+SC, fp32 and bf16 autocast
  (plus CE+GC+SC bf16 with ``channels_last``): ms/step, images/s, peak memory
  (``torch.cuda.max_memory_allocated``). ``sc_step_ratio`` = CE+SC / CE step time in bf16
  (goal <= 1.3); the CE baseline sees the same two-view batch, so the ratio isolates SC.
* ``sc_loss``: the SC loss alone (projections included, d = 640, d' = 80, forward+backward,
  fp32), ``scl_plugin``'s chunked form vs the naive all-pairs form that materialises the
  B x B x HW x HW attention, B in {256, 512}, HW in {25, 49}: time and peak memory above the
  inputs. ``sc_time_ratio`` / ``sc_mem_ratio`` = efficient / naive at B=256, HW=49 (goals
  <= 1.0 and <= 0.25). A naive configuration whose estimate does not fit is skipped.
* ``data``: images/s delivered by the flat two-view loader (batch 64) and the episodic loader
  (5-way 1-shot 15-query, 4 tasks per step) with the default ``data.num_workers`` on synthetic
  data written in mini-ImageNet's learn2learn format (84x84 uint8 pickles) to a temp dir,
  "standard" augmentation. ``loader_headroom`` = flat loader images/s / CE+GC+SC bf16 step
  images/s (goal >= 1.5; ``loader_headroom_ce`` against the faster CE step);
  ``episodic_loader_headroom`` = episodic loader images/s / ProtoNet bf16 step images/s.
* ``eval``: episodes/s of 5-way 1-shot and 5-shot evaluation with the linear probe
  (``classifier="logreg"``), task loading and feature extraction included.

The last printed line is the JSON also written to ``benchmarks/perf/results/gpu.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"
LOSS_WEIGHTS = {"CE": {}, "CE+SC": {"lambda_spatial": 1.0}, "CE+GC+SC": {"lambda_global": 1.0, "lambda_spatial": 1.0}}


def _import_package() -> None:
    """scl_plugin (learn2learn, timm) is imported only once CUDA is known to be there: the
    no-CUDA answer stays instant."""
    global SCL, ProtoNet, create_backbone, DataConfig, ModelConfig, SCLLossConfig
    global SpatialAttention, spatial_contrastive_loss, supcon_from_similarity
    from scl_plugin.algorithms import SCL, ProtoNet
    from scl_plugin.backbones import create_backbone
    from scl_plugin.config import DataConfig, ModelConfig, SCLLossConfig
    from scl_plugin.losses import SpatialAttention, spatial_contrastive_loss, supcon_from_similarity
FULL = dict(model_kwargs={}, size=84, batch=64, warmup=5, iters=20, sc_grid_b=(256, 512), sc_grid_hw=(25, 49), sc_d=640,
            train_classes=64, per_class=60, loader_batches=40, eval_episodes=300)
TINY = dict(model_kwargs={"widths": [8, 16, 16, 32]}, size=32, batch=4, warmup=1, iters=2, sc_grid_b=(16, 32), sc_grid_hw=(4, 9), sc_d=32,
            train_classes=8, per_class=20, loader_batches=4, eval_episodes=4)
SC_KEY = (256, 49)          # configuration of sc_time_ratio / sc_mem_ratio
DP = 80


# ----------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> float:
    """Reset the peak counter; returns the MB allocated now (the baseline of the peak)."""
    if device.type != "cuda":
        return 0.0
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device) / 2**20


def peak_mb(device: torch.device):
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def timed(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per call of ``fn`` (after ``warmup`` calls), device work included."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


# ----------------------------------------------------------------------------- training step
def step_bench(device, p, loss_name: str, precision: str, channels_last: bool = False) -> dict:
    torch.manual_seed(0)
    backbone = create_backbone(ModelConfig(name="resnet12", kwargs=p["model_kwargs"]), in_chans=3, image_size=p["size"])
    method = SCL(backbone, 64, SCLLossConfig(**LOSS_WEIGHTS[loss_name])).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    method.to(memory_format=fmt)
    opt = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    b, s = p["batch"], p["size"]
    views = tuple(torch.randn(b, 3, s, s, device=device).contiguous(memory_format=fmt) for _ in range(2))
    y = torch.randint(0, 64, (b,), device=device)

    def step():
        with autocast(device, precision):
            loss, _ = method.loss((views, y))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    base = reset_peak(device)
    sec = timed(step, device, p["warmup"], p["iters"])
    peak = peak_mb(device)
    del method, opt, views
    return {"loss": loss_name, "precision": precision, "channels_last": channels_last, "batch": f"{b}x2",
            "ms": 1000 * sec, "images_per_s": 2 * b / sec,
            "peak_mb": peak, "peak_above_start_mb": None if peak is None else peak - base}


def protonet_step_bench(device, p, precision: str = "bf16") -> dict:
    torch.manual_seed(0)
    backbone = create_backbone(ModelConfig(name="resnet12", kwargs=p["model_kwargs"]), in_chans=3, image_size=p["size"])
    method = ProtoNet(backbone, ways=5, shots=1, queries=15).to(device)
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    s = p["size"]
    y = torch.arange(5).repeat_interleave(16).to(device)
    tasks = [(torch.randn(80, 3, s, s, device=device), y) for _ in range(4)]

    def step():
        with autocast(device, precision):
            loss, _ = method.loss(tasks)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sec = timed(step, device, p["warmup"], p["iters"])
    return {"method": "protonet 5-way 1-shot 15-query x 4 tasks", "precision": precision, "ms": 1000 * sec,
            "images_per_s": 4 * 80 / sec}


# ----------------------------------------------------------------------------- SC loss alone
def naive_sc_loss(feats, keys, att, tau):
    """All pairs at once: B x B x HW x HW attention and B x B x HW x d' aligned values."""
    q, k, v = att.project(feats)
    w = torch.softmax(q.unsqueeze(1) @ k.transpose(1, 2).unsqueeze(0) / math.sqrt(q.shape[-1]), -1)
    aligned = w @ v.unsqueeze(0)
    t = F.cosine_similarity(v.unsqueeze(1), aligned, dim=-1).mean(-1)
    return supcon_from_similarity(t + t.t(), keys, keys, torch.arange(len(keys), device=feats.device), tau)


def naive_estimate_mb(b: int, hw: int) -> float:
    # ~8 live tensors of B*B*HW*(HW + d') floats (the CPU benchmark's measured rule)
    return 8 * b * b * hw * (hw + DP) * 4 / 2**20


def sc_bench(device, p, impl: str, b: int, hw: int) -> dict:
    torch.manual_seed(0)
    d, side = p["sc_d"], int(math.isqrt(hw))
    att = SpatialAttention(d, DP).to(device)
    feats = torch.randn(b, d, side, side, device=device, requires_grad=True)
    keys = torch.randint(0, max(2, b // 8), (b // 2,), device=device).repeat(2)
    fn = naive_sc_loss if impl == "naive" else (lambda f, k, a, t: spatial_contrastive_loss(f, k, a, t))

    def step():
        fn(feats, keys, att, 0.1).backward()
        feats.grad = None
        att.zero_grad(set_to_none=True)

    try:
        step()                                                   # warm-up (kernels, allocator)
        base = reset_peak(device)
        sec = timed(step, device, 0, max(1, p["iters"] // 4))
        peak = peak_mb(device)
        return {"time_s": sec, "peak_mb": None if peak is None else peak - base}
    except RuntimeError as e:
        if device.type == "cuda" and is_oom(e):
            return {"oom": True}
        raise
    finally:
        del att, feats
        if device.type == "cuda":
            torch.cuda.empty_cache()


def sc_grid(device, p) -> list:
    free_mb = torch.cuda.mem_get_info(device)[0] / 2**20 if device.type == "cuda" else float("inf")
    rows = []
    for b in p["sc_grid_b"]:
        for hw in p["sc_grid_hw"]:
            row = {"B": b, "HW": hw, "d": p["sc_d"], "proj_dim": DP, "efficient": sc_bench(device, p, "efficient", b, hw)}
            est = naive_estimate_mb(b, hw)
            row["naive"] = ({"skipped": f"estimated {est / 1024:.1f} GiB > 80% of {free_mb / 1024:.1f} GiB free"}
                            if est > 0.8 * free_mb else sc_bench(device, p, "naive", b, hw))
            e, n = row["efficient"], row["naive"]
            if "time_s" in e and "time_s" in n:
                row["time_ratio"] = e["time_s"] / n["time_s"]
                if e["peak_mb"] is not None and n["peak_mb"]:
                    row["mem_ratio"] = e["peak_mb"] / n["peak_mb"]
            rows.append(row)
            print(f"  SC B={b:<4} HW={hw:<3} efficient {_fmt(e)} | naive {_fmt(n)}", flush=True)
    return rows


def _fmt(r: dict) -> str:
    if "time_s" not in r:
        return "oom" if r.get("oom") else r.get("skipped", "-")
    mem = "" if r["peak_mb"] is None else f", {r['peak_mb']:.0f} MB"
    return f"{1000 * r['time_s']:.1f} ms{mem}"


# ----------------------------------------------------------------------------- data and evaluation
def write_mini_imagenet(root: Path, p) -> None:
    """Random 84x84 uint8 images in learn2learn's mini-ImageNet pickle format."""
    rng = np.random.default_rng(0)
    k = 0
    for mode, n in (("train", p["train_classes"]), ("validation", 16), ("test", 20)):
        per = p["per_class"]
        imgs = rng.integers(0, 256, size=(n * per, 84, 84, 3), dtype=np.uint8)
        class_dict = {f"n{k + c:08d}": list(range(c * per, (c + 1) * per)) for c in range(n)}
        k += n
        with open(root / f"mini-imagenet-cache-{mode}.pkl", "wb") as f:
            pickle.dump({"image_data": imgs, "class_dict": class_dict}, f)


def loader_rate(batches, n: int, images_per_batch) -> float:
    """Images/s over ``n`` batches after the first two (worker start-up), across epochs."""
    got, t0, epoch = 0, None, 0
    while True:
        for batch in batches(epoch, 0):
            got += 1
            if got == 2:
                t0 = time.perf_counter()
            if got == n + 2:
                return n * images_per_batch / (time.perf_counter() - t0)
        epoch += 1


def data_and_eval(device, p, work: Path) -> dict:
    from scl_plugin.data import build_fewshot
    from scl_plugin.data.episodes import make_taskset
    from scl_plugin.evaluation import evaluate
    from scl_plugin.training import EpisodeBatches, FlatBatches
    from scl_plugin.training.batches import resolve_num_workers

    root = work / "mini"
    root.mkdir()
    write_mini_imagenet(root, p)
    cfg = DataConfig(dataset="mini-imagenet", root=str(root), cache_dir=str(work / "cache"), image_size=84,
                     augment="standard", ways=5, shots=1, queries=15)
    data = build_fewshot(cfg, seed=0)
    workers = resolve_num_workers(cfg.num_workers)
    out = {"num_workers": workers, "synthetic_train_images": p["train_classes"] * p["per_class"]}
    flat = FlatBatches(data.pretrain_set(two_view=True), batch_size=p["batch"], seed=0, num_workers=cfg.num_workers)
    out["flat_loader_images_per_s"] = loader_rate(flat, p["loader_batches"], 2 * p["batch"])
    del flat
    episodes = EpisodeBatches(data.train_tasks, meta_batch_size=4, steps_per_epoch=100, num_workers=cfg.num_workers)
    out["episodic_loader_images_per_s"] = loader_rate(episodes, p["loader_batches"], 4 * 5 * 16)
    del episodes

    torch.manual_seed(0)
    backbone = create_backbone(ModelConfig(name="resnet12", kwargs=p["model_kwargs"]), in_chans=3, image_size=84).to(device).eval()
    for shots in (1, 5):
        tasks = make_taskset(data.test_meta, 5, shots, 15, p["eval_episodes"], seed="gpu-bench", where="bench test")
        evaluate(backbone, tasks, 5, shots, 15, classifier="logreg", progress=False, num_episodes=min(2, len(tasks)))
        sync(device)
        t0 = time.perf_counter()
        evaluate(backbone, tasks, 5, shots, 15, classifier="logreg", progress=False)
        sync(device)
        out[f"eval_5way_{shots}shot_episodes_per_s"] = p["eval_episodes"] / (time.perf_counter() - t0)
    return out


# ----------------------------------------------------------------------------- main
def environment(device: torch.device) -> dict:
    env = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["device_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    else:
        env["device_name"] = "cpu (debug run: not a GPU result)"
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)     # cpu: debug the script
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tiny sizes, for debugging
    ap.add_argument("--out", default=None, help="JSON output (default on CUDA: benchmarks/perf/results/gpu.json)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu.py: no CUDA device (torch.cuda.is_available() is False); nothing measured")
        return 0
    _import_package()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    p = TINY if args.tiny else FULL
    out_path = Path(args.out) if args.out else (RESULTS if device.type == "cuda" and not args.tiny else None)
    result = {**environment(device), "tiny": args.tiny, "default_num_workers": None}
    print(f"device: {result['device_name']}; torch {result['torch']}, CUDA {result['cuda']}", flush=True)

    print(f"training step, ResNet-12 {p['size']}x{p['size']}, batch {p['batch']}x2 views:", flush=True)
    steps = []
    for precision in ("fp32", "bf16"):
        for name in LOSS_WEIGHTS:
            steps.append(step_bench(device, p, name, precision))
            r = steps[-1]
            print(f"  {name:<9} {precision}: {r['ms']:8.1f} ms  {r['images_per_s']:8.0f} img/s  "
                  f"peak {r['peak_mb'] if r['peak_mb'] is None else round(r['peak_mb'])} MB", flush=True)
    steps.append(step_bench(device, p, "CE+GC+SC", "bf16", channels_last=True))
    print(f"  CE+GC+SC bf16 channels_last: {steps[-1]['ms']:8.1f} ms", flush=True)
    ms = {(r["loss"], r["precision"], r["channels_last"]): r["ms"] for r in steps}
    ips = {(r["loss"], r["precision"], r["channels_last"]): r["images_per_s"] for r in steps}
    result["step"] = steps
    result["sc_step_ratio"] = ms[("CE+SC", "bf16", False)] / ms[("CE", "bf16", False)]
    result["sc_step_ratio_fp32"] = ms[("CE+SC", "fp32", False)] / ms[("CE", "fp32", False)]
    result["bf16_speedup_ce_gc_sc"] = ms[("CE+GC+SC", "fp32", False)] / ms[("CE+GC+SC", "bf16", False)]
    result["channels_last_speedup_ce_gc_sc_bf16"] = ms[("CE+GC+SC", "bf16", False)] / ms[("CE+GC+SC", "bf16", True)]
    proto = protonet_step_bench(device, p)
    result["protonet_step"] = proto

    print("SC loss alone, efficient vs naive (fp32, forward+backward):", flush=True)
    grid = sc_grid(device, p)
    result["sc_loss"] = grid
    key_b, key_hw = SC_KEY if not args.tiny else (p["sc_grid_b"][0], p["sc_grid_hw"][-1])
    key = next((r for r in grid if r["B"] == key_b and r["HW"] == key_hw), {})
    result["sc_time_ratio"] = key.get("time_ratio")
    result["sc_mem_ratio"] = key.get("mem_ratio")

    print("data loaders (default workers) and evaluation:", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = data_and_eval(device, p, Path(tmp))
    result["data"] = data
    result["default_num_workers"] = data["num_workers"]
    result["loader_headroom"] = data["flat_loader_images_per_s"] / ips[("CE+GC+SC", "bf16", False)]
    result["loader_headroom_ce"] = data["flat_loader_images_per_s"] / ips[("CE", "bf16", False)]
    result["episodic_loader_headroom"] = data["episodic_loader_images_per_s"] / proto["images_per_s"]
    for k in ("flat_loader_images_per_s", "episodic_loader_images_per_s", "eval_5way_1shot_episodes_per_s",
              "eval_5way_5shot_episodes_per_s"):
        print(f"  {k}: {data[k]:.1f}", flush=True)
    result["goals"] = {"sc_step_ratio": "<= 1.3 (bf16)", "sc_mem_ratio": "<= 0.25", "sc_time_ratio": "<= 1.0",
                       "loader_headroom": ">= 1.5"}
    result["baselines"] = {"sc_step_ratio": "CE step on the same two-view batch, bf16",
                           "sc_time_ratio": "naive all-pairs SC loss, B=256, HW=49, fp32",
                           "sc_mem_ratio": "naive all-pairs SC loss, B=256, HW=49, fp32",
                           "loader_headroom": "CE+GC+SC bf16 step images/s (loader_headroom_ce: CE bf16 step)",
                           "episodic_loader_headroom": "ProtoNet bf16 step images/s"}
    summary = {k: result[k] for k in ("sc_step_ratio", "sc_time_ratio", "sc_mem_ratio", "loader_headroom")}
    print("summary: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
