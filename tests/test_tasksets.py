"""``scl_plugin.data.get_tasksets``: learn2learn's entry point for every layout of the README's data
table (each written tiny in its real format), its tasks bit-for-bit the harness's evaluated
episodes for the same seed, and the same tasks behind learn2learn's own ``get_tasksets``."""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import learn2learn as l2l

from scl_plugin.config import DataConfig
from scl_plugin.data import (build_fewshot, build_test_tasks, get_tasksets, list_tasksets,
                             register_learn2learn_benchmarks)
from scl_plugin.data.registry import check_layout
from test_data import SHARED, _make_omniglot_zips
from test_data_formats import _mini_data, _png, _py2_pickle, _write_mini_csv, _write_mini_l2l, _write_mini_rfs

EPISODES = dict(val_episodes=3, test_episodes=4, episode_seed=11)
# get_tasksets' default image size per training dataset (as in the literature / paper configs)
SIZE = {"mini-imagenet": 84, "tiered-imagenet": 84, "cifarfs": 32, "fc100": 32, "folder": 84,
        "omniglot-small": 28, "omniglot": 28}


# ----------------------------------------------------------------------------- writers
def _rng_images(rng, n, size, channels=3):
    shape = (n, size, size, channels) if channels == 3 else (n, size, size)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _write_tiered(root: Path, fmt: str):
    """Both tiered-ImageNet layouts hold the same images: 4 / 3 / 3 classes, 4 images each."""
    rng = np.random.default_rng(11)
    folder = root / "tiered-imagenet" if fmt == "l2l" else root
    folder.mkdir(parents=True)
    first = 0
    for split, n in (("train", 4), ("val", 3), ("test", 3)):
        labels = [first + (i * 7) % n for i in range(4 * n)]        # classes interleaved
        first += n
        imgs = _rng_images(rng, len(labels), 84)
        if fmt == "l2l":
            with open(folder / f"{split}_images_png.pkl", "wb") as f:
                pickle.dump([np.frombuffer(_png(im), np.uint8) for im in imgs], f)
            with open(folder / f"{split}_labels.pkl", "wb") as f:
                pickle.dump({"label_specific": np.asarray(labels)}, f)
        else:
            np.savez(folder / f"{split}_images.npz", images=imgs)
            _py2_pickle({"labels": labels}, folder / f"{split}_labels.pkl")


CIFAR = {"train": ["owl", "bus", "elm", "fox"], "val": ["cup", "ant", "yak"], "test": ["sun", "map", "jar"]}


def _write_cifarfs(root: Path, fmt: str):
    rng = np.random.default_rng(12)
    ids = {c: 2 * i for i, c in enumerate(sorted(sum(CIFAR.values(), [])))}
    root.mkdir(parents=True)
    for split, classes in CIFAR.items():
        imgs, labels = [], []
        for c in classes:
            for i in range(4):
                im = _rng_images(rng, 1, 32)[0]
                imgs.append(im)
                labels.append(ids[c])
                if fmt == "raw":
                    d = root / "cifarfs" / "cifar100" / "data" / c
                elif fmt == "processed":
                    d = root / "cifarfs" / "processed" / split / c
                else:
                    continue
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(im).save(d / f"{c}_{i}.png")
        if fmt == "raw":
            splits = root / "cifarfs" / "cifar100" / "splits" / "bertinetto"
            splits.mkdir(parents=True, exist_ok=True)
            (splits / f"{split}.txt").write_text("\n".join(classes) + "\n")
        elif fmt == "rfs":
            _py2_pickle({"data": np.stack(imgs), "labels": labels}, root / f"CIFAR_FS_{split}.pickle")


def _write_fc100(root: Path):
    rng = np.random.default_rng(13)
    root.mkdir(parents=True)
    first = 0
    for split, n in (("train", 5), ("val", 3), ("test", 3)):
        labels = [first + c for c in range(n) for _ in range(4)]
        first += n
        with open(root / f"FC100_{split}.pickle", "wb") as f:
            pickle.dump({"data": _rng_images(rng, len(labels), 32), "labels": labels}, f)


