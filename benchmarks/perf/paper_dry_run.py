"""A full-size dry run of every paper recipe: what a reproduction costs, measured before it starts.

    python benchmarks/perf/paper_dry_run.py              # GPU: the planning table (writes results/)
    python benchmarks/perf/paper_dry_run.py --steps 2    # CPU (same as no arguments there)

Measured on CPU (2 cores, torch 2.14, data already generated): 4.1 min wall on a quiet machine
(load average 0.2 -> 1.8), 7.1 CPU-minutes (11m45s while other jobs held the cores); about 60%
of it is the evaluation episodes of the six 84 px configs (a 5-shot cross-domain episode
forwards 10 x 25 + 75 = 325 images). Generating the data the first time
adds about a minute (4.9 GB with the loaders' cache).

For each paper config (``configs/paper/*.yaml``), as shipped:

1. **Data at its real size and on-disk format**, generated once into ``--data-dir`` (default
   ``~/.cache/scl_plugin/paper_dry_run``, with the loaders' uint8 ``.npy`` cache beside it, so a
   rerun only reads it): mini-ImageNet (RFS pickles, 64/16/20 classes x 600 images, 84 px),
   CIFAR-FS (RFS pickles, 64/16/20 x 600, 32 px), FC100 (``FC100_*.pickle``, 60/20/20 x 600,
   32 px), tiered-ImageNet (RFS ``*_images.npz`` + ``*_labels.pkl``, 351/97/160 classes at 84 px:
   60 images per class by default, i.e. 21,060 of the real 448,695 training images, to keep the
   CPU run short; ``--tiered-full`` writes the real 448,695 / 124,261 / 206,209 (~17 GB, twice
   with the cache)). The cross-domain configs train on the mini-ImageNet data and test on CUB
   (learn2learn's ``cubirds200/`` folders, the 50 CloserLook test classes) or class folders
   (Cars: 49 novel classes, Places: 91, Plantae: 50), JPEGs at the real sets' typical sizes
   (500x375, 700x480, 256x256, 800x600), 20 images per test class (what a 5-shot 15-query
   episode reads; images are decoded lazily per episode, so the count does not change the
   time of an episode). The table says ``images: generated / real``; every projection uses
   the real count.
2. **A few real training steps** through ``scl_plugin.pipeline.train`` (``train.max_steps=<steps>``,
   everything else as shipped: ResNet-12 with the DropBlock ramp, batch 64 with two views
   (standard + SimCLR augmentation), ``data.num_workers`` as shipped (8; on CPU 0, the package's
   CPU default, unless ``--set data.num_workers=8``: 8 workers prefetching 32 batches on 2 cores
   slow the one timed step by ~20% with work it never uses), fp32). A step is timed
   from one optimizer step to the next (data loading, forward, backward, SGD; the first step,
   the warm-up, is excluded: ``--steps 2`` times one step). ``images/s`` counts both views
   (2 x 64 backbone images per step; samples/s is half of it). ``--share`` measures a training
   once for the configs that train alike and says so (``as mini-imagenet``): ``weights`` (the GPU
   default) for identical weight settings (``scl_plugin.runs.settings_fingerprint``: the four
   cross-domain configs train exactly like mini-ImageNet); ``step`` (the CPU default: a 84 px
   ResNet-12 step of 128 images takes ~1 min on 2 cores) also for the same step computation on
   other images (``step_signature``: tiered-ImageNet's step is mini-ImageNet's, FC100's is
   CIFAR-FS's; the class count changes only the classifier's 64 vs 351 outputs), those configs'
   validation and evaluation then run on their own data with the shared model; ``none``
   measures every config.
3. **Validation**: the per-epoch nearest-prototype episodes (``data.val_episodes``, 100) through
   the pipeline's own validator, seconds per episode.
4. **Distillation** (``--distill-steps``, default ``--steps`` on a GPU, 0 on CPU): the shipped configs have
   ``distill.generations: 0``, but the paper's "-distill" rows need one generation; a few steps of
   ``Distiller`` (fresh student, frozen teacher = the trained model) through the same ``Trainer``
   give the cost of one generation (``distill/gen``); ``distill`` counts the shipped generations.
5. **Evaluation episodes** with the shipped protocol (``eval.protocol: scl``: ``eval.support_augment``
   augmented copies per support image (5; 10 cross-domain), logistic regressions on pooled and
   2x2 max-pooled features) through ``scl_plugin.pipeline.evaluate``, 5-way 1-shot and 5-shot,
   15 queries: seconds per episode (``--episodes`` in one call, batched as configured; on a GPU one
   warm-up episode first).

Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on CPU the main process's peak
resident set (``VmHWM`` of ``/proc/self/status``, reset before each phase; loader workers not
included; ``ru_maxrss`` where it cannot be reset). The column is the larger of the training and
evaluation peaks (both are in the JSON).

Projection of the full recipe (hours): train = epochs x steps/epoch (real train images // batch)
x s/step + epochs x val_episodes x s/val-episode; distill = generations x the same with
``distill.epochs``; eval = ``data.test_episodes`` (600) x (s/episode 1-shot + 5-shot); total = sum.
CPU figures are CPU figures (a projection of days): the CPU run checks the script and the code
paths at full size; the GPU run gives the table to plan a reproduction with.

Prints a markdown table, then one JSON line (the last line). Without ``--out`` the JSON is also
written to ``benchmarks/perf/results/paper_dry_run.json`` (one entry per paper config), except for
``--tiny-data`` runs and a CPU run that would overwrite a GPU result. No baseline: this is a cost
table, not a comparison; ``gpu.py`` has the per-component figures (SC loss, loaders, bf16).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pickle
import platform
import resource
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

# the shipped data.num_workers (8) on a machine with fewer cores: torch warns on every loader
warnings.filterwarnings("ignore", message="This DataLoader will create")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONFIGS = ROOT / "configs"
RESULTS = Path(__file__).resolve().parent / "results" / "paper_dry_run.json"
DEFAULT_DATA = Path("~/.cache/scl_plugin/paper_dry_run").expanduser()
DATA_VERSION = 1        # bump when what a generated folder holds changes

# ----------------------------------------------------------------------------- the real datasets
# classes per split, images per class (None: the real per-split totals below), image size, real totals
MINI_RFS = {"train": "miniImageNet_category_split_train_phase_train.pickle",
            "val": "miniImageNet_category_split_val.pickle", "test": "miniImageNet_category_split_test.pickle"}
SPECS: Dict[str, Dict[str, Any]] = {
    "mini-imagenet": dict(layout="rfs-pickle", files=MINI_RFS, size=84, classes=(64, 16, 20), per_class=600,
                          real=(38_400, 9_600, 12_000)),
    "cifarfs": dict(layout="rfs-pickle", files={s: f"CIFAR_FS_{s}.pickle" for s in ("train", "val", "test")},
                    size=32, classes=(64, 16, 20), per_class=600, real=(38_400, 9_600, 12_000)),
    "fc100": dict(layout="rfs-pickle", files={s: f"FC100_{s}.pickle" for s in ("train", "val", "test")},
                  size=32, classes=(60, 20, 20), per_class=600, real=(36_000, 12_000, 12_000)),
    # RFS / MetaOptNet's tiered-ImageNet (779,165 images); reduced by default (see --tiered-full)
    "tiered-imagenet": dict(layout="rfs-npz", size=84, classes=(351, 97, 160), per_class=60,
                            real=(448_695, 124_261, 206_209)),
    # test-only sets (cross-domain): the novel classes, 20 JPEGs each at the real typical size
    "cub": dict(layout="l2l-cub", jpeg=(500, 375), classes=(0, 0, 50), per_class=20, real=(0, 0, 2_953)),
    "cars": dict(layout="folder", jpeg=(700, 480), classes=(0, 0, 49), per_class=20, real=(0, 0, 2_027)),
    "places": dict(layout="folder", jpeg=(256, 256), classes=(0, 0, 91), per_class=20, real=(0, 0, 18_200)),
    "plantae": dict(layout="folder", jpeg=(800, 600), classes=(0, 0, 50), per_class=20, real=(0, 0, 30_000)),
}
SPLITS = ("train", "val", "test")
TINY_CLASSES, TINY_PER_CLASS = 5, 20      # --tiny-data: 5 classes of 20 images per split (5-shot 15-query fits)


def test_set_name(cfg) -> Optional[str]:
    """The spec of a config's cross-domain test set: cub, or the folder set its test_root names."""
    d = cfg.data
    if not d.test_dataset:
        return None
    if d.test_dataset == "cub":
        return "cub"
    parts = Path(str(d.test_root or "")).parts
    for name in ("cars", "places", "plantae"):
        if name in parts:
            return name
    return "cars"        # any other folder set: a generic one of class folders


