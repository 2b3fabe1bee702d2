"""A damaged input file is one line and one failed method (issue 23): every decoding error of a
data file (zip member with a bad CRC or cut short, truncated / non-image PNG or JPEG, truncated
pickle, array of the wrong shape) is a one-line DataError naming the file and the member / item
in it and saying to replace it, and no cache entry is written for what failed to decode."""
from __future__ import annotations

import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scl_plugin.cli import train_main
from scl_plugin.data import DataError, load_omniglot_challenge, load_splits
from scl_plugin.data.registry import clear_cache

from test_data import _make_omniglot_zips, _png
from test_data_formats import _mini_data, _py2_pickle, _write_mini_l2l, _write_mini_rfs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["data.image_size=16", "data.augment=none", "data.batch_size=32", "data.val_episodes=3",
        "train.validate=false", "model.name=conv4", "model.kwargs.depth=2", "model.kwargs.hidden=16",
        "train.epochs=1", "train.steps_per_epoch=3", "train.lr_decay_epochs=[1]", "train.log_every=1"]


@pytest.fixture(autouse=True)
def _fresh_registry():
    clear_cache()                # load_splits memoises per process; every test builds afresh
    yield
    clear_cache()


def _damaged(excinfo, *names) -> str:
    """The DataError's message: one line, naming every one of ``names``, saying to replace."""
    assert type(excinfo.value) is DataError, type(excinfo.value)
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for n in names:
        assert str(n) in msg, (n, msg)
    assert "re-download" in msg or "replace" in msg, msg
    return msg


def _cache_files(cache: Path):
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()
                  and not p.name.endswith(".lock")) if cache.exists() else []


def _no_partial_entries(cache: Path):
    """No temporary folder, and every .npy cache folder that exists is complete."""
    if not cache.exists():
        return
    assert not [p for p in cache.rglob("*.tmp*")], list(cache.rglob("*.tmp*"))
    for npy in cache.rglob("images.npy"):
        assert (npy.parent / "labels.json").is_file(), npy


# ----------------------------------------------------------------------------- zip helpers
def _member_offset(zip_path: Path, name: str):
    """(offset of the member's stored bytes in the zip file, their length)."""
    with zipfile.ZipFile(zip_path) as zf:
        zi = zf.getinfo(name)
    raw = zip_path.read_bytes()
    n, m = struct.unpack("<HH", raw[zi.header_offset + 26:zi.header_offset + 30])
    return zi.header_offset + 30 + n + m, zi.compress_size


