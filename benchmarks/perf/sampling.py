"""Episode sampling throughput: our seeded FusedNWaysKShots task sets vs. learn2learn's NWays+KShots.

Runs with no arguments in well under 2 minutes on 2 CPU cores:

* 5-way 5-shot 15-query, 84x84 RGB, on a mini-ImageNet-format pickle written to a temp dir
  (20 classes x 60 random images; read through the real mini-ImageNet loader);
* the same episode shape on omniglot-small 28x28 (../shared/data; skipped if absent).

Baseline, measured in the same run on the same MetaDataset: a plain ``l2l.data.TaskDataset``
with ``[NWays, KShots, LoadData, RemapLabels, ConsecutiveLabels]`` (NWays first, the only
position where it works on Python 3.11). Prints a table; the last line is one JSON object
(``episodes_per_s`` = ours on the 84x84 set), also written to benchmarks/perf/results/sampling.json.
"""
from __future__ import annotations

import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

WAYS, SHOTS, QUERIES = 5, 5, 15
SECONDS = 1.5
ROUNDS = 2   # interleaved rounds, best kept: the machine may be shared, this limits noise


def _rate(sample, seconds: float = SECONDS) -> float:
    sample()                                       # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, y = sample()
        assert x.shape[0] == WAYS * (SHOTS + QUERIES)
        n += 1
    return n / (time.perf_counter() - t0)


def _compare(ours, base):
    """Best-of-ROUNDS rates of two samplers, measured alternately."""
    o, b = [], []
    for _ in range(ROUNDS):
        o.append(_rate(ours))
        if base is not None:
            b.append(_rate(base))
    return max(o), (max(b) if b else float("nan"))


def _baseline(meta):
    import learn2learn as l2l
    T = l2l.data.transforms
    ts = l2l.data.TaskDataset(meta, [T.NWays(meta, n=WAYS), T.KShots(meta, k=SHOTS + QUERIES),
                                     T.LoadData(meta), T.RemapLabels(meta),
                                     T.ConsecutiveLabels(meta)], num_tasks=-1)
    return ts.sample


def _make_mini(root: Path, classes: int = 20, per_class: int = 60) -> None:
    rng = np.random.default_rng(0)
    for mode in ("train", "validation", "test"):
        imgs = rng.integers(0, 256, size=(classes * per_class, 84, 84, 3), dtype=np.uint8)
        cd = {f"{mode}{c:03d}": list(range(c * per_class, (c + 1) * per_class))
              for c in range(classes)}
        with open(root / f"mini-imagenet-cache-{mode}.pkl", "wb") as f:
            pickle.dump({"image_data": imgs, "class_dict": cd}, f)


def main() -> dict:
    import torch
    from scl_plugin.config import DataConfig
    from scl_plugin.data import build_fewshot

    torch.set_num_threads(1)   # per-image ops are tiny: OpenMP threads only add contention
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _make_mini(Path(tmp))
        cfg = DataConfig(dataset="mini-imagenet", root=tmp, image_size=84, ways=WAYS, shots=SHOTS,
                         queries=QUERIES, augment="none", val_episodes=10, test_episodes=10,
                         cache_dir=os.path.join(tmp, "cache"))
        data = build_fewshot(cfg)
        rows.append(("mini-format 84x84",
                      *_compare(data.train_tasks.sample, _baseline(data.train_meta))))
        cfg_aug = DataConfig(**{**cfg.__dict__, "augment": "standard"})
        rows.append(("mini-format 84x84 +standard aug",
                     *_compare(build_fewshot(cfg_aug).train_tasks.sample, None)))

    shared = REPO / ".." / "shared" / "data"
    if (shared / "omniglot" / "images_background_small1.zip").is_file():
        with tempfile.TemporaryDirectory() as cache:
            cfg = DataConfig(root=str(shared), image_size=28, ways=WAYS, shots=SHOTS,
                             queries=QUERIES, augment="none", val_episodes=10, test_episodes=10,
                             cache_dir=cache)
            data = build_fewshot(cfg)
            rows.append(("omniglot-small 28x28",
                         *_compare(data.train_tasks.sample, _baseline(data.train_meta))))

    print(f"\n{WAYS}-way {SHOTS}-shot {QUERIES}-query episodes per second (1 CPU thread)")
    print(f"{'dataset':<34}{'ours (Fused, seeded)':>22}{'l2l NWays+KShots':>18}{'ratio':>8}")
    for name, o, b in rows:
        ratio = o / b if b == b else float("nan")
        print(f"{name:<34}{o:>22.1f}{b:>18.1f}{ratio:>8.2f}")
    result = {
        "benchmark": "episode_sampling",
        "episode": f"{WAYS}w{SHOTS}s{QUERIES}q",
        "episodes_per_s": round(rows[0][1], 2),
        "baseline": "l2l TaskDataset [NWays, KShots, LoadData, RemapLabels, ConsecutiveLabels]",
        "baseline_episodes_per_s": round(rows[0][2], 2),
        "ratio_vs_baseline": round(rows[0][1] / rows[0][2], 3),
        "rows": {name: {"ours": round(o, 2), "baseline": (round(b, 2) if b == b else None)}
                 for name, o, b in rows},
    }
    out = REPO / "benchmarks" / "perf" / "results" / "sampling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