def _write_class_folders(root: Path, classes, per_class=4, size=(18, 24), seed=14):
    """``root/<class>/<i>.png``; returns the file paths and class index of every image."""
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            p = root / c / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
            paths.append(p)
            labels.append(k)
    return paths, labels


FOLDER = {"train": ["t2", "t1", "t3", "t0"], "val": ["v1", "v0", "v2"], "test": ["n2", "n0", "n1"]}


def _write_folder(root: Path, fmt: str):
    """Class folders ``{train,val,test}/<class>/``; ``closerlook``: the same images listed in
    ``{base,val,novel}.json`` with the absolute paths of the machine that wrote the lists."""
    for split, classes in FOLDER.items():
        paths, labels = _write_class_folders(root / "images" / split if fmt == "closerlook" else root / split,
                                             classes, seed=len(split))
        if fmt == "closerlook":
            name = {"train": "base", "val": "val", "test": "novel"}[split]
            lists = {"label_names": classes, "image_labels": labels,
                     "image_names": [f"/home/someone/filelists/{split}/{p.parent.name}/{p.name}" for p in paths]}
            (root / f"{name}.json").write_text(json.dumps(lists))


def _write_cub(root: Path, fmt: str):
    rng = np.random.default_rng(15)
    if fmt == "l2l":
        from learn2learn.vision.datasets.cu_birds200 import SPLITS
        images = root / "cubirds200" / "CUB_200_2011" / "images"
        for n in sorted(sum(SPLITS.values(), [])):
            (images / n).mkdir(parents=True)
            for i in range(2):        # PNG bytes under a .jpg name: PIL sniffs the content
                (images / n / f"{n}_{i}.jpg").write_bytes(_png(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)))
    else:                             # CloserLook's novel.json (a cross-domain test set reads only it)
        paths, labels = _write_class_folders(root / "CUB_200_2011" / "images", ["003.Bird", "001.Bird", "002.Bird"],
                                             per_class=2, seed=16)
        (root / "novel.json").write_text(json.dumps({
            "label_names": ["003.Bird", "001.Bird", "002.Bird"], "image_labels": labels,
            "image_names": [f"/data/cub/CUB_200_2011/images/{p.parent.name}/{p.name}" for p in paths]}))


def _write_omniglot_torchvision(root: Path):
    """torchvision's ``omniglot-py/images_{background,evaluation}/<alphabet>/<character>/``:
    1,000 + 205 characters (the loader's split is class ids 0-1099 / 1100-1199 / 1200-),
    2 images each, from a few distinct PNGs."""
    rng = np.random.default_rng(17)
    pngs = [_png(np.where(rng.random((20, 20)) < 0.2, 0, 255).astype(np.uint8)) for _ in range(23)]
    k = 0
    for top, n in (("images_background", 1000), ("images_evaluation", 205)):
        for c in range(n):
            d = root / "omniglot-py" / top / f"Alphabet{c // 50:02d}" / f"character{c % 50 + 1:02d}"
            d.mkdir(parents=True)
            for i in range(2):
                (d / f"{c:04d}_{i + 1:02d}.png").write_bytes(pngs[k % len(pngs)])
                k += 1


def _mini(tmp_path, fmt="rfs", per_class=3):
    root = tmp_path / f"mini-{fmt}"
    {"l2l": _write_mini_l2l, "rfs": _write_mini_rfs, "csv": _write_mini_csv}[fmt](root, _mini_data(per_class=per_class))
    return root