def _flip_member_bytes(zip_path: Path, name: str):
    """Corrupt a member's stored bytes in place (the zip's directory stays intact)."""
    start, size = _member_offset(zip_path, name)
    raw = bytearray(zip_path.read_bytes())
    for k in range(size // 2, size // 2 + 4):
        raw[start + k] ^= 0xFF
    zip_path.write_bytes(bytes(raw))


def _rewrite_zip(zip_path: Path, replace: dict, compression=zipfile.ZIP_STORED):
    """The same zip with the bytes of the members in ``replace`` swapped for the given ones."""
    with zipfile.ZipFile(zip_path) as zf:
        members = [(n, zf.read(n)) for n in zf.namelist()]
    with zipfile.ZipFile(zip_path, "w", compression) as zf:
        for n, data in members:
            zf.writestr(n, replace.get(n, data))


def _pngs(zip_path: Path):
    with zipfile.ZipFile(zip_path) as zf:
        return sorted(n for n in zf.namelist() if n.endswith(".png"))


# ----------------------------------------------------------------------------- omniglot-small
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_omniglot_zip_member_with_bad_crc(tmp_path, compression):
    folder = _make_omniglot_zips(tmp_path / "data" / "omniglot")
    z1 = folder / "images_background_small1.zip"
    if compression != zipfile.ZIP_STORED:
        _rewrite_zip(z1, {}, compression)
    member = _pngs(z1)[4]
    assert member.startswith("images_background_small1/Aaa/character01/")   # the real layout
    _flip_member_bytes(z1, member)
    with zipfile.ZipFile(z1) as zf, pytest.raises((zipfile.BadZipFile, zlib.error, EOFError)):
        zf.read(member)                     # the damage is what a bad download looks like
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        load_splits("omniglot-small", tmp_path / "data", image_size=28, cache_dir=str(cache))
    msg = _damaged(e, z1, member, "re-download")
    if compression == zipfile.ZIP_STORED:
        assert "Bad CRC-32" in msg
    assert _cache_files(cache) == []        # no cache entry for the damaged zip (nor small2)


def test_omniglot_zip_member_that_is_not_a_png(tmp_path):
    folder = _make_omniglot_zips(tmp_path / "omniglot")
    z1 = folder / "images_background_small1.zip"
    members = _pngs(z1)
    with zipfile.ZipFile(z1) as zf:
        good = zf.read(members[7])
    cache = tmp_path / "cache"
    for bad in (good[:len(good) // 2], good[:20], b"<html>404 Not Found</html>"):
        _rewrite_zip(z1, {members[7]: bad})
        with pytest.raises(DataError) as e:
            load_splits("omniglot-small", folder, image_size=28, cache_dir=str(cache))
        _damaged(e, z1, members[7], "re-download")
        assert _cache_files(cache) == []
        clear_cache()
    # the intact zip again: decodes, and is cached (two zips -> two .pt files)
    _rewrite_zip(z1, {members[7]: good})
    splits = load_splits("omniglot-small", folder, image_size=28, cache_dir=str(cache))
    assert splits["train"].source[0].shape == (1, 28, 28)
    assert len(_cache_files(cache)) == 2


def test_omniglot_challenge_member_damaged(tmp_path):
    folder = _make_omniglot_zips(tmp_path / "omniglot")
    runs = folder / "all_runs.zip"
    member = "run02/test/item02.png"
    with zipfile.ZipFile(runs) as zf:
        data = zf.read(member)
    _rewrite_zip(runs, {member: data[:len(data) // 3]})
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        load_omniglot_challenge(folder, 20, str(cache))
    _damaged(e, runs, member)
    _flip_member_bytes(runs, "run01/training/class02.png")
    with pytest.raises(DataError) as e:
        load_omniglot_challenge(folder, 20, str(cache))
    _damaged(e, runs, "run01/training/class02.png", "Bad CRC-32")
    assert _cache_files(cache) == []


def test_damaged_omniglot_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    folder = _make_omniglot_zips(tmp_path / "data" / "omniglot")
    z2 = folder / "images_background_small2.zip"
    member = _pngs(z2)[-1]
    _flip_member_bytes(z2, member)
    args = [str(CONFIGS / "ce.yaml"), "data.dataset=omniglot-small", f"data.root={tmp_path / 'data'}",
            *TINY, "data.ways=2", "data.shots=1", "data.queries=3", "data.test_episodes=4",
            f"data.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}"]
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert str(z2) in err and member in err and "re-download" in err


# ----------------------------------------------------------------------------- image files
def _jpeg(arr) -> bytes:
    import io
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _class_folders(root: Path, classes, per_class=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{c}_{i}.jpg").write_bytes(_jpeg(rng.integers(0, 256, (size, size, 3), np.uint8)))


def test_truncated_jpeg_in_class_folders_decoded_into_the_cache(tmp_path):
    """CIFAR-FS's processed layout (class folders) is decoded once into the .npy cache: a
    truncated JPEG fails that build, named, and leaves no cache entry."""
    proc = tmp_path / "cfs" / "cifarfs" / "processed"
    for split, classes in (("train", ["apple", "bed", "bee"]), ("val", ["fox", "man"]),
                           ("test", ["oak", "ray"])):
        _class_folders(proc / split, classes)
    bad = proc / "val" / "man" / "man_1.jpg"
    good = bad.read_bytes()
    cache = tmp_path / "cache"
    for damaged in (good[:len(good) // 2], b"", b"GIF89a not really"):
        bad.write_bytes(damaged)
        with pytest.raises(DataError) as e:
            load_splits("cifarfs", tmp_path / "cfs", image_size=32, cache_dir=str(cache))
        _damaged(e, bad)
        _no_partial_entries(cache)
        assert not any("val" in p for p in _cache_files(cache) if p.endswith("labels.json"))
        assert len(list(cache.rglob("labels.json"))) == 1        # train only: built before val
        clear_cache()
    # an image of another size in a layout of one size (a damaged or stray file) is named too
    Image.fromarray(np.zeros((31, 32, 3), np.uint8)).save(bad, format="JPEG")
    with pytest.raises(DataError) as e:
        load_splits("cifarfs", tmp_path / "cfs", image_size=32, cache_dir=str(cache))
    _damaged(e, bad, "32x31")
    _no_partial_entries(cache)
    clear_cache()
    bad.write_bytes(good)
    splits = load_splits("cifarfs", tmp_path / "cfs", image_size=32, cache_dir=str(cache))
    assert len(splits["val"].labels) == 6 and len(list(cache.rglob("labels.json"))) == 3


def test_cub_truncated_jpeg_is_named_when_read(tmp_path):
    from learn2learn.vision.datasets.cu_birds200 import SPLITS
    images = tmp_path / "cub" / "cubirds200" / "CUB_200_2011" / "images"
    names = sorted(sum(SPLITS.values(), []))
    rng = np.random.default_rng(5)
    for n in names:
        (images / n).mkdir(parents=True)
        (images / n / f"{n}_0.jpg").write_bytes(_jpeg(rng.integers(0, 256, (8, 8, 3), np.uint8)))
    bad = images / names[3] / f"{names[3]}_0.jpg"         # class 3: closerlook test split
    good = bad.read_bytes()
    bad.write_bytes(good[:len(good) // 2])
    test = load_splits("cub", tmp_path / "cub", image_size=84, role="test")["test"]
    src = test.source
    i = [src.base.paths[j] for j in src.indices].index(str(bad))
    assert src[i + 1].size == (8, 8)
    with pytest.raises(DataError) as e:
        src[i]
    _damaged(e, bad)
    assert not list((tmp_path / "cub").glob("*.pkl"))


def test_truncated_jpeg_in_a_lazily_read_folder(tmp_path):
    """Folder / CloserLook / CUB splits read their files lazily: the damaged one is named when
    it is read, the others still load."""
    root = tmp_path / "places"
    _class_folders(root, ["c0", "c1", "c2"], size=20)
    bad = root / "c1" / "c1_2.jpg"
    bad.write_bytes(bad.read_bytes()[:150])
    split = load_splits("folder", root, image_size=84, role="test")["test"]
    i = split.source.paths.index(str(bad))
    assert split.source[0].size == (20, 20)
    with pytest.raises(DataError) as e:
        split.source[i]
    _damaged(e, bad)
    (root / "c0" / "c0_0.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError) as e:
        split.source[0]
    _damaged(e, root / "c0" / "c0_0.jpg", "UnidentifiedImageError")


def test_mini_imagenet_csv_with_a_truncated_image(tmp_path):
    from test_data_formats import _write_mini_csv
    _write_mini_csv(tmp_path / "csv", _mini_data(per_class=2))
    bad = sorted((tmp_path / "csv" / "images").glob("n08*"))[1]
    bad.write_bytes(bad.read_bytes()[:300])
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        load_splits("mini-imagenet", tmp_path / "csv", image_size=84, cache_dir=str(cache))
    _damaged(e, bad)
    _no_partial_entries(cache)
    assert len(list(cache.rglob("labels.json"))) == 2       # train and val only


# ----------------------------------------------------------------------------- pickles
def test_truncated_rfs_pickle(tmp_path):
    _write_mini_rfs(tmp_path / "rfs", _mini_data(per_class=2))
    bad = tmp_path / "rfs" / "miniImageNet_category_split_val.pickle"
    raw = bad.read_bytes()
    cache = tmp_path / "cache"
    for damaged in (raw[:len(raw) // 2], raw[:len(raw) - 5], b""):
        bad.write_bytes(damaged)
        with pytest.raises(DataError) as e:
            load_splits("mini-imagenet", tmp_path / "rfs", image_size=84, cache_dir=str(cache))
        msg = _damaged(e, bad, "re-download")
        assert "cannot unpickle" in msg
        _no_partial_entries(cache)
        assert len(list(cache.rglob("labels.json"))) == 1   # train (read before val) only
        clear_cache()


def test_rfs_pickle_with_wrong_data_shape_or_dtype(tmp_path):
    data = _mini_data(per_class=2)
    _write_mini_rfs(tmp_path / "rfs", data)
    bad = tmp_path / "rfs" / "miniImageNet_category_split_test.pickle"
    imgs, names = data["test"]
    labels = list(range(len(names)))
    cache = tmp_path / "cache"
    for wrong in (imgs[..., 0], imgs.astype(np.float32), imgs.reshape(len(imgs), -1),
                  imgs[:-1]):
        _py2_pickle({"data": wrong, "labels": labels}, bad)
        with pytest.raises(DataError) as e:
            load_splits("mini-imagenet", tmp_path / "rfs", image_size=84, cache_dir=str(cache))
        msg = _damaged(e, bad, "'data'")
        assert str(wrong.dtype) in msg and str(tuple(wrong.shape)) in msg
        _no_partial_entries(cache)
        assert len(list(cache.rglob("labels.json"))) == 2   # train and val only
        clear_cache()


def test_learn2learn_pickles_truncated_or_wrong_shape(tmp_path):
    root = tmp_path / "l2l"
    data = _mini_data(per_class=2)
    imgs, names = data["test"]
    _write_mini_l2l(root, dict(data, test=(imgs[..., 0], names)))      # test images lose their channels
    with pytest.raises(DataError) as e:
        load_splits("mini-imagenet", root, image_size=84, cache_dir=str(tmp_path / "c"))
    _damaged(e, root / "mini-imagenet-cache-test.pkl", "'image_data'")
    clear_cache()
    bad = root / "mini-imagenet-cache-validation.pkl"
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(DataError) as e:
        load_splits("mini-imagenet", root, image_size=84, cache_dir=str(tmp_path / "c"))
    msg = _damaged(e, bad, "re-download")
    assert "not in the learn2learn format" in msg and "cannot unpickle" in msg


def test_tiered_imagenet_damaged_png_in_pickle_and_npz_member(tmp_path):
    rng = np.random.default_rng(1)
    l2l_dir = tmp_path / "l2l" / "tiered-imagenet"
    l2l_dir.mkdir(parents=True)
    (tmp_path / "rfs").mkdir()
    start = 0
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        labels = [start + i % n for i in range(n * 3)]
        start += n
        imgs = rng.integers(0, 256, (len(labels), 84, 84, 3), dtype=np.uint8)
        pngs = [np.frombuffer(_png(im), np.uint8) for im in imgs]
        if split == "val":
            pngs[4] = pngs[4][:200]                         # image 4 of val is cut short
        with open(l2l_dir / f"{split}_images_png.pkl", "wb") as f:
            pickle.dump(pngs, f)
        with open(l2l_dir / f"{split}_labels.pkl", "wb") as f:
            pickle.dump({"label_specific": np.asarray(labels)}, f)
        np.savez(tmp_path / "rfs" / f"{split}_images.npz", images=imgs)
        _py2_pickle({"labels": labels}, tmp_path / "rfs" / f"{split}_labels.pkl")
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        load_splits("tiered-imagenet", tmp_path / "l2l", image_size=84, cache_dir=str(cache))
    _damaged(e, l2l_dir / "val_images_png.pkl", "image 4 (of 6)")
    _no_partial_entries(cache)
    npz = tmp_path / "rfs" / "test_images.npz"
    _flip_member_bytes(npz, "images.npy")
    with pytest.raises(DataError) as e:
        load_splits("tiered-imagenet", tmp_path / "rfs", image_size=84, cache_dir=str(cache))
    _damaged(e, npz, "images.npy", "Bad CRC-32")
    _no_partial_entries(cache)
    assert len(list((cache / "tiered-imagenet").rglob("labels.json"))) == 3   # l2l train, rfs train + val
    lab = tmp_path / "rfs" / "val_labels.pkl"
    lab.write_bytes(lab.read_bytes()[:10])     # another size: another cache key, rebuilt
    clear_cache()
    with pytest.raises(DataError) as e:
        load_splits("tiered-imagenet", tmp_path / "rfs", image_size=84, cache_dir=str(cache))
    _damaged(e, lab, "cannot unpickle")