def split_counts(spec: Dict[str, Any], tiny: bool, tiered_full: bool) -> List[List[int]]:
    """Per split, the number of images of each class to generate."""
    out = []
    for n_cls, real in zip(spec["classes"], spec["real"]):
        if n_cls == 0:
            out.append([])
        elif tiny:     # CUB's CloserLook split takes every test class: all 50 need their images
            out.append([TINY_PER_CLASS] * (n_cls if spec["layout"] == "l2l-cub" else min(n_cls, TINY_CLASSES)))
        elif tiered_full and spec["layout"] == "rfs-npz":
            base, extra = divmod(real, n_cls)
            out.append([base + (c < extra) for c in range(n_cls)])
        else:
            out.append([spec["per_class"]] * n_cls)
    return out


# ----------------------------------------------------------------------------- writing them
def _random_images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return np.frombuffer(rng.bytes(n * size * size * 3), np.uint8).reshape(n, size, size, 3)


def _labels(counts: List[int], first: int) -> List[int]:
    return [first + c for c, k in enumerate(counts) for _ in range(k)]


def _write_rfs_pickles(root: Path, spec, counts, rng) -> None:
    first = 0
    for split, per in zip(SPLITS, counts):
        labels = _labels(per, first)
        first += len(per)
        data = {"data": _random_images(rng, len(labels), spec["size"]), "labels": labels,
                "catname2label": {f"n{c:08d}": c for c in sorted(set(labels))}}
        with open(root / spec["files"][split], "wb") as f:
            pickle.dump(data, f, protocol=4)


