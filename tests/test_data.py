"""Data layer: real on-disk formats built tiny in tmp_path, loaded through the real loaders."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scl_plugin.config import DataConfig
from scl_plugin.data import (DataError, build_fewshot, load_omniglot_challenge,
                             split_support_query)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _cfg(tmp_path, **kw) -> DataConfig:
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    kw.setdefault("augment", "none")
    return DataConfig(**kw)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _check_task(task, ways, shots, queries, channels, size):
    x, y = task
    assert x.shape == (ways * (shots + queries), channels, size, size)
    assert x.dtype == torch.float32
    assert sorted(set(y.tolist())) == list(range(ways))
    assert torch.bincount(y, minlength=ways).tolist() == [shots + queries] * ways
    xs, ys, xq, yq = split_support_query(x, y, ways, shots, queries)
    assert xs.shape[0] == ways * shots and xq.shape[0] == ways * queries
    assert ys.tolist() == [c for c in range(ways) for _ in range(shots)]
    assert yq.tolist() == [c for c in range(ways) for _ in range(queries)]
    # support and query are different samples (no image appears in both)
    sup = {hashlib.md5(t.numpy().tobytes()).hexdigest() for t in xs}
    assert not any(hashlib.md5(t.numpy().tobytes()).hexdigest() in sup for t in xq)
    return xs, ys, xq, yq


def _episode_classes(taskset, meta):
    """Original class ids used by each fixed episode (from the stored task descriptions)."""
    orig = meta.dataset.original_labels
    return [{orig[dd.index] for dd in taskset.sampled_descriptions[i]} for i in range(len(taskset))]


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_tasks_shapes_determinism_and_disjoint_classes(tmp_path):
    cfg = _cfg(tmp_path, dataset="synthetic", ways=5, shots=2, queries=3, image_size=16,
               val_episodes=10, test_episodes=20, augment="standard")
    data = build_fewshot(cfg, seed=0)
    assert (data.num_classes, data.channels, data.image_size) == (40, 3, 16)
    assert len(data.train_set) == 40 * 30 and len(data.test_meta.labels) == 20
    img, label = data.train_set[0]
    assert img.shape == (3, 16, 16) and 0 <= label < 40
    assert sorted(set(data.train_set.targets)) == list(range(40))
    for ts in (data.train_tasks, data.val_tasks, data.test_tasks):
        _check_task(ts.sample(), 5, 2, 3, 3, 16)
    assert len(data.test_tasks) == 20 and len(data.val_tasks) == 10

    # same episode seed -> identical episodes, whatever the run seed and global RNG state
    import random
    random.seed(123)
    again = build_fewshot(cfg, seed=7)
    for i in (0, 5, 19):
        a, b = data.test_tasks[i], again.test_tasks[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    other = build_fewshot(_cfg(tmp_path, dataset="synthetic", ways=5, shots=2, queries=3,
                               image_size=16, val_episodes=10, test_episodes=20, episode_seed=1))
    assert _episode_classes(data.test_tasks, data.test_meta) != \
        _episode_classes(other.test_tasks, other.test_meta)
    # val and test episodes differ from each other, and train / val / test classes never mix
    train_cls = set(data.train_meta.dataset.original_labels)
    val_cls = set(data.val_meta.dataset.original_labels)
    test_cls = set(data.test_meta.dataset.original_labels)
    assert not (train_cls & test_cls) and not (train_cls & val_cls) and not (val_cls & test_cls)
    for cl in _episode_classes(data.test_tasks, data.test_meta):
        assert len(cl) == 5 and cl <= test_cls
    # train episodes: seeded stream, different seeds -> different streams
    t0 = build_fewshot(cfg, seed=0).train_tasks.sample_task_description()
    t0b = build_fewshot(cfg, seed=0).train_tasks.sample_task_description()
    t1 = build_fewshot(cfg, seed=1).train_tasks.sample_task_description()
    assert [d.index for d in t0] == [d.index for d in t0b] != [d.index for d in t1]


def test_two_view_pretrain_set(tmp_path):
    data = build_fewshot(_cfg(tmp_path, dataset="synthetic", image_size=12, augment="standard",
                              val_episodes=2, test_episodes=2))
    (v1, v2), label = data.pretrain_set(two_view=True)[3]
    assert v1.shape == v2.shape == (3, 12, 12) and label == 0
    # two independent augmentations (on 12 px images ~8% of pairs coincide: judge several draws)
    assert any(not torch.equal(a, b) for a, b in (data.pretrain_set(two_view=True)[3][0] for _ in range(5)))
    plain, label2 = data.pretrain_set(two_view=False, augment="none")[3]
    assert plain.shape == (3, 12, 12) and label2 == 0
    (s1, s2), _ = data.pretrain_set(two_view=True, augment="simclr")[3]
    assert s1.shape == (3, 12, 12)


def test_split_support_query_any_order():
    y = torch.tensor([2, 0, 1, 0, 2, 1, 0, 1, 2])
    x = torch.arange(9).float().view(9, 1)
    xs, ys, xq, yq = split_support_query(x, y, ways=3, shots=1, queries=2)
    assert ys.tolist() == [0, 1, 2] and yq.tolist() == [0, 0, 1, 1, 2, 2]
    assert xs.view(-1).tolist() == [1, 2, 0]          # first occurrence of each class
    with pytest.raises(ValueError, match="expected ways"):
        split_support_query(x, y, ways=3, shots=2, queries=2)


# ----------------------------------------------------------------------------- mini-ImageNet
def _make_mini(root: Path, classes=(4, 3, 3), per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for mode, n in zip(("train", "validation", "test"), classes):
        imgs = rng.integers(0, 256, size=(n * per_class, 84, 84, 3), dtype=np.uint8)
        class_dict = {f"n{k + c:08d}": list(range(c * per_class, (c + 1) * per_class))
                      for c in range(n)}
        k += n
        with open(root / f"mini-imagenet-cache-{mode}.pkl", "wb") as f:
            pickle.dump({"image_data": imgs, "class_dict": class_dict}, f)
    return root


def test_mini_imagenet_format_read_only_root(tmp_path):
    root = _make_mini(tmp_path / "mini")
    before = _files(root)
    os.chmod(root, stat.S_IRUSR | stat.S_IXUSR)
    try:
        cfg = _cfg(tmp_path, dataset="mini-imagenet", root=str(root), image_size=84, ways=3,
                   shots=1, queries=2, val_episodes=4, test_episodes=6)
        data = build_fewshot(cfg)
        assert data.num_classes == 4 and data.channels == 3 and len(data.train_set) == 24
        x, y = data.test_tasks[0]
        _check_task((x, y), 3, 1, 2, 3, 84)
        # explicit normalisation with RFS / SCL's mini-ImageNet statistics (a property of the
        # dataset): (uint8 - 120.39586422) / 70.68188272 on channel 0 -> about [-1.70, 1.90]
        assert -1.71 <= x.min() < -1.2 and 1.2 < x.max() <= 2.1
        raw = pickle.load(open(root / "mini-imagenet-cache-train.pkl", "rb"))["image_data"][0]
        want = (torch.from_numpy(raw).permute(2, 0, 1).double()
                - torch.tensor([120.39586422, 115.59361427, 104.54012653], dtype=torch.double).view(3, 1, 1)) \
            / torch.tensor([70.68188272, 68.27635443, 72.54505529], dtype=torch.double).view(3, 1, 1)
        assert torch.allclose(data.train_meta[0][0].double(), want, atol=1e-5)
        _check_task(data.train_tasks.sample(), 3, 1, 2, 3, 84)
        assert _files(root) == before                     # nothing written in the data root
    finally:
        os.chmod(root, stat.S_IRWXU)


def test_cross_domain_folder_replaces_test_split(tmp_path):
    mini = _make_mini(tmp_path / "mini", classes=(4, 4, 3))
    folder = tmp_path / "places"
    rng = np.random.default_rng(1)
    for c in range(4):
        (folder / f"class_{c}").mkdir(parents=True)
        for i in range(5):
            arr = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"class_{c}" / f"{i}.jpg")
    (folder / "class_0" / "notes.txt").write_text("not an image")
    cfg = _cfg(tmp_path, dataset="mini-imagenet", root=str(mini), test_dataset="folder",
               test_root=str(folder), image_size=84, ways=4, shots=2, queries=3,
               val_episodes=2, test_episodes=5)
    data = build_fewshot(cfg)
    assert data.test_name == "folder" and len(data.test_meta.labels) == 4
    assert len(data.test_meta) == 20
    _check_task(data.test_tasks[0], 4, 2, 3, 3, 84)


# ----------------------------------------------------------------------------- CIFAR-FS / FC100
def _make_cifarfs_raw(root: Path, per_class=4):
    rng = np.random.default_rng(2)
    raw = root / "cifarfs" / "cifar100"
    names = {"train": ["apple", "bed", "bee", "cup"], "val": ["fox", "lamp", "man"],
             "test": ["oak", "ray", "sea"]}
    (raw / "splits" / "bertinetto").mkdir(parents=True)
    for split, classes in names.items():
        (raw / "splits" / "bertinetto" / f"{split}.txt").write_text("\n".join(classes) + "\n")
        for c in classes:
            (raw / "data" / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    raw / "data" / c / f"{c}_{i}.png")
    return root


def test_cifarfs_raw_and_processed_layouts(tmp_path):
    root = _make_cifarfs_raw(tmp_path / "cfs")
    before = _files(root)
    cfg = _cfg(tmp_path, dataset="cifarfs", root=str(root), image_size=32, ways=3, shots=1,
               queries=3, val_episodes=2, test_episodes=3)
    data = build_fewshot(cfg)
    assert data.num_classes == 4 and len(data.train_set) == 16
    _check_task(data.test_tasks[1], 3, 1, 3, 3, 32)
    assert _files(root) == before                        # raw layout is read in place
    # learn2learn's processed layout, read by l2l's CIFARFS (an ImageFolder)
    proc = tmp_path / "cfs2"
    import shutil
    for split in ("train", "val", "test"):
        for c in (root / "cifarfs/cifar100/splits/bertinetto" / f"{split}.txt").read_text().split():
            shutil.copytree(root / "cifarfs/cifar100/data" / c, proc / "cifarfs/processed" / split / c)
    data2 = build_fewshot(_cfg(tmp_path, dataset="cifarfs", root=str(proc), image_size=32, ways=3,
                               shots=1, queries=3, val_episodes=2, test_episodes=3))
    assert data2.num_classes == 4
    assert len(data2.test_meta.labels) == 3
    assert not list(proc.glob("*.pkl"))                   # no l2l bookkeeping in the root
    _check_task(data2.test_tasks[0], 3, 1, 3, 3, 32)


def test_fc100_format(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "fc100"
    root.mkdir()
    start = 0
    for split, n in (("train", 5), ("val", 3), ("test", 3)):
        labels = [start + c for c in range(n) for _ in range(4)]
        start += n
        with open(root / f"FC100_{split}.pickle", "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8),
                         "labels": labels}, f)
    data = build_fewshot(_cfg(tmp_path, dataset="fc100", root=str(root), image_size=32, ways=3,
                              shots=1, queries=2, val_episodes=2, test_episodes=3))
    assert data.num_classes == 5 and len(data.train_set) == 20
    assert sorted(set(data.train_set.targets)) == [0, 1, 2, 3, 4]
    _check_task(data.test_tasks[2], 3, 1, 2, 3, 32)
    assert not list(root.glob("*bookkeeping*"))


# ----------------------------------------------------------------------------- omniglot-style zips
def _char_png(rng, size=105):
    arr = np.full((size, size), 255, np.uint8)            # white background, black strokes
    r, c = rng.integers(10, 90, 2)
    arr[r:r + 12, c:c + 3] = 0
    return _png(arr)


def _make_omniglot_zips(folder: Path, drawers=6):
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True)
    shared_bytes = {}
    layout = {"images_background_small1": {"Aaa": 3, "Bbb": 2, "Shared": 2},
              "images_background_small2": {"Shared": 2, "Zzz": 3}}
    for top, alphabets in layout.items():
        with zipfile.ZipFile(folder / f"{top}.zip", "w") as zf:
            for alpha, n in alphabets.items():
                for c in range(1, n + 1):
                    for d in range(1, drawers + 1):
                        key = (alpha, c, d)
                        data = shared_bytes.get(key) if alpha == "Shared" else None
                        if data is None:
                            data = _char_png(rng)
                            if alpha == "Shared":
                                shared_bytes[key] = data
                        zf.writestr(f"{top}/{alpha}/character{c:02d}/{c:04d}_{d:02d}.png", data)
    with zipfile.ZipFile(folder / "all_runs.zip", "w") as zf:
        for run in (1, 2):
            lines = []
            for k in range(1, 4):
                zf.writestr(f"run{run:02d}/training/class{k:02d}.png", _char_png(rng))
            for m, k in enumerate((3, 1, 2), start=1):
                zf.writestr(f"run{run:02d}/test/item{m:02d}.png", _char_png(rng))
                lines.append(f"run{run:02d}/test/item{m:02d}.png run{run:02d}/training/class{k:02d}.png")
            zf.writestr(f"run{run:02d}/class_labels.txt", "\n".join(lines) + "\n")
    return folder


def test_omniglot_style_zips_split_and_dedup(tmp_path):
    folder = _make_omniglot_zips(tmp_path / "data" / "omniglot")
    before = _files(tmp_path / "data")
    cfg = _cfg(tmp_path, dataset="omniglot-small", root=str(tmp_path / "data"), ways=2, shots=1,
               queries=3, val_episodes=3, test_episodes=4, image_size=20)
    data = build_fewshot(cfg)
    # small1: 7 characters; val = last alphabet "Shared" (2 >= 15% of 7); train = Aaa + Bbb = 5
    assert data.num_classes == 5 and data.channels == 1
    assert data.splits_info["val"].endswith("alphabets Shared")
    assert len(data.val_meta.labels) == 2
    # small2's "Shared" characters are byte-identical to small1's: dropped from test
    assert len(data.test_meta.labels) == 3
    x, y = data.test_tasks[0]
    _check_task((x, y), 2, 1, 3, 1, 20)
    # inverted: background (most pixels) is the lowest value, strokes are positive
    raw = data.train_meta[0][0]
    assert (raw == raw.min()).float().mean() > 0.5 and raw.max() > 0
    assert _files(tmp_path / "data") == before
    # the folder itself is accepted as root too, and the cache is reused
    data2 = build_fewshot(_cfg(tmp_path, dataset="omniglot-small", root=str(folder), ways=2,
                               shots=1, queries=3, val_episodes=3, test_episodes=4, image_size=20))
    assert torch.equal(data2.test_tasks[3][0], data.test_tasks[3][0])
    assert len(list((tmp_path / "cache" / "omniglot-small").glob("*.pt"))) == 2

    runs = load_omniglot_challenge(str(tmp_path / "data"), 20, str(tmp_path / "cache"))
    assert len(runs) == 2 and runs[0].name == "run01"
    assert runs[0].support_x.shape == (3, 1, 20, 20) and runs[0].query_x.shape == (3, 1, 20, 20)
    assert runs[0].support_y.tolist() == [0, 1, 2] and runs[0].query_y.tolist() == [2, 0, 1]


# ----------------------------------------------------------------------------- errors
def test_errors_name_expected_path_and_format(tmp_path):
    with pytest.raises(DataError, match=r"mini-imagenet: data root .*nowhere does not exist.*"
                                        r"mini-imagenet-cache-\{train,validation,test\}\.pkl"):
        build_fewshot(_cfg(tmp_path, dataset="mini-imagenet", root=str(tmp_path / "nowhere")))
    assert not (tmp_path / "nowhere").exists()           # l2l would have mkdir-ed it

    root = _make_mini(tmp_path / "mini")
    (root / "mini-imagenet-cache-test.pkl").unlink()
    with pytest.raises(DataError, match=r"missing file .*mini-imagenet-cache-test\.pkl.*zenodo"):
        build_fewshot(_cfg(tmp_path, dataset="mini-imagenet", root=str(root)))

    with open(root / "mini-imagenet-cache-test.pkl", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(DataError, match=r"not in the learn2learn format.*'image_data'"):
        build_fewshot(_cfg(tmp_path, dataset="mini-imagenet", root=str(root)))
    (root / "mini-imagenet-cache-test.pkl").write_bytes(b"garbage, not a pickle")
    with pytest.raises(DataError, match="not in the learn2learn format"):
        build_fewshot(_cfg(tmp_path, dataset="mini-imagenet", root=str(root)))

    with pytest.raises(DataError, match=r"omniglot-small: missing file images_background_small1\.zip"
                                        r".*brendenlake"):
        build_fewshot(_cfg(tmp_path, dataset="omniglot-small", root=str(tmp_path)))
    bad = tmp_path / "bad" / "omniglot"
    bad.mkdir(parents=True)
    (bad / "images_background_small1.zip").write_bytes(b"not a zip")
    (bad / "images_background_small2.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="is not a readable zip"):
        build_fewshot(_cfg(tmp_path, dataset="omniglot-small", root=str(bad)))

    with pytest.raises(DataError, match=r"synthetic val.*25-way tasks need at least 25 classes "
                                        r"but this split has 20"):
        build_fewshot(_cfg(tmp_path, dataset="synthetic", ways=25, image_size=8))
    with pytest.raises(DataError, match=r"shots \+ queries = 20 \+ 15 = 35 images per class.*"
                                        r"class 0 has 30"):
        build_fewshot(_cfg(tmp_path, dataset="synthetic", shots=20, queries=15, image_size=8))
    with pytest.raises(DataError, match="no images found under"):
        (tmp_path / "empty" / "cls").mkdir(parents=True)
        build_fewshot(_cfg(tmp_path, dataset="synthetic", test_dataset="folder",
                           test_root=str(tmp_path / "empty"), image_size=8))


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    if not (SHARED / "omniglot" / "images_background_small1.zip").is_file():
        pytest.skip("../shared/data/omniglot is not present")
    return tmp_path_factory.mktemp("real-cache")


def test_real_omniglot_small(real_cache):
    before = _files(SHARED)
    cfg = DataConfig(root=str(SHARED), cache_dir=str(real_cache), ways=5, shots=1, queries=15,
                     val_episodes=20, test_episodes=50)
    data = build_fewshot(cfg)
    # 136 small1 characters = 110 train/pretrain + 26 val (the held-out "Latin" alphabet);
    # test = 156 small2 characters minus 50 (Greek, Latin) byte-identical to small1's = 106
    assert data.num_classes == 110 and len(data.train_set) == 110 * 20
    assert len(data.val_meta.labels) == 26 and "Latin" in data.splits_info["val"]
    assert len(data.test_meta.labels) == 106 and len(data.test_meta) == 106 * 20
    assert (data.channels, data.image_size) == (1, 28)
    _check_task(data.test_tasks[0], 5, 1, 15, 1, 28)
    _check_task(data.train_tasks.sample(), 5, 1, 15, 1, 28)
    # no test image is identical to any train or val image (content level leak check)
    def digests(meta):
        return {hashlib.md5(meta[i][0].numpy().tobytes()).hexdigest() for i in range(len(meta))}
    test_d = digests(data.test_meta)
    assert not test_d & digests(data.train_meta) and not test_d & digests(data.val_meta)
    assert _files(SHARED) == before


def test_real_omniglot_challenge(real_cache):
    runs = load_omniglot_challenge(str(SHARED), 28, str(real_cache))
    assert len(runs) == 20
    for r in runs:
        assert r.support_x.shape == (20, 1, 28, 28) and r.query_x.shape == (20, 1, 28, 28)
        assert r.support_y.tolist() == list(range(20))
        assert r.query_y.shape == (20,) and 0 <= r.query_y.min() and r.query_y.max() <= 19
    # answer key of run01 as written in its class_labels.txt
    assert runs[0].query_y[:4].tolist() == [7, 8, 1, 18]


def test_cub_closerlook_split(tmp_path):
    from learn2learn.vision.datasets.cu_birds200 import SPLITS
    images = tmp_path / "cub" / "cubirds200" / "CUB_200_2011" / "images"
    names = sorted(sum(SPLITS.values(), []))
    assert len(names) == 200
    rng = np.random.default_rng(5)
    for n in names:
        (images / n).mkdir(parents=True)
        for i in range(2):   # PNG bytes under a .jpg name: PIL sniffs the content
            (images / n / f"{n}_{i}.jpg").write_bytes(
                _png(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)))
    data = build_fewshot(_cfg(tmp_path, dataset="mini-imagenet", root=str(_make_mini(tmp_path / "m")),
                              test_dataset="cub", test_root=str(tmp_path / "cub"), image_size=84,
                              ways=3, shots=1, queries=1, val_episodes=2, test_episodes=3))
    # closerlook novel classes: sorted class index % 4 == 3 -> 50 classes
    assert len(data.test_meta.labels) == 50
    assert sorted(set(data.test_meta.dataset.original_labels)) == list(range(3, 200, 4))
    _check_task(data.test_tasks[0], 3, 1, 1, 3, 84)
    assert not list((tmp_path / "cub").glob("*.pkl"))


def test_second_view_has_its_own_augmentation():
    """data.augment_second_view: view 1 keeps `augment` (here none), view 2 gets its own."""
    from scl_plugin.data.transforms import ImageSet
    imgs = torch.rand(4, 1, 12, 12)
    base = ImageSet(imgs, [0, 1, 0, 1], kind="gray", channels=1, image_size=12)
    both = base.variant("none", two_view=True, second_augment="standard")
    torch.manual_seed(0)
    (v1, v2), label = both[2]
    plain, _ = base[2]
    assert label == 0 and torch.equal(v1, plain) and not torch.allclose(v2, plain)
    same = base.variant("standard", two_view=True)
    assert same.augment2 is same.augment


def test_real_omniglot_small_pinned_bit_identical(real_cache):
    """Checksums computed on the code before the data layer was split into per-format modules:
    omniglot-small images and the seeded train/val/test episodes must never change (a long
    training run and RESULTS.md compare across runs on them)."""
    cfg = DataConfig(root=str(SHARED), cache_dir=str(real_cache), ways=5, shots=1, queries=15,
                     val_episodes=20, test_episodes=50)
    data = build_fewshot(cfg, seed=0)

    def md5(b):
        return hashlib.md5(b).hexdigest()
    h = hashlib.md5()
    for meta in (data.train_meta, data.val_meta, data.test_meta):
        for i in (0, 1, 57, len(meta) - 1):
            h.update(meta[i][0].numpy().tobytes())
    assert h.hexdigest() == "c1f1802c56f163ec5579580a544679ec"
    raw = data.train_meta.dataset.source
    assert md5(torch.stack([torch.as_tensor(raw[i]) for i in (0, 5, 100)]).numpy().tobytes()) \
        == "79d0d7af73cff8e4df65b4309ea3588a"

    def desc(ts, n):
        return [[dd.index for dd in ts.sampled_descriptions[i]] for i in range(n)]
    assert desc(data.test_tasks, 1)[0][:6] == [657, 646, 656, 644, 649, 652]
    assert md5(str(desc(data.test_tasks, 3)).encode()) == "493870be01ef1828e0374dba1903925c"
    assert md5(str(desc(data.val_tasks, 3)).encode()) == "5a066d4a4aef7057b7f310b5f20cf931"
    x, y = data.test_tasks[0]
    assert md5(x.contiguous().numpy().tobytes()) == "6a6c04b3c9cd63d6589ffcb7ac71b480"
    assert y.tolist()[:10] == [4] * 10
    train = [data.train_tasks.sample_task_description() for _ in range(2)]
    assert md5(str([[d.index for d in t] for t in train]).encode()) == "872343d8e45bd7f83c14745e7df7d450"
