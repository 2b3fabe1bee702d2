"""Every on-disk layout of the README table, written tiny in exactly its format, loaded through
the registry; the same data in two layouts gives the same episodes; caches are uint8 memmaps."""
from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scl_plugin.config import DataConfig
from scl_plugin.data import DataError, build_fewshot, load_splits
from scl_plugin.data.base import NpySource


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` and ``str`` as Python 2 ``str`` (BINSTRING), like the RFS / MetaOptNet
    pickles made under Python 2, which only load with ``encoding='latin1'``."""
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)
    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def _py2_pickle(obj, path: Path):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())
    import pickletools                              # really Python-2 style: str, never unicode
    ops = {op.name for op, _, _ in pickletools.genops(buf.getvalue())}
    assert "SHORT_BINSTRING" in ops and not ops & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES"}


def _cfg(tmp_path, **kw) -> DataConfig:
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    kw.setdefault("augment", "none")
    kw.setdefault("val_episodes", 3)
    kw.setdefault("test_episodes", 4)
    return DataConfig(**kw)


def _same_episodes(a, b, n=4):
    for ts_a, ts_b in ((a.test_tasks, b.test_tasks), (a.val_tasks, b.val_tasks)):
        for i in range(min(n, len(ts_a))):
            xa, ya = ts_a[i]
            xb, yb = ts_b[i]
            assert torch.equal(ya, yb) and torch.equal(xa, xb)
    assert a.num_classes == b.num_classes
    assert torch.equal(a.train_meta[5][0], b.train_meta[5][0])


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- mini-ImageNet
MINI_CLASSES = {"train": ["n01", "n02", "n03", "n04"], "val": ["n05", "n06", "n07"],
                "test": ["n08", "n09", "n10"]}


def _mini_data(per_class=5, size=84):
    """Per split: images (N, size, size, 3) uint8 and class names, classes interleaved in file
    order (not sorted, not grouped) so canonical ordering matters."""
    rng = np.random.default_rng(0)
    out = {}
    for split, classes in MINI_CLASSES.items():
        names = [classes[(i * 5) % len(classes)] for i in range(per_class * len(classes))]
        names = names[::-1]
        out[split] = (rng.integers(0, 256, (len(names), size, size, 3), dtype=np.uint8), names)
    return out


def _write_mini_l2l(root: Path, data):
    root.mkdir(parents=True)
    for split, mode in (("train", "train"), ("val", "validation"), ("test", "test")):
        imgs, names = data[split]
        class_dict = {}
        for i, n in enumerate(names):
            class_dict.setdefault(n, []).append(i)
        with open(root / f"mini-imagenet-cache-{mode}.pkl", "wb") as f:
            pickle.dump({"image_data": imgs, "class_dict": class_dict}, f)


def _write_mini_rfs(root: Path, data):
    root.mkdir(parents=True)
    ids = {n: i for i, n in enumerate(sorted(sum(MINI_CLASSES.values(), [])))}
    files = {"train": "miniImageNet_category_split_train_phase_train.pickle",
             "val": "miniImageNet_category_split_val.pickle",
             "test": "miniImageNet_category_split_test.pickle"}
    for split, fname in files.items():
        imgs, names = data[split]
        _py2_pickle({"data": imgs, "labels": [ids[n] for n in names],
                     "catname2label": {n: ids[n] for n in set(names)}}, root / fname)
    # the pretraining-phase val/test pickles RFS also ships are ignored
    _py2_pickle({"data": data["train"][0][:2], "labels": [0, 1]},
                root / "miniImageNet_category_split_train_phase_val.pickle")


def _write_mini_csv(root: Path, data):
    (root / "images").mkdir(parents=True)
    for split, (imgs, names) in data.items():
        rows = ["filename,label"]
        for i, (img, n) in enumerate(zip(imgs, names)):
            fname = f"{n}{split}{i:08d}.jpg"                  # PNG bytes: lossless, PIL sniffs
            (root / "images" / fname).write_bytes(_png(img))
            rows.append(f"{fname},{n}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")


def test_mini_imagenet_three_layouts_same_episodes_uint8_memmap(tmp_path):
    data = _mini_data()
    _write_mini_l2l(tmp_path / "l2l", data)
    _write_mini_rfs(tmp_path / "rfs", data)
    _write_mini_csv(tmp_path / "csv", data)
    kw = dict(dataset="mini-imagenet", image_size=84, ways=3, shots=1, queries=2)
    built = {name: build_fewshot(_cfg(tmp_path, root=str(tmp_path / name), **kw))
             for name in ("l2l", "rfs", "csv")}
    _same_episodes(built["l2l"], built["rfs"])
    _same_episodes(built["l2l"], built["csv"])
    d = built["rfs"]
    assert d.num_classes == 4 and len(d.train_set) == 20 and len(d.test_meta.labels) == 3
    # RFS / SCL normalisation, a property of the dataset
    imgs, names = data["train"]
    first = min(range(len(names)), key=lambda i: (names[i], i))     # canonical order: class, file
    want = (torch.from_numpy(imgs[first]).permute(2, 0, 1).double()
            - torch.tensor([120.39586422, 115.59361427, 104.54012653]).double().view(3, 1, 1)) \
        / torch.tensor([70.68188272, 68.27635443, 72.54505529]).double().view(3, 1, 1)
    assert torch.allclose(d.train_meta[0][0].double(), want, atol=1e-5)
    # the split is a read-only uint8 memmap of the cache, and pickles as its path only
    src = d.train_meta.dataset.source
    assert isinstance(src, NpySource) and src.array.dtype == np.uint8
    assert isinstance(src.array, np.memmap) and src[0].dtype == torch.uint8
    assert len(pickle.dumps(src)) < 1000
    assert torch.equal(pickle.loads(pickle.dumps(src))[3], src[3])
    assert len(list((tmp_path / "cache" / "mini-imagenet").glob("*/images.npy"))) == 9
    # forced format: the rfs root has no learn2learn pickles
    with pytest.raises(DataError, match=r"mini-imagenet: missing file .*mini-imagenet-cache-train\.pkl"):
        load_splits("mini-imagenet", tmp_path / "rfs", image_size=84, format="l2l")
    with pytest.raises(DataError, match=r"unknown data.format 'pkl'; mini-imagenet accepts auto, l2l, rfs, csv"):
        load_splits("mini-imagenet", tmp_path / "rfs", image_size=84, format="pkl")


def test_unknown_layout_names_every_expected_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        build_fewshot(_cfg(tmp_path, dataset="mini-imagenet", root=str(tmp_path / "empty")))
    msg = str(e.value)
    assert "\n" not in msg and "no known layout" in msg
    for expected in ("mini-imagenet-cache-{train,validation,test}.pkl",
                     "miniImageNet_category_split_train_phase_train.pickle", "train,val,test}.csv"):
        assert expected in msg
    with pytest.raises(DataError, match=r"tiered-imagenet: no known layout.*_images_png\.pkl.*_images\.npz"):
        load_splits("tiered-imagenet", tmp_path / "empty", image_size=84)


def test_load_splits_is_built_once_per_process(tmp_path, monkeypatch):
    data = _mini_data(per_class=3)
    _write_mini_rfs(tmp_path / "rfs", data)
    a = load_splits("mini-imagenet", tmp_path / "rfs", image_size=84, cache_dir=str(tmp_path / "c"))
    b = load_splits("mini-imagenet", str(tmp_path / "rfs"), image_size=84, cache_dir=str(tmp_path / "c"))
    assert a["train"] is b["train"] and a is not b
    # a new process (memo cleared) memory-maps the cache and never opens the pickles again
    from scl_plugin.data import registry
    from scl_plugin.data import pickles
    registry.clear_cache()

    def no_pickle(path):
        raise AssertionError(f"read {path}")
    monkeypatch.setattr(pickles, "read_pickle", no_pickle)
    c = load_splits("mini-imagenet", tmp_path / "rfs", image_size=84, cache_dir=str(tmp_path / "c"))
    assert c["train"] is not a["train"] and c["train"].labels == a["train"].labels
    assert torch.equal(c["test"].source[4], a["test"].source[4])


# ----------------------------------------------------------------------------- tiered-ImageNet
def test_tiered_imagenet_l2l_and_rfs_layouts_same_episodes(tmp_path):
    rng = np.random.default_rng(1)
    for_split = {"train": 4, "val": 3, "test": 3}
    l2l_dir = tmp_path / "l2l" / "tiered-imagenet"
    l2l_dir.mkdir(parents=True)
    (tmp_path / "rfs").mkdir()
    start = 0
    for split, n in for_split.items():
        labels = [start + (i * 5) % n for i in range(n * 4)]      # interleaved classes
        start += n
        imgs = rng.integers(0, 256, (len(labels), 84, 84, 3), dtype=np.uint8)
        # learn2learn: a pickled list of PNG-encoded images (numpy uint8 buffers) + label_specific
        with open(l2l_dir / f"{split}_images_png.pkl", "wb") as f:
            pickle.dump([np.frombuffer(_png(im), np.uint8) for im in imgs], f)
        with open(l2l_dir / f"{split}_labels.pkl", "wb") as f:
            pickle.dump({"label_specific": np.asarray(labels), "label_general": np.zeros(len(labels)),
                         "label_specific_str": [f"c{v}" for v in labels]}, f)
        # RFS / MetaOptNet: npz with 'images' + latin1 labels pickle
        np.savez(tmp_path / "rfs" / f"{split}_images.npz", images=imgs)
        _py2_pickle({"labels": labels, "label_specific": labels}, tmp_path / "rfs" / f"{split}_labels.pkl")
    kw = dict(dataset="tiered-imagenet", image_size=84, ways=3, shots=1, queries=2)
    a = build_fewshot(_cfg(tmp_path, root=str(tmp_path / "l2l"), **kw))
    b = build_fewshot(_cfg(tmp_path, root=str(tmp_path / "rfs"), **kw))
    assert a.num_classes == 4 and len(a.train_set) == 16
    _same_episodes(a, b)
    assert isinstance(b.test_meta.dataset.source, NpySource)
    assert not list((tmp_path / "l2l").glob("*bookkeeping*"))


# ----------------------------------------------------------------------------- CIFAR-FS / FC100
CIFAR_NAMES = {"train": ["bee", "apple", "cup", "bed"], "val": ["man", "fox", "lamp"],
               "test": ["sea", "oak", "ray"]}


def test_cifarfs_layouts_same_episodes_whatever_the_split_file_order(tmp_path):
    rng = np.random.default_rng(2)
    raw = tmp_path / "raw" / "cifarfs" / "cifar100"
    (raw / "splits" / "bertinetto").mkdir(parents=True)
    ids = {n: 3 * i for i, n in enumerate(sorted(sum(CIFAR_NAMES.values(), [])))}   # sparse ids
    (tmp_path / "rfs").mkdir()
    for split, classes in CIFAR_NAMES.items():   # split files deliberately not sorted
        (raw / "splits" / "bertinetto" / f"{split}.txt").write_text("\n".join(classes) + "\n")
        imgs, labels = [], []
        for c in classes:
            (raw / "data" / c).mkdir(parents=True)
            proc = tmp_path / "proc" / "cifarfs" / "processed" / split / c
            proc.mkdir(parents=True)
            for i in range(4):
                im = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(im).save(raw / "data" / c / f"{c}_s_{i}.png")
                Image.fromarray(im).save(proc / f"{c}_s_{i}.png")
                imgs.append(im)
                labels.append(ids[c])
        _py2_pickle({"data": np.stack(imgs), "labels": labels}, tmp_path / "rfs" / f"CIFAR_FS_{split}.pickle")
    kw = dict(dataset="cifarfs", image_size=32, ways=3, shots=1, queries=2)
    built = [build_fewshot(_cfg(tmp_path, root=str(tmp_path / n), **kw)) for n in ("raw", "proc", "rfs")]
    _same_episodes(built[0], built[1])
    _same_episodes(built[0], built[2])
    assert built[0].num_classes == 4
    # RFS's CIFAR statistics
    x = built[2].train_meta[0][0]
    assert torch.allclose(built[2].train_meta.dataset.mean.flatten(), torch.tensor([0.5071, 0.4867, 0.4408]))
    raw_first = np.array(Image.open(raw / "data" / "apple" / "apple_s_0.png"))   # sorted first
    want = (torch.from_numpy(raw_first).permute(2, 0, 1).float() / 255
            - torch.tensor([0.5071, 0.4867, 0.4408]).view(3, 1, 1)) / torch.tensor([0.2675, 0.2565, 0.2761]).view(3, 1, 1)
    assert torch.allclose(x, want, atol=1e-5)


# ----------------------------------------------------------------------------- CloserLook json
def test_closerlook_json_lists_as_cross_domain_test_set(tmp_path):
    rng = np.random.default_rng(3)
    data = _mini_data(per_class=3)
    _write_mini_rfs(tmp_path / "mini", data)
    places = tmp_path / "places"
    lists = {}
    for split, classes in (("base", ["b1", "b2"]), ("val", ["v1", "v2"]), ("novel", ["n3", "n1", "n2"])):
        names, labels = [], []
        for k, c in enumerate(classes):
            (places / "images" / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
                    places / "images" / c / f"{i}.jpg")
                # paths as written on the machine that made the lists
                names.append(f"/home/someone/filelists/places/images/{c}/{i}.jpg")
                labels.append(k)
        lists[split] = {"label_names": classes, "image_names": names, "image_labels": labels}
        (places / f"{split}.json").write_text(json.dumps(lists[split]))
    kw = dict(dataset="mini-imagenet", root=str(tmp_path / "mini"), test_dataset="folder",
              test_root=str(places), image_size=84, ways=3, shots=1, queries=2)
    d = build_fewshot(_cfg(tmp_path, **kw))
    assert len(d.test_meta.labels) == 3 and len(d.test_meta) == 12
    x, y = d.test_tasks[0]
    assert x.shape == (9, 3, 84, 84)
    # scl-eval's test-only build: the same episodes, normalised with the *training* data's
    # statistics (mini-ImageNet's), not the test folder's
    from scl_plugin.data.fewshot import build_test_tasks
    xt, yt = build_test_tasks(_cfg(tmp_path, **kw))[0]
    assert torch.equal(x, xt) and torch.equal(y, yt)
    # the same images as class folders give the same episodes (class order = label order here)
    import shutil
    folders = tmp_path / "as_folders"
    for k, c in enumerate(["n3", "n1", "n2"]):
        shutil.copytree(places / "images" / c, folders / f"class{k}")
    d2 = build_fewshot(_cfg(tmp_path, **dict(kw, test_root=str(folders))))
    x2, y2 = d2.test_tasks[0]
    assert torch.equal(x, x2) and torch.equal(y, y2)
    with pytest.raises(DataError, match="found neither there nor under"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "novel.json").write_text(json.dumps(lists["novel"]))
        build_fewshot(_cfg(tmp_path, **dict(kw, test_root=str(tmp_path / "bad"))))