def _write_rfs_npz(root: Path, spec, counts, rng) -> None:
    """``{split}_images.npz`` (member ``images.npy``, streamed in chunks: the full set never sits in
    memory) and ``{split}_labels.pkl`` (``labels``), as RFS / MetaOptNet ship tiered-ImageNet."""
    first, size = 0, spec["size"]
    for split, per in zip(SPLITS, counts):
        labels = _labels(per, first)
        first += len(per)
        n = len(labels)
        with zipfile.ZipFile(root / f"{split}_images.npz", "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("images.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "|u1", "fortran_order": False, "shape": (n, size, size, 3)})
                for s in range(0, n, 4096):
                    f.write(rng.bytes(min(4096, n - s) * size * size * 3))
        with open(root / f"{split}_labels.pkl", "wb") as f:
            pickle.dump({"labels": np.asarray(labels, dtype=np.int64)}, f, protocol=4)


def _jpeg(rng: np.random.Generator, size, path: Path) -> None:
    """A photo-like JPEG: a smooth random colour field plus mild noise (real photos' file sizes
    and decode times, unlike pure noise)."""
    from PIL import Image
    w, h = size
    small = Image.fromarray(rng.integers(0, 256, (max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8))
    img = np.asarray(small.resize((w, h), Image.BILINEAR), dtype=np.int16)
    img = img + rng.integers(-12, 13, (h, w, 1), dtype=np.int16)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def _write_folders(root: Path, names: List[str], per: Dict[str, int], size, rng) -> None:
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per.get(name, 0)):
            _jpeg(rng, size, root / name / f"{i:04d}.jpg")


def _write_cub(root: Path, spec, counts, rng) -> None:
    """learn2learn's ``cubirds200/CUB_200_2011/images/<class>/``: all 200 class folders (the
    CloserLook split needs them); the 50 test classes (sorted index % 4 == 3) get the images,
    the others one small JPEG each (never read: the cross-domain configs train on mini-ImageNet)."""
    from learn2learn.vision.datasets.cu_birds200 import SPLITS as CUB_SPLITS
    names = sorted(sum(CUB_SPLITS.values(), []))
    test = [n for i, n in enumerate(names) if i % 4 == 3][:len(counts[2])]
    images = root / "cubirds200" / "CUB_200_2011" / "images"
    _write_folders(images, [n for n in names if n not in test], {n: 1 for n in names}, (40, 30), rng)
    _write_folders(images, test, dict(zip(test, counts[2])), spec["jpeg"], rng)


def _write_class_folders(root: Path, spec, counts, rng) -> None:
    names = [f"class{c:03d}" for c in range(len(counts[2]))]
    _write_folders(root, names, dict(zip(names, counts[2])), spec["jpeg"], rng)


WRITERS = {"rfs-pickle": _write_rfs_pickles, "rfs-npz": _write_rfs_npz, "l2l-cub": _write_cub,
           "folder": _write_class_folders}