# (dataset, format) of the README's data table -> writes it, returns (name, root, kwargs, layout root)
def _layout(tmp_path, dataset, fmt, monkeypatch):
    if dataset == "mini-imagenet":
        root = _mini(tmp_path, fmt, per_class=4)
        return "mini-imagenet", root, {}, root
    root = tmp_path / f"{dataset}-{fmt}"
    if dataset == "tiered-imagenet":
        _write_tiered(root, fmt)
    elif dataset == "cifarfs":
        _write_cifarfs(root, fmt)
    elif dataset == "fc100":
        _write_fc100(root)
    elif dataset == "folder":
        _write_folder(root, fmt)
        if fmt == "closerlook":       # CloserLook lists as the training dataset
            return "folder", root, {}, root
        # class folders as a cross-domain test set: pretrain on mini-ImageNet, test on "places"
        return "mini-imagenet->places", _mini(tmp_path), {"test_root": str(root / "test")}, root / "test"
    elif dataset == "cub":
        _write_cub(root, fmt)
        return "mini-imagenet->cub", _mini(tmp_path), {"test_root": str(root)}, root
    elif dataset == "omniglot-small":
        _make_omniglot_zips(root / "omniglot")
    elif dataset == "omniglot":
        import torchvision
        _write_omniglot_torchvision(root)
        # torchvision checks the MD5 of the original zips, which a tiny copy cannot have
        monkeypatch.setattr(torchvision.datasets.Omniglot, "_check_integrity", lambda self: True)
    return dataset, root, {}, root


README_LAYOUTS = [("mini-imagenet", "l2l"), ("mini-imagenet", "rfs"), ("mini-imagenet", "csv"),
                  ("tiered-imagenet", "l2l"), ("tiered-imagenet", "rfs"),
                  ("cifarfs", "raw"), ("cifarfs", "processed"), ("cifarfs", "rfs"), ("fc100", "pickle"),
                  ("cub", "l2l"), ("cub", "closerlook"), ("folder", "closerlook"), ("folder", "classfolders"),
                  ("omniglot-small", "zips"), ("omniglot", "torchvision")]


def _same_task(a, b):
    (xa, ya), (xb, yb) = a, b
    assert xa.dtype == xb.dtype and torch.equal(xa, xb) and torch.equal(ya, yb)


def _check_l2l_task(task, ways, samples, channels, size):
    x, y = task
    assert x.shape == (ways * samples, channels, size, size) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    # learn2learn's RemapLabels + ConsecutiveLabels: classes 0..ways-1, each one's samples together
    assert sorted(y.tolist()) == sorted(list(range(ways)) * samples)
    blocks = y.view(ways, samples)
    assert (blocks == blocks[:, :1]).all()


def _readme_layouts():
    """(dataset, format) rows of the README's data table (an empty dataset cell repeats the last)."""
    lines = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| `data.dataset` | `data.format`"))
    rows, dataset = [], None
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip().strip("`") for c in ln.split("|")[1:3]]
        dataset = cells[0] or dataset
        rows.append((dataset, cells[1]))
    return rows


def test_layouts_under_test_are_the_readme_table_and_the_registry():
    """The parametrised layouts below are the README's rows and the registry's formats, so a new
    format or row is not silently untested."""
    from scl_plugin.data.registry import formats_for
    assert _readme_layouts() == README_LAYOUTS
    registered = {(d, f.name) for d in list_tasksets() if "->" not in d for f in formats_for(d)}
    assert registered - {("synthetic", "generated")} == set(README_LAYOUTS)


