"""Loading a full-size mini-ImageNet train split: our uint8 memory-mapped cache vs. learn2learn.

Writes a synthetic mini-ImageNet train split in learn2learn's format (``mini-imagenet-cache-
train.pkl``: ``image_data`` N x 84 x 84 x 3 uint8 + ``class_dict``; default N = 38,400 = 64 x 600,
813 MB, the real size; tiny val/test files next to it) to a temp dir, then measures, each in a
fresh process (peak RSS = ``VmHWM`` of that process, torch import included):

* ``cold``: ``load_splits('mini-imagenet', ...)`` with an empty cache (decodes the pickle once and
  writes the ``.npy`` cache) and takes a first batch of 64 images;
* ``warm``: the same call in a new process (memory-maps the cache) and a first batch;
  ``peak_rss_gb_*`` are the peaks at that point (imports of torch/timm/learn2learn included,
  ``import_rss_gb`` alone); each process then reads every image once (``*_read_all``: the mapped
  pages it touched count in its RSS but are the page cache, shared by every reader);
* ``two readers``: two processes reading the whole warm split at the same time: their RSS and
  PSS (proportional set size: shared pages counted once in total), from /proc/<pid>/smaps_rollup;
* baseline, same file, same run: ``learn2learn.vision.datasets.MiniImagenet(root, 'train')``.

Goal (issue 15): warm peak RSS <= 1.5 GB, warm load <= 2 s, cold peak <= 2x the uint8 size.
The learn2learn baseline peaks at 4.6 GB at full size (measured); on a small shared machine run a fraction
with ``--images 9600`` (``--no-baseline`` skips it). Prints a table; the last line is one JSON
object, also written to benchmarks/perf/results/data_load.json.

    python benchmarks/perf/data_load.py                 # full size (~6 GB free RAM for the baseline)
    python benchmarks/perf/data_load.py --images 9600   # a quarter
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
GB = 1024 ** 3


def _peak_rss_gb() -> float:
    """VmHWM: peak RSS of this process image. (``ru_maxrss`` would not do: Linux carries it over
    from the parent through fork + exec, and the parent held the whole array to write the pickle.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / GB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _smaps(pid="self") -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        k, v = line.split(":", 1)
        out[k.strip()] = int(v.split()[0]) * 1024 / GB
    return out


def write_split(root: Path, n_images: int, n_classes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for mode, n, k in (("train", n_images, n_classes), ("validation", 320, 16), ("test", 400, 20)):
        images = np.empty((n, 84, 84, 3), np.uint8)
        for s in range(0, n, 4096):
            images[s:s + 4096] = rng.integers(0, 256, images[s:s + 4096].shape, dtype=np.uint8)
        per = n // k
        class_dict = {f"n{mode[0]}{c:07d}": list(range(c * per, (c + 1) * per if c < k - 1 else n))
                      for c in range(k)}
        with open(root / f"mini-imagenet-cache-{mode}.pkl", "wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f, protocol=4)
        del images


def child(kind: str, root: str, cache: str, sync: str) -> None:
    import torch  # noqa: F401  (imports are not part of a load: timed and measured apart)
    import learn2learn as l2l
    from scl_plugin.data import load_splits
    import_rss = _smaps()["Rss"]
    t0 = time.perf_counter()
    if kind == "baseline":
        ds = l2l.vision.datasets.MiniImagenet(root=root, mode="train")
        load_s = time.perf_counter() - t0
        first_batch = ds.x[:64].clone()
        start_rss = _peak_rss_gb()
        total = sum(float(ds.x[s:s + 2048].double().sum()) for s in range(0, len(ds.x), 2048))
        n = len(ds)
    else:
        split = load_splits("mini-imagenet", root, image_size=84, cache_dir=cache)["train"]
        load_s = time.perf_counter() - t0
        first_batch = torch.stack([split.source[i] for i in range(64)])
        start_rss = _peak_rss_gb()                   # loaded + one batch: what training starts with
        arr = split.source.array                     # the memory map; read every image once
        total = sum(float(arr[s:s + 2048].sum(dtype=np.uint64)) for s in range(0, len(arr), 2048))
        n = len(split.labels)
    assert first_batch.shape == (64, 3, 84, 84)
    result = {"kind": kind, "load_s": load_s, "read_s": time.perf_counter() - t0, "n": n,
              "import_rss_gb": import_rss, "start_peak_rss_gb": start_rss,
              "peak_rss_gb": _peak_rss_gb(), "checksum": total}
    if sync:                                          # two readers: measure while both are alive
        Path(sync, f"{os.getpid()}.done").touch()
        deadline = time.time() + 120
        while len(list(Path(sync).glob("*.done"))) < 2 and time.time() < deadline:
            time.sleep(0.05)
        sm = _smaps()
        result.update(rss_gb=sm["Rss"], pss_gb=sm["Pss"])
        time.sleep(0.5)
    print(json.dumps(result))


def _spawn(kind, root, cache, sync=""):
    return subprocess.Popen([sys.executable, __file__, "--child", kind, root, cache, sync],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))


def _run(kind, root, cache):
    p = _spawn(kind, root, cache)
    out, _ = p.communicate()
    if p.returncode:
        raise SystemExit(f"{kind} child failed ({p.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=38400, help="train images (38,400 = full size)")
    ap.add_argument("--classes", type=int, default=64)
    ap.add_argument("--no-baseline", action="store_true", help="skip learn2learn's loader (~14x the uint8 size in RAM)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    uint8_gb = args.images * 84 * 84 * 3 / GB
    with tempfile.TemporaryDirectory(prefix="scl-data-load-") as tmp:
        root, cache = Path(tmp) / "mini", Path(tmp) / "cache"
        t0 = time.perf_counter()
        write_split(root, args.images, args.classes)
        print(f"wrote {args.images} images ({uint8_gb:.3f} GB uint8) in {time.perf_counter() - t0:.1f} s")
        cold = _run("cold", str(root), str(cache))
        warm = _run("warm", str(root), str(cache))
        sync = Path(tmp) / "sync"
        sync.mkdir()
        procs = [_spawn("warm", str(root), str(cache), str(sync)) for _ in range(2)]
        two = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        base = None if args.no_baseline else _run("baseline", str(root), str(cache))
    assert cold["checksum"] == warm["checksum"] and (base is None or base["checksum"] == cold["checksum"])
    rows = [("ours, cold (builds cache)", cold), ("ours, warm (memory map)", warm)] + \
        ([("learn2learn MiniImagenet (baseline)", base)] if base else [])
    print(f"\n{'loader':38s} {'load s':>8s} {'load+read s':>12s} {'RSS after import':>17s} "
          f"{'peak RSS load+batch':>20s} {'peak RSS read all':>18s}  (GB)")
    for name, r in rows:
        print(f"{name:38s} {r['load_s']:8.2f} {r['read_s']:12.2f} {r['import_rss_gb']:17.3f} "
              f"{r['start_peak_rss_gb']:20.3f} {r['peak_rss_gb']:18.3f}")
    print(f"two warm readers at once: RSS {two[0]['rss_gb']:.3f} + {two[1]['rss_gb']:.3f} GB, "
          f"PSS {two[0]['pss_gb']:.3f} + {two[1]['pss_gb']:.3f} GB (shared pages counted once)")
    result = {
        "images": args.images, "uint8_gb": round(uint8_gb, 4),
        "import_rss_gb": round(warm["import_rss_gb"], 3),
        "peak_rss_gb_cold": round(cold["start_peak_rss_gb"], 3), "cold_load_s": round(cold["load_s"], 2),
        "peak_rss_gb_warm": round(warm["start_peak_rss_gb"], 3), "warm_load_s": round(warm["load_s"], 3),
        "peak_rss_gb_warm_read_all": round(warm["peak_rss_gb"], 3),
        "two_readers_rss_gb": round(two[0]["rss_gb"] + two[1]["rss_gb"], 3),
        "two_readers_pss_gb": round(two[0]["pss_gb"] + two[1]["pss_gb"], 3),
        "baseline_peak_rss_gb": round(base["start_peak_rss_gb"], 3) if base else None,
        "baseline_load_s": round(base["load_s"], 2) if base else None,
        "peak_rss_ratio_baseline_over_warm":
            round(base["start_peak_rss_gb"] / warm["start_peak_rss_gb"], 1) if base else None,
        # cold peak above what the imports alone hold, against the uint8 size
        "cold_extra_over_uint8": round((cold["start_peak_rss_gb"] - cold["import_rss_gb"]) / uint8_gb, 2),
        "goals_met": bool(warm["start_peak_rss_gb"] <= 1.5 and warm["load_s"] <= 2.0
                          and cold["start_peak_rss_gb"] - cold["import_rss_gb"] <= 2 * uint8_gb),
    }
    out = REPO / "benchmarks" / "perf" / "results" / "data_load.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