def ensure_data(name: str, data_dir: Path, tiny: bool, tiered_full: bool, log=print) -> Dict[str, Any]:
    """The root holding dataset ``name`` in its real layout, generated there once; ``{root,
    generated (per split), real (per split), seconds (0 when it was there)}``."""
    spec = SPECS[name]
    counts = split_counts(spec, tiny, tiered_full)
    tag = "tiny" if tiny else ("full" if tiered_full and spec["layout"] == "rfs-npz" else "real")
    root = data_dir / f"{name}-{tag}"
    stamp = {"version": DATA_VERSION, "layout": spec["layout"], "counts": [sum(c) for c in counts]}
    done = root / ".generated.json"
    info = {"root": str(root), "generated": stamp["counts"], "real": list(spec["real"]), "seconds": 0.0}
    if done.is_file() and json.loads(done.read_text()) == stamp:
        return info
    import shutil
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    log(f"generating {name} ({spec['layout']}, {sum(stamp['counts']):,} images) in {root} ...")
    if tiny and "jpeg" in spec:
        spec = dict(spec, jpeg=tuple(v // 8 for v in spec["jpeg"]))
    WRITERS[spec["layout"]](root, spec, counts, np.random.default_rng(zlib.crc32(name.encode())))
    done.write_text(json.dumps(stamp))
    info["seconds"] = time.perf_counter() - t0
    return info


# ----------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Peak:
    """Peak memory of a phase: CUDA allocator peak, or the process's peak resident set."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.kind = "cuda max_memory_allocated"
        else:
            self.kind = ("peak RSS (VmHWM, main process)" if self._reset_rss()
                         else "peak RSS (ru_maxrss, process lifetime)")

    @staticmethod
    def _reset_rss() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def reset(self) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._reset_rss()

    def read_mb(self) -> float:
        if self.device.type == "cuda":
            sync(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        with contextlib.suppress(OSError):
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepClock:
    """Times of the training loop's steps: the start of each step (the Trainer's forward through
    its loss wrapper) and the end of each optimizer step (device work included)."""

    def __init__(self, device: torch.device):
        self.device, self.starts, self.ends, self.handles = device, [], [], []

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_post_hook
        from scl_plugin.training.trainer import _LossForward

        def pre(module, args):
            if isinstance(module, _LossForward):
                self.starts.append(time.perf_counter())

        def post(optimizer, args, kwargs):
            sync(self.device)
            self.ends.append(time.perf_counter())
        self.handles = [register_module_forward_pre_hook(pre), register_optimizer_step_post_hook(post)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def summary(self, grad_accum: int = 1) -> Dict[str, Any]:
        """Seconds per batch: steady state = end-to-end intervals after the first (warm-up) step;
        with a single step, that step's own time (warm-up included, flagged)."""
        ends = self.ends
        if not ends:
            raise RuntimeError("no optimizer step was recorded")
        compute = [e - s for s, e in zip(self.starts[::grad_accum], ends)]
        if len(ends) >= 2:
            intervals = [b - a for a, b in zip(ends, ends[1:])]
            step = float(np.mean(intervals)) / grad_accum
            return {"step_s": step, "step_median_s": float(np.median(intervals)) / grad_accum,
                    "steps_timed": len(intervals), "warmup_included": False,
                    "first_step_s": compute[0], "compute_s": float(np.mean(compute[1:])) / grad_accum}
        return {"step_s": compute[0] / grad_accum, "step_median_s": compute[0] / grad_accum, "steps_timed": 1,
                "warmup_included": True, "first_step_s": compute[0], "compute_s": compute[0] / grad_accum}


def measure_train(cfg, data, device, peak) -> tuple:
    from scl_plugin import pipeline
    peak.reset()
    t0 = time.perf_counter()
    with StepClock(device) as clock:
        method = pipeline.train(cfg, data=data, resume=False)
    wall = time.perf_counter() - t0
    out = clock.summary(cfg.train.grad_accum)
    out.update(peak_mb=peak.read_mb(), train_call_s=wall)
    return method, out


def measure_validation(cfg, data, method, episodes: int) -> Dict[str, Any]:
    """The Trainer's per-epoch validation (``pipeline._validator``: task loading included)."""
    from scl_plugin import pipeline
    vcfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_episodes=episodes))
    t0 = time.perf_counter()
    validate = pipeline._validator(vcfg, data)
    if validate is None:
        return {"episodes": 0, "s_per_episode": 0.0}
    validate(method)
    return {"episodes": episodes, "s_per_episode": (time.perf_counter() - t0) / episodes}