@pytest.mark.parametrize("dataset,fmt", README_LAYOUTS, ids=[f"{d}-{f}" for d, f in README_LAYOUTS])
def test_get_tasksets_every_layout_equals_the_harness_episodes(tmp_path, monkeypatch, dataset, fmt):
    name, root, kw, layout_root = _layout(tmp_path, dataset, fmt, monkeypatch)
    assert check_layout(dataset, layout_root).name == fmt            # the layout under test is read
    ways, samples = (2 if dataset == "omniglot-small" else 3), 2     # the tiny zips' val split has 2 classes
    cache = str(tmp_path / "cache")
    ts = get_tasksets(name, train_ways=ways, train_samples=samples, test_ways=ways, test_samples=samples,
                      root=str(root), cache_dir=cache, augment="none", seed=5, **kw, **EPISODES)
    assert type(ts) is l2l.vision.benchmarks.BenchmarkTasksets
    train, validation, test = ts
    assert all(isinstance(t, l2l.data.TaskDataset) for t in ts)
    assert (len(validation), len(test)) == (3, 4)

    # what the harness evaluates for the same settings: scl-eval / scl-bench (test split only)
    # and build_fewshot (train + evaluate); support/query split is the caller's (any shots)
    train_ds, test_ds = (name.split("->") + [None])[:2]
    cfg = DataConfig(dataset=train_ds, root=str(root), ways=ways, shots=1, queries=samples - 1,
                     image_size=SIZE[train_ds], cache_dir=cache, augment="none",
                     test_dataset=None if test_ds is None else ("folder" if test_ds == "places" else test_ds),
                     **kw, **EPISODES)
    evaluated = build_test_tasks(cfg)
    data = build_fewshot(cfg, seed=5)
    channels = 1 if dataset.startswith("omniglot") else 3
    for i in range(4):
        _check_l2l_task(test[i], ways, samples, channels, cfg.image_size)
        _same_task(test[i], evaluated[i])
        _same_task(test[i], data.test_tasks[i])
    for i in range(3):
        _same_task(validation[i], data.val_tasks[i])
    # the meta-training stream of run seed 5, whatever the global random state in between
    for _ in range(2):
        random.seed(123)
        _same_task(train.sample(), data.train_tasks.sample())


def test_train_shape_seed_num_tasks_device_and_errors(tmp_path):
    common = dict(root=str(tmp_path), cache_dir=str(tmp_path / "c"), image_size=8, augment="none")
    ts = get_tasksets("synthetic", train_ways=4, train_samples=3, test_ways=2, test_samples=2, seed=3,
                      **common)
    # a training shape of its own: build_fewshot's stream of that shape for the same run seed
    ref = build_fewshot(DataConfig(dataset="synthetic", ways=4, shots=3, queries=0, **common), seed=3)
    for _ in range(3):
        _same_task(ts.train.sample(), ref.train_tasks.sample())
    _check_l2l_task(ts.test[0], 2, 2, 3, 8)
    assert (len(ts.validation), len(ts.test)) == (100, 600)            # the harness's defaults
    # learn2learn's num_tasks: that many fixed tasks in each set (train too)
    fixed = get_tasksets("synthetic", num_tasks=7, test_samples=3, **common)
    assert [len(t) for t in fixed] == [7, 7, 7]
    _same_task(fixed.train[6], fixed.train[6])
    again = get_tasksets("synthetic", num_tasks=7, test_samples=3, **common)
    _same_task(fixed.test[5], again.test[5])
    other = get_tasksets("synthetic", num_tasks=7, test_samples=3, episode_seed=1, **common)
    assert not torch.equal(fixed.test[5][0], other.test[5][0])
    on_cpu = get_tasksets("synthetic", num_tasks=2, test_samples=3, device="cpu", **common)
    assert on_cpu.test[1][0].device.type == "cpu"
    _same_task(on_cpu.test[1], fixed.test[1])
    # learn2learn's augmentation argument maps onto ours
    lee = get_tasksets("synthetic", num_tasks=2, data_augmentation="lee2019",
                       **{k: v for k, v in common.items() if k != "augment"})
    assert lee.train.dataset.dataset.augment_name == "standard" and lee.test.dataset.dataset.augment_name == "none"
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) shots.*allowed: .*episode_seed"):
        get_tasksets("synthetic", shots=1, **common)
    with pytest.raises(ValueError, match=r"unknown taskset 'minimagenet'; known: omniglot-small"):
        get_tasksets("minimagenet", **common)
    with pytest.raises(ValueError, match="num_tasks needs to be -1"):
        get_tasksets("synthetic", num_tasks=0, **common)
    assert "mini-imagenet->cub" in list_tasksets() and "omniglot-small" in list_tasksets()