def measure_distill(cfg, data, teacher, steps: int, device, peak, run_dir: Path) -> Dict[str, Any]:
    """One distillation generation's step, as ``pipeline._distill`` builds it: a fresh student
    (``Distiller.from_teacher``), the flat loader, the same Trainer, ``distill.lr``."""
    from scl_plugin import pipeline
    from scl_plugin.algorithms import Distiller
    from scl_plugin.training import FlatBatches, Trainer
    d = cfg.distill
    module = Distiller.from_teacher(teacher, d, new_backbone=pipeline._backbone_factory(cfg, data))
    tcfg = dataclasses.replace(cfg.train, epochs=d.epochs, lr=d.lr, max_steps=steps)
    two = getattr(teacher, "needs_two_views", False) and d.double_transform
    batches = FlatBatches(pipeline._pretrain_set(cfg, data, two), cfg.data.batch_size, cfg.seed + 1,
                          cfg.data.num_workers)
    peak.reset()
    trainer = Trainer(module, tcfg, run_dir / "distill-1", epochs=d.epochs, accelerator=pipeline.make_accelerator(cfg),
                      validate=None, meta={"method": f"{cfg.method}-distill"}, desc="distill g1",
                      parameters=module.student.parameters())
    with StepClock(device) as clock:
        trainer.fit(batches, batches.steps_per_epoch, resume=False)
    out = clock.summary(cfg.train.grad_accum)
    out.update(peak_mb=peak.read_mb(), views=2 if two else 1)
    del trainer, batches, module
    return out


def measure_eval(cfg, method, shots: int, episodes: int, warmup: int, device, peak) -> Dict[str, Any]:
    from scl_plugin import pipeline
    from scl_plugin.data import build_test_tasks
    d = cfg.data
    tcfg = dataclasses.replace(d, shots=shots, test_episodes=max(d.test_episodes, episodes + warmup))
    t0 = time.perf_counter()
    tasks = build_test_tasks(tcfg)
    build_s = time.perf_counter() - t0
    if warmup:
        pipeline.evaluate(method, cfg, tasks, d.ways, shots, d.queries, indices=np.arange(episodes, episodes + warmup),
                          progress=False)
    peak.reset()
    sync(device)
    t0 = time.perf_counter()
    accs = pipeline.evaluate(method, cfg, tasks, d.ways, shots, d.queries, indices=np.arange(episodes), progress=False)
    sync(device)
    sec = time.perf_counter() - t0
    return {"episodes": len(accs), "s_per_episode": sec / len(accs), "peak_mb": peak.read_mb(),
            "tasks_build_s": build_s, "mean_acc": float(np.mean(accs))}


# ----------------------------------------------------------------------------- one config
def step_signature(cfg) -> Dict[str, Any]:
    """What a training (and distillation) step's cost depends on: the backbone, input size, batch,
    views and augmentations, which loss terms are on and their shapes, precision and memory format,
    optimizer kind, loader workers. Not the images, the class count (the classifier's 64 vs 351
    outputs are ~0.01% of the step), learning rates, schedules or epochs."""
    loss = dataclasses.asdict(cfg.loss)
    terms = {k: v > 0 for k, v in loss.items() if k.startswith("lambda_") and k != "lambda_lse"}
    shape = {k: v for k, v in loss.items() if not k.startswith(("lambda_", "tau_"))}
    t, d = cfg.train, cfg.data
    return {"method": cfg.method, "model": dataclasses.asdict(cfg.model), "image_size": d.image_size,
            "batch_size": d.batch_size, "augment": [d.augment, d.augment_second_view], "workers": d.num_workers,
            "loss_terms": terms, "loss_shape": shape, "lambda_lse": loss.get("lambda_lse"),
            "train": [t.mixed_precision, t.channels_last, t.compile, t.grad_accum, t.optimizer, t.momentum > 0],
            "distill": {k: v for k, v in dataclasses.asdict(cfg.distill).items()
                        if k not in ("epochs", "lr", "generations", "teacher")},
            "cache": d.cache_dir}


def run_config(rel: str, args, device, data_dir: Path, work: Path, reuse: Dict[str, Any], log) -> Dict[str, Any]:
    from scl_plugin import runs
    from scl_plugin.config import load_config
    from scl_plugin.data import build_fewshot
    path = CONFIGS / f"{rel}.yaml"
    shipped = load_config(path)
    main_info = ensure_data(shipped.data.dataset, data_dir, args.tiny_data, args.tiered_full, log)
    overrides = [f"data.root={main_info['root']}", f"data.cache_dir={data_dir / 'cache'}",
                 f"run_dir={work / rel.replace('/', '_')}", f"train.max_steps={args.steps}"]
    test_name = test_set_name(shipped)
    test_info = None
    if test_name:
        test_info = ensure_data(test_name, data_dir, args.tiny_data, args.tiered_full, log)
        overrides.append(f"data.test_root={test_info['root']}")
    if args.tiny_data:
        overrides.append("data.batch_size=8")
    cfg = load_config(path, overrides + list(args.set))
    d = cfg.data
    log(f"[{rel}] {d.dataset}{' -> ' + test_name if test_name else ''}, {cfg.model.name} {d.image_size}px, "
        f"batch {d.batch_size}, workers {d.num_workers}")
    entry: Dict[str, Any] = {"config": rel, "dataset": d.dataset, "test_dataset": test_name or d.dataset,
                             "image_size": d.image_size, "model": cfg.model.name, "batch_size": d.batch_size,
                             "num_workers": d.num_workers, "mixed_precision": cfg.train.mixed_precision,
                             "eval_protocol": cfg.eval.protocol, "support_augment": cfg.eval.support_augment}
    gen_s = main_info["seconds"] + (test_info["seconds"] if test_info else 0.0)

    t0 = time.perf_counter()
    data = build_fewshot(d, seed=cfg.seed)
    entry["data_build_s"] = time.perf_counter() - t0      # decoding into the cache on a first run
    real_train = main_info["real"][0]
    entry["images"] = {"train_generated": main_info["generated"][0], "train_real": real_train,
                       "test_generated": (test_info or main_info)["generated"][2],
                       "test_real": (test_info or main_info)["real"][2]}

    same_weights = json.dumps([runs.settings_fingerprint(cfg), d.root, d.cache_dir])
    same_step = json.dumps(step_signature(cfg), default=str)
    shared = None
    if args.share != "none":
        shared = reuse.get(same_weights) or (reuse.get(same_step) if args.share == "step" else None)
    if shared is not None:
        method = shared["method"]
        entry["train"], entry["distill"] = shared["train"], shared["distill"]
        entry["train_measured_on"] = shared["config"]
        if shared["key"] == same_weights:         # the very same training: same validation split too
            entry["validation"] = shared["validation"]
            log(f"  training: as {shared['config']} (same weight settings), measured once")
        else:
            log(f"  training step: as {shared['config']} (the same step computation), measured once")
            entry["validation"] = measure_validation(cfg, data, method, args.val_episodes)
            log(f"  validation {entry['validation']['s_per_episode']:.2f} s/episode")
    else:
        method, train = measure_train(cfg, data, device, Peak(device))
        views = 2 if getattr(method, "needs_two_views", False) else 1
        train.update(views=views, images_per_s=views * d.batch_size / train["step_s"],
                     samples_per_s=d.batch_size / train["step_s"])
        entry["train"] = train
        log(f"  train step {train['step_s']:.2f} s ({train['images_per_s']:.1f} images/s, {views} views), "
            f"peak {train['peak_mb']:.0f} MB")
        entry["validation"] = measure_validation(cfg, data, method, args.val_episodes)
        log(f"  validation {entry['validation']['s_per_episode']:.2f} s/episode")
        if args.distill_steps > 0 and cfg.method in ("ce", "scl"):
            dist = measure_distill(cfg, data, method, args.distill_steps, device, Peak(device),
                                   work / rel.replace("/", "_"))
            dist.update(images_per_s=dist["views"] * d.batch_size / dist["step_s"])
            entry["distill"] = dist
            log(f"  distill step {dist['step_s']:.2f} s, peak {dist['peak_mb']:.0f} MB")
        else:
            entry["distill"] = None
        entry["train_measured_on"] = rel
        for key in (same_weights, same_step):
            reuse[key] = {"method": method, "config": rel, "key": key,
                          **{k: entry[k] for k in ("train", "validation", "distill")}}
    del data

    entry["eval"] = {}
    for shots in (1, 5):
        r = measure_eval(cfg, method, shots, args.episodes, args.eval_warmup, device, Peak(device))
        entry["eval"][f"{shots}shot"] = r
        log(f"  eval {d.ways}-way {shots}-shot: {r['s_per_episode']:.2f} s/episode, peak {r['peak_mb']:.0f} MB")

    # projection of the full recipe, at the real training-set size
    steps_per_epoch = real_train // d.batch_size
    if cfg.train.steps_per_epoch > 0:
        steps_per_epoch = min(steps_per_epoch, cfg.train.steps_per_epoch)
    val_s = entry["validation"]["s_per_episode"] * d.val_episodes if cfg.train.validate else 0.0
    train_h = cfg.train.epochs * (steps_per_epoch * entry["train"]["step_s"] + val_s) / 3600
    dist = entry["distill"]
    gen_h = d_epochs = None
    if dist is not None:
        d_epochs = cfg.distill.epochs
        gen_h = d_epochs * (steps_per_epoch * dist["step_s"] + val_s) / 3600
    if gen_h is not None:
        distill_h = cfg.distill.generations * gen_h
    else:
        distill_h = 0.0 if cfg.distill.generations == 0 else None     # generations, not measured
    eval_h = d.test_episodes * sum(r["s_per_episode"] for r in entry["eval"].values()) / 3600
    total = train_h + (distill_h or 0.0) + eval_h
    entry["recipe"] = {"epochs": cfg.train.epochs, "steps_per_epoch": steps_per_epoch, "val_episodes": d.val_episodes,
                       "distill_generations": cfg.distill.generations, "distill_epochs": d_epochs,
                       "test_episodes": d.test_episodes, "eval_settings": [[d.ways, 1], [d.ways, 5]],
                       "queries": d.queries}
    entry["projected_hours"] = {"train": train_h, "distill": distill_h, "distill_per_generation": gen_h,
                                "eval": eval_h, "total": total}
    entry["peak_mb"] = max([entry["train"]["peak_mb"]] + [r["peak_mb"] for r in entry["eval"].values()])
    entry["data_generation_s"] = gen_s
    return entry