@pytest.fixture
def l2l_table(monkeypatch):
    """learn2learn's benchmark table, restored after the test."""
    bench = l2l.vision.benchmarks
    monkeypatch.setattr(bench, "_TASKSETS", dict(bench._TASKSETS))
    monkeypatch.delattr(bench, "_scl_plugin_names", raising=False)
    return bench


def test_register_puts_our_tasksets_in_learn2learns_table(tmp_path, l2l_table):
    own = dict(l2l_table._TASKSETS)
    import scl_plugin.data  # noqa: F401  importing registers nothing
    assert l2l_table._TASKSETS == own
    added = register_learn2learn_benchmarks()
    assert "omniglot-small" in added and "scl/mini-imagenet" in added and "mini-imagenet->cub" in added
    assert all(l2l_table._TASKSETS[k] is own[k] for k in own)           # learn2learn's own five kept
    assert set(list_tasksets()) <= set(l2l_table.list_tasksets())
    assert register_learn2learn_benchmarks() == added                  # idempotent
    # a cross-domain name through learn2learn's entry point, on files: its tasks drawn in order
    # are the harness's test episodes
    mini = _mini(tmp_path)
    places = tmp_path / "places"
    _write_class_folders(places, ["c3", "c1", "c2", "c0"])
    cache = str(tmp_path / "cache")
    ts = l2l_table.get_tasksets("mini-imagenet->places", train_ways=3, train_samples=2, test_ways=3,
                                test_samples=2, root=str(mini), test_root=str(places), cache_dir=cache,
                                episode_seed=4)
    evaluated = build_test_tasks(DataConfig(dataset="mini-imagenet", root=str(mini), test_dataset="folder",
                                            test_root=str(places), ways=3, shots=1, queries=1, image_size=84,
                                            test_episodes=3, episode_seed=4, cache_dir=cache))
    for i in range(3):
        random.seed(i)                              # learn2learn's sample() uses the global state
        _same_task(ts.test.sample(), evaluated[i])
    # learn2learn's own names only with override=True
    assert "scl/omniglot" in added and "omniglot" not in added
    assert "omniglot" in register_learn2learn_benchmarks(prefix="", override=True)


@pytest.mark.skipif(not (SHARED / "omniglot" / "images_background_small1.zip").is_file(),
                    reason="../shared/data/omniglot is not present")
def test_learn2learn_get_tasksets_omniglot_small_on_the_real_data(tmp_path, l2l_table):
    register_learn2learn_benchmarks()
    cache = str(tmp_path / "cache")
    ts = l2l.vision.benchmarks.get_tasksets("omniglot-small", train_ways=5, train_samples=2, test_ways=5,
                                            test_samples=4, num_tasks=6, root=str(SHARED), cache_dir=cache)
    assert type(ts) is l2l.vision.benchmarks.BenchmarkTasksets
    # learn2learn 0.2.0 wraps them in its Taskset (of which l2l.data.TaskDataset is a subclass)
    assert all(type(t) is l2l.data.Taskset and len(t) == 6 for t in ts)
    X, y = ts.train.sample()
    _check_l2l_task((X, y), 5, 2, 1, 28)
    # small1 minus Latin / Latin / small2's unseen alphabets, as the harness splits them
    assert [len(t.dataset.labels) for t in ts] == [110, 26, 106]
    cfg = DataConfig(root=str(SHARED), cache_dir=cache, ways=5, shots=1, queries=3, val_episodes=6,
                     test_episodes=6)
    evaluated, data = build_test_tasks(cfg), build_fewshot(cfg)
    for i in range(6):                              # indices read in order: the harness's episodes
        _check_l2l_task(ts.test[i], 5, 4, 1, 28)
        _same_task(ts.test[i], evaluated[i])
        _same_task(ts.validation[i], data.val_tasks[i])
    # ... and our own entry point gives the same
    ours = get_tasksets("omniglot-small", test_samples=4, root=str(SHARED), cache_dir=cache, test_episodes=6)
    _same_task(ours.test[5], evaluated[5])