# ----------------------------------------------------------------------------- report
def _h(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:,.0f}"


def table(entries: List[Dict[str, Any]], device_label: str) -> str:
    head = ("| config | device | images: generated / real | images/s (2 views) | peak MB | s/episode 1-shot / 5-shot "
            "| projected h: train / distill (/gen) / eval / total |")
    lines = [head, "|" + "---|" * 7]
    for e in entries:
        im = e["images"]
        gen = f"{im['train_generated']:,} / {im['train_real']:,}"
        if e["test_dataset"] != e["dataset"]:
            gen += f" (test {e['test_dataset']}: {im['test_generated']:,} / {im['test_real']:,})"
        on = e["train_measured_on"]
        reused = "" if on == e["config"] else f" (as {on.split('/')[-1]})"
        p = e["projected_hours"]
        distill = f"{_h(p['distill'])} ({_h(p['distill_per_generation'])})"
        lines.append(f"| {e['config']} | {device_label} | {gen} | {e['train']['images_per_s']:.1f}{reused} | "
                     f"{e['peak_mb']:,.0f} | {e['eval']['1shot']['s_per_episode']:.2f} / "
                     f"{e['eval']['5shot']['s_per_episode']:.2f} | {_h(p['train'])} / {distill} / {_h(p['eval'])} / "
                     f"{_h(p['total'])} |")
    return "\n".join(lines)


def environment(device: torch.device) -> Dict[str, Any]:
    env = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "threads": torch.get_num_threads(), "cpu_cores": os.cpu_count(), "python": platform.python_version()}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["device_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    else:
        env["device_name"] = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return env


ORDER = ("mini-imagenet", "tiered-imagenet", "cifarfs", "fc100")     # then the rest, sorted


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the loader workers)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def paper_configs() -> List[str]:
    """Every ``configs/paper/*.yaml``: the in-domain recipes first (each training measured before the
    configs that share it), then the rest (the cross-domain ones) in name order."""
    paths = sorted((CONFIGS / "paper").glob("*.yaml"),
                   key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    return [str(p.relative_to(CONFIGS).with_suffix("")) for p in paths]


def main(argv=None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--configs", nargs="+", default=None,
                    help="configs under configs/, e.g. paper/cifarfs (default: every configs/paper/*.yaml)")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps per config, the first one a warm-up (default: 12 on a GPU, 2 on CPU)")
    ap.add_argument("--distill-steps", type=int, default=None,
                    help="distillation steps (default: --steps on a GPU, 0 (skipped) on CPU)")
    ap.add_argument("--episodes", type=int, default=None,
                    help="timed evaluation episodes per setting (default: 20 on a GPU, 1 on CPU)")
    ap.add_argument("--val-episodes", type=int, default=None, help="timed validation episodes (default: --episodes)")
    ap.add_argument("--eval-warmup", type=int, default=None, help="untimed episodes first (default: 1 GPU, 0 CPU)")
    ap.add_argument("--data-dir", default=None, help=f"generated datasets and their cache (default: {DEFAULT_DATA})")
    ap.add_argument("--tiered-full", action="store_true",
                    help="tiered-ImageNet at its real 779,165 images (~17 GB, plus as much cache)")
    ap.add_argument("--tiny-data", action="store_true",
                    help="5 classes x 20 images per split, batch 8 (checks the script; nothing written to results/)")
    ap.add_argument("--share", choices=("weights", "step", "none"), default=None,
                    help="measure training once for configs that train alike: 'weights' (identical weight "
                         "settings: the cross-domain configs and mini-ImageNet; the GPU default), 'step' (also "
                         "the same step computation on other data: tiered-ImageNet as mini-ImageNet, FC100 as "
                         "CIFAR-FS; the CPU default), 'none'")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override applied to every config, e.g. --set train.mixed_precision=bf16")
    ap.add_argument("--out", default=None, help=f"JSON output (default: {RESULTS.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device (torch.cuda.is_available() is False)")
    gpu = device.type == "cuda"
    args.steps = args.steps if args.steps is not None else (12 if gpu else 2)
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    args.distill_steps = (args.steps if gpu else 0) if args.distill_steps is None else args.distill_steps
    args.episodes = args.episodes if args.episodes is not None else (20 if gpu else 1)
    args.val_episodes = args.val_episodes if args.val_episodes is not None else args.episodes
    args.eval_warmup = args.eval_warmup if args.eval_warmup is not None else (1 if gpu else 0)
    args.share = args.share or ("weights" if gpu else "step")
    if not gpu and not any(o.startswith("data.num_workers=") for o in args.set):
        # the package's own CPU default (data.num_workers=-1 is 0 without CUDA): the shipped 8 workers
        # prefetch 32 batches on 2 cores, slowing the timed step by ~20% with work it never uses
        args.set = ["data.num_workers=0"] + list(args.set)
    if gpu:
        torch.cuda.set_device(device)
    else:
        # pipeline.train builds its Accelerator from the config: on a CUDA machine asked for cpu
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    configs = args.configs or paper_configs()
    configs = [c[:-5] if c.endswith(".yaml") else c for c in configs]
    tmp_data = None
    if args.tiny_data and not args.data_dir:
        tmp_data = tempfile.TemporaryDirectory(prefix="paper_dry_run_data_")
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else (Path(tmp_data.name) if tmp_data else DEFAULT_DATA)
    data_dir.mkdir(parents=True, exist_ok=True)
    log = lambda *a: print(*a, flush=True)      # noqa: E731
    env = environment(device)
    log(f"device: {env['device_name']}; torch {env['torch']}; data in {data_dir}; share: {args.share}")

    t_start, cpu0, load0 = time.perf_counter(), cpu_seconds(), list(os.getloadavg())
    entries, reuse = [], {}
    try:
        with tempfile.TemporaryDirectory(prefix="paper_dry_run_runs_") as work:
            for rel in configs:
                entries.append(run_config(rel, args, device, data_dir, Path(work), reuse, log))
            reuse.clear()
    finally:
        if tmp_data is not None:
            tmp_data.cleanup()
    wall = time.perf_counter() - t_start

    label = "GPU" if gpu else "CPU"
    result = {**env, "steps": args.steps, "distill_steps": args.distill_steps, "episodes": args.episodes,
              "val_episodes": args.val_episodes, "eval_warmup": args.eval_warmup, "tiny_data": args.tiny_data,
              "tiered_full": args.tiered_full, "share": args.share, "overrides": args.set, "wall_s": wall,
              "cpu_s": cpu_seconds() - cpu0, "load_average": [load0, list(os.getloadavg())],
              "peak_memory": Peak(device).kind,
              "data_generation_s": sum(e["data_generation_s"] for e in entries),
              "note": ("GPU figures: the planning table for a reproduction." if gpu else
                       "CPU figures are CPU figures: they check the script and the code paths at full data size; "
                       "plan a reproduction with the GPU run's table.") +
                      " images/s counts both views (2 x batch per step); projected hours use the real train-set "
                      "sizes; train_measured_on names the config whose training step an entry shares (--share).",
              "configs": entries}
    print()
    print(table(entries, label))
    print(f"wall {wall / 60:.1f} min, CPU {result['cpu_s'] / 60:.1f} min, load average {load0[0]:.1f} -> "
          f"{result['load_average'][1][0]:.1f} on {os.cpu_count()} cores")
    print(f"(as X: the training step measured on config X, shared ({args.share}: "
          f"{'same weight settings' if args.share == 'weights' else 'same step computation'}); distill: the shipped "
          f"generations and, in brackets, one generation ('-': not measured, --distill-steps))")
    out = Path(args.out) if args.out else None
    if out is None and not args.tiny_data:
        out = RESULTS
        if not gpu and RESULTS.is_file():
            with contextlib.suppress(ValueError, OSError):
                if json.loads(RESULTS.read_text()).get("device", "").startswith("cuda"):
                    print(f"not overwriting the GPU result {RESULTS} with CPU figures (use --out)")
                    out = None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
