"""Loaders: each dataset name -> its train / val / test :class:`Split` (raw images + labels).

Where learn2learn has a class for a dataset we use it, and its on-disk format, to read the files.
We hand-write four things around it:

* existence / format checks first, so a wrong path is one :class:`DataError` naming the expected
  files instead of an ``os.mkdir`` in the wrong place, a ``FileNotFoundError`` or a ``KeyError``;
* labels come from the loaded label arrays, never from decoding every image, and the l2l objects
  are wrapped so that ``MetaDataset`` does not see their ``_bookkeeping_path`` (it would write a
  pickle into the data root, which may be read-only, and ignore the labels we pass);
* omniglot-small (two zips with no learn2learn class) and the one-shot challenge runs;
* CIFAR-FS in its raw layout: learn2learn would copy the split folders into the root.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import torch
from torch.utils.data import Dataset

from . import DataError
from .transforms import OMNIGLOT_MEAN, OMNIGLOT_STD

__all__ = ["Split", "load_splits", "load_omniglot_challenge", "ChallengeRun", "find_omniglot_dir",
           "OMNIGLOT_SMALL_VAL_FRACTION"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff")


def _l2l():
    try:
        import learn2learn as l2l
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("learn2learn is not installed: run tools/install.sh "
                          f"(it builds learn2learn 0.2.0 from source) [{e}]") from None
    return l2l


@dataclass
class Split:
    """Raw images of one split.

    ``source[i]`` returns a raw image (uint8 / [0,1] float tensor or PIL image, or an
    ``(image, label)`` pair whose label is ignored); ``labels[i]`` is its class (any sortable ids).
    ``kind`` is "gray" (characters, strokes = 1) or "rgb" (natural images).
    """
    source: Dataset
    labels: List
    kind: str
    where: str          # human description for error messages

    @property
    def num_classes(self) -> int:
        return len(set(self.labels))


class TensorSource(Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


class FileSource(Dataset):
    """Images read lazily from file paths (PIL), e.g. CUB or a folder of class folders."""

    def __init__(self, paths: Sequence[str], mode: str = "RGB"):
        self.paths, self.mode = list(paths), mode

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image
        with Image.open(self.paths[i]) as im:
            return im.convert(self.mode)


class _Subset(Dataset):
    def __init__(self, base, indices):
        self.base, self.indices = base, list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.base[self.indices[i]]


class _InvertPIL(Dataset):
    """torchvision's Omniglot gives black strokes on white; we use strokes = 1 everywhere."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        from PIL import ImageOps
        img = self.base[i]
        img = img[0] if isinstance(img, (tuple, list)) else img
        return ImageOps.invert(img.convert("L"))


def _subset_split(split: Split, keep: Callable[[object], bool], where: str) -> Split:
    idx = [i for i, c in enumerate(split.labels) if keep(c)]
    return Split(_Subset(split.source, idx), [split.labels[i] for i in idx], split.kind, where)


def _need_dir(path: Path, dataset: str, expected: str, how: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{dataset}: data root {path} does not exist or is not a directory; "
                        f"expected {expected}. {how}")
    return path


def _need_file(path: Path, dataset: str, expected: str, how: str) -> Path:
    if not path.is_file():
        raise DataError(f"{dataset}: missing file {path}; expected {expected}. {how}")
    return path


# ----------------------------------------------------------------------------- cache helpers
def _atomic_torch_save(obj, path: Path) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _cache_key(path: Path, *extra) -> str:
    st = path.stat()
    return "-".join([path.stem, str(st.st_size), str(int(st.st_mtime))] + [str(e) for e in extra])


def _cached(cache_dir: Optional[str], sub: str, key: str, build: Callable[[], dict]) -> dict:
    """Load ``cache_dir/sub/key.pt`` or build and store it (never in the data root)."""
    if not cache_dir:
        return build()
    path = Path(cache_dir).expanduser() / sub / f"{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:   # a corrupt cache is rebuilt, not fatal
            pass
    obj = build()
    try:
        _atomic_torch_save(obj, path)
    except OSError:         # unwritable cache: keep going without it
        pass
    return obj


# ----------------------------------------------------------------------------- omniglot-small
OMNIGLOT_SMALL_HOW = ("Get images_background_small1.zip / images_background_small2.zip from "
                      "https://github.com/brendenlake/omniglot (python/ folder) and put them in "
                      "<root>/omniglot/ (or point data.root at that folder).")
# Validation = whole small1 alphabets held out from the end of the sorted alphabet list until
# at least this fraction of small1 characters is held out. On the real zips that is "Latin"
# (26 of 136 characters): alphabet-disjoint like the test split, never used for pretraining.
OMNIGLOT_SMALL_VAL_FRACTION = 0.15


def find_omniglot_dir(root, needed: str = "images_background_small1.zip") -> Path:
    """Accept either the shared data root or the omniglot folder itself."""
    root = Path(os.path.expanduser(str(root)))
    for cand in (root, root / "omniglot"):
        if (cand / needed).is_file():
            return cand
    if not root.exists():
        raise DataError(f"omniglot-small: data root {root} does not exist; expected {needed} in "
                        f"{root} or {root / 'omniglot'}. {OMNIGLOT_SMALL_HOW}")
    raise DataError(f"omniglot-small: missing file {needed} in {root} or {root / 'omniglot'}. "
                    f"{OMNIGLOT_SMALL_HOW}")


def _decode_character_png(data: bytes, image_size: int):
    """105x105 binary PNG -> inverted (strokes = 255) grayscale, resized, as uint8 numpy."""
    import numpy as np
    from PIL import Image, ImageOps
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.invert(im.convert("L"))
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def _read_omniglot_zip(zip_path: Path, image_size: int) -> dict:
    """Decode every ``<top>/<Alphabet>/<characterNN>/<id>_<drawer>.png`` of one zip."""
    import numpy as np
    from tqdm.auto import tqdm
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"omniglot-small: {zip_path} is not a readable zip ({e}); expected the "
                        f"Omniglot zip with <Alphabet>/<character>/<id>_<drawer>.png inside. "
                        f"{OMNIGLOT_SMALL_HOW}") from None
    with zf:
        names = sorted(n for n in zf.namelist() if n.lower().endswith(".png"))
        entries = []
        for n in names:
            parts = n.split("/")
            if len(parts) < 3:
                continue
            entries.append(("/".join(parts[-3:-1]), n))
        if not entries:
            raise DataError(f"omniglot-small: {zip_path} holds no <Alphabet>/<character>/*.png "
                            f"images; wrong file? {OMNIGLOT_SMALL_HOW}")
        classes = sorted({c for c, _ in entries})
        cid = {c: i for i, c in enumerate(classes)}
        images = np.empty((len(entries), 1, image_size, image_size), dtype=np.uint8)
        hashes, labels = [], []
        for i, (c, n) in enumerate(tqdm(entries, desc=f"decoding {zip_path.name}", leave=False,
                                        mininterval=1.0)):
            data = zf.read(n)
            hashes.append(hashlib.md5(data).hexdigest())
            images[i, 0] = _decode_character_png(data, image_size)
            labels.append(cid[c])
    return {"images": torch.from_numpy(images), "labels": labels, "classes": classes,
            "hashes": hashes}


def _omniglot_zip(zip_path: Path, image_size: int, cache_dir) -> dict:
    key = _cache_key(zip_path, f"{image_size}px", "v1")
    return _cached(cache_dir, "omniglot-small", key, lambda: _read_omniglot_zip(zip_path, image_size))


def load_omniglot_small(root, image_size: int, cache_dir) -> Dict[str, Split]:
    """small1 -> train + val (held-out alphabets); small2 minus characters also in small1 -> test.

    The two "small" background subsets are *not* disjoint: both contain the Greek and Latin
    alphabets with byte-identical images (50 characters, 1,000 files). Testing on them would
    test on training classes, so test keeps only small2 characters none of whose images occur
    in small1 (on the real files: Japanese (katakana), Sanskrit, Tagalog = 106 characters).
    """
    folder = find_omniglot_dir(root)
    z1 = folder / "images_background_small1.zip"
    z2 = _need_file(folder / "images_background_small2.zip", "omniglot-small",
                    "images_background_small2.zip next to images_background_small1.zip",
                    OMNIGLOT_SMALL_HOW)
    d1, d2 = _omniglot_zip(z1, image_size, cache_dir), _omniglot_zip(z2, image_size, cache_dir)

    # validation: whole alphabets from the end of the sorted list
    alphabets = sorted({c.split("/")[0] for c in d1["classes"]})
    per_alpha = {a: sum(c.split("/")[0] == a for c in d1["classes"]) for a in alphabets}
    val_alpha, held = set(), 0
    for a in reversed(alphabets):
        if held >= OMNIGLOT_SMALL_VAL_FRACTION * len(d1["classes"]) or len(val_alpha) == len(alphabets) - 1:
            break
        val_alpha.add(a)
        held += per_alpha[a]
    is_val = [d1["classes"][c].split("/")[0] in val_alpha for c in range(len(d1["classes"]))]

    seen = set(d1["hashes"])
    leaked = {lab for lab, h in zip(d2["labels"], d2["hashes"]) if h in seen}

    src1, src2 = TensorSource(d1["images"]), TensorSource(d2["images"])
    all1 = Split(src1, d1["labels"], "gray", str(z1))
    all2 = Split(src2, d2["labels"], "gray", str(z2))
    return {
        "train": _subset_split(all1, lambda c: not is_val[c], f"{z1} (minus val alphabets)"),
        "val": _subset_split(all1, lambda c: is_val[c],
                             f"{z1} alphabets {', '.join(sorted(val_alpha))}"),
        "test": _subset_split(all2, lambda c: c not in leaked,
                              f"{z2} (minus characters shared with small1)"),
    }


# ----------------------------------------------------------------------------- challenge
class ChallengeRun(NamedTuple):
    """One 20-way one-shot run: support = training/classKK.png (label KK-1), query = test items."""
    name: str
    support_x: torch.Tensor   # (20, 1, H, W) normalised
    support_y: torch.Tensor   # (20,) = 0..19
    query_x: torch.Tensor     # (20, 1, H, W)
    query_y: torch.Tensor     # (20,) answer key from class_labels.txt


def load_omniglot_challenge(root, image_size: int = 28, cache_dir=None) -> List[ChallengeRun]:
    """The 20 runs of Lake et al.'s one-shot challenge from ``all_runs.zip``.

    Each ``runNN/class_labels.txt`` line reads ``runNN/test/itemMM.png runNN/training/classKK.png``;
    query MM's label is KK - 1. Images are processed like omniglot-small (inverted, resized,
    normalised with the same statistics), so a model trained there can be scored directly.
    """
    folder = find_omniglot_dir(root, "all_runs.zip")
    zpath = folder / "all_runs.zip"

    def build():
        import numpy as np
        try:
            zf = zipfile.ZipFile(zpath)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"omniglot challenge: {zpath} is not a readable zip ({e})") from None
        with zf:
            names = set(zf.namelist())
            runs = sorted({n.split("/")[0] for n in names if n.endswith("class_labels.txt")})
            if not runs:
                raise DataError(f"omniglot challenge: {zpath} has no runNN/class_labels.txt; "
                                "expected Lake's all_runs.zip (github.com/brendenlake/omniglot)")
            out = []
            for run in runs:
                pairs = [ln.split() for ln in zf.read(f"{run}/class_labels.txt").decode().splitlines()
                         if ln.strip()]
                train_names = sorted(n for n in names if n.startswith(f"{run}/training/")
                                     and n.endswith(".png"))
                pos = {n: i for i, n in enumerate(train_names)}
                try:
                    qy = [pos[_zip_name(t, run)] for _, t in pairs]
                    qn = [_zip_name(q, run) for q, _ in pairs]
                    sx = np.stack([_decode_character_png(zf.read(n), image_size) for n in train_names])
                    qx = np.stack([_decode_character_png(zf.read(n), image_size) for n in qn])
                except (KeyError, ValueError) as e:
                    raise DataError(f"omniglot challenge: {zpath}: {run}/class_labels.txt names a "
                                    f"file missing from the zip ({e}); expected lines "
                                    "'runNN/test/itemMM.png runNN/training/classKK.png'") from None
                out.append({"name": run, "sx": torch.from_numpy(sx), "qx": torch.from_numpy(qx),
                            "qy": torch.tensor(qy)})
        return {"runs": out}

    data = _cached(cache_dir, "omniglot-small", _cache_key(zpath, f"{image_size}px", "v1"), build)
    mean, std = OMNIGLOT_MEAN[0], OMNIGLOT_STD[0]

    def norm(x):
        return (x.float().div(255.0).unsqueeze(1) - mean) / std

    return [ChallengeRun(r["name"], norm(r["sx"]), torch.arange(len(r["sx"])), norm(r["qx"]),
                         r["qy"].long()) for r in data["runs"]]


def _zip_name(name: str, run: str) -> str:
    """class_labels.txt paths start with the run folder; tolerate a missing prefix."""
    name = name.replace("\\", "/")
    return name if name.startswith(run + "/") else f"{run}/{name}"


# ----------------------------------------------------------------------------- synthetic
SYNTHETIC_CLASSES = {"train": 40, "val": 20, "test": 20}
SYNTHETIC_PER_CLASS = 30
SYNTHETIC_SEED = 20210


def load_synthetic(image_size: int, channels: int = 3) -> Dict[str, Split]:
    """Seeded in-memory images: class = fixed random low-frequency pattern, image = pattern + noise.

    Independent of any run seed (the data is the same for every run), linearly separable
    (noise std 0.08 vs. pattern contrast ~0.3), 3 channels so any timm model accepts it.
    """
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    out, offset = {}, 0
    low = max(2, image_size // 7)
    for split, n_cls in SYNTHETIC_CLASSES.items():
        pat = torch.rand(n_cls, channels, low, low, generator=g)
        pat = torch.nn.functional.interpolate(pat, size=(image_size, image_size), mode="bilinear",
                                              align_corners=False)
        noise = torch.randn(n_cls, SYNTHETIC_PER_CLASS, channels, image_size, image_size,
                            generator=g) * 0.08
        imgs = (pat.unsqueeze(1) + noise).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        imgs = imgs.reshape(-1, channels, image_size, image_size)
        labels = [offset + c for c in range(n_cls) for _ in range(SYNTHETIC_PER_CLASS)]
        out[split] = Split(TensorSource(imgs), labels, "rgb", f"synthetic {split}")
        offset += n_cls
    return out


# ----------------------------------------------------------------------------- mini-ImageNet
MINI_HOW = ("Get the learn2learn pickles with learn2learn.vision.datasets.MiniImagenet(root, "
            "mode, download=True) on a machine with internet, or from "
            "https://zenodo.org/record/7978538.")


def load_mini_imagenet(root) -> Dict[str, Split]:
    """learn2learn format: ``mini-imagenet-cache-{train,validation,test}.pkl``, each a dict with
    ``image_data`` (N, 84, 84, 3) uint8 and ``class_dict`` {class name: [indices]}."""
    l2l = _l2l()
    root = Path(os.path.expanduser(str(root)))
    expected = "mini-imagenet-cache-{train,validation,test}.pkl (learn2learn format)"
    _need_dir(root, "mini-imagenet", expected, MINI_HOW)
    out = {}
    for split, mode in (("train", "train"), ("val", "validation"), ("test", "test")):
        path = _need_file(root / f"mini-imagenet-cache-{mode}.pkl", "mini-imagenet", expected, MINI_HOW)
        try:
            ds = l2l.vision.datasets.MiniImagenet(root=str(root), mode=mode, download=False)
            x = ds.x
            if x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"image_data has shape {tuple(ds.data['image_data'].shape)}")
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError,
                RuntimeError) as e:
            raise DataError(f"mini-imagenet: {path} is not in the learn2learn format ({type(e).__name__}: "
                            f"{e}); expected a pickled dict with 'image_data' (N,84,84,3 uint8) and "
                            f"'class_dict' {{class: [indices]}}. {MINI_HOW}") from None
        # l2l keeps a float copy (0-255) plus the raw pickle: keep only uint8 (4x less memory).
        images = x.clamp(0, 255).round().to(torch.uint8)
        labels = [int(v) for v in ds.y]
        del ds
        out[split] = Split(TensorSource(images), labels, "rgb", str(path))
    return out


# ----------------------------------------------------------------------------- tiered-ImageNet
TIERED_HOW = ("Get it with learn2learn.vision.datasets.TieredImagenet(root, mode, download=True) "
              "on a machine with internet (12 GB).")


def load_tiered_imagenet(root) -> Dict[str, Split]:
    """learn2learn format: ``tiered-imagenet/{train,val,test}_images_png.pkl`` (list of PNG bytes)
    and ``{split}_labels.pkl`` (dict with ``label_specific``)."""
    l2l = _l2l()
    root = Path(os.path.expanduser(str(root)))
    expected = "tiered-imagenet/{train,val,test}_images_png.pkl and {split}_labels.pkl"
    _need_dir(root, "tiered-imagenet", expected, TIERED_HOW)
    out = {}
    for split, mode, short in (("train", "train", "train"), ("val", "validation", "val"),
                               ("test", "test", "test")):
        for f in (f"{short}_images_png.pkl", f"{short}_labels.pkl"):
            _need_file(root / "tiered-imagenet" / f, "tiered-imagenet", expected, TIERED_HOW)
        try:
            ds = l2l.vision.datasets.TieredImagenet(root=str(root), mode=mode, download=False)
            labels = [int(v) for v in ds.labels]
            if len(labels) != len(ds.images):
                raise ValueError(f"{len(ds.images)} images but {len(labels)} labels")
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError) as e:
            raise DataError(f"tiered-imagenet: {root / 'tiered-imagenet'} {short} files are not in the "
                            f"learn2learn format ({type(e).__name__}: {e}); expected a pickled list of "
                            f"PNG bytes and a dict with 'label_specific'. {TIERED_HOW}") from None
        del ds._bookkeeping_path
        out[split] = Split(ds, labels, "rgb", str(root / "tiered-imagenet" / short))
    return out


# ----------------------------------------------------------------------------- CIFAR-FS
CIFARFS_HOW = ("Get cifar100.zip (https://zenodo.org/record/7978538/files/cifar100.zip, what "
               "learn2learn.vision.datasets.CIFARFS downloads) and unzip it into <root>/cifarfs/.")


def load_cifarfs(root) -> Dict[str, Split]:
    """Either learn2learn's processed layout ``cifarfs/processed/{train,val,test}/<class>/*.png``
    (read with l2l's CIFARFS, an ImageFolder) or the raw zip layout
    ``cifarfs/cifar100/data/<class>/*.png`` + ``cifarfs/cifar100/splits/bertinetto/{train,val,test}.txt``.
    For the raw layout we read the split files ourselves: l2l's CIFARFS would copy the class
    folders into ``<root>/cifarfs/processed``, which fails on read-only roots.
    """
    root = Path(os.path.expanduser(str(root)))
    expected = ("cifarfs/cifar100/data/<class>/*.png with cifarfs/cifar100/splits/bertinetto/"
                "{train,val,test}.txt, or cifarfs/processed/{train,val,test}/<class>/")
    _need_dir(root, "cifarfs", expected, CIFARFS_HOW)
    processed = root / "cifarfs" / "processed"
    out = {}
    if all((processed / s).is_dir() for s in ("train", "val", "test")):
        l2l = _l2l()
        for split, mode in (("train", "train"), ("val", "validation"), ("test", "test")):
            ds = l2l.vision.datasets.CIFARFS(root=str(root), mode=mode, download=False)
            del ds._bookkeeping_path
            out[split] = Split(ds, list(ds.targets), "rgb", str(processed / split))
        return out
    raw = root / "cifarfs" / "cifar100"
    for split in ("train", "val", "test"):
        split_file = _need_file(raw / "splits" / "bertinetto" / f"{split}.txt", "cifarfs", expected,
                                CIFARFS_HOW)
        classes = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
        paths, labels = [], []
        for c in classes:
            cdir = raw / "data" / c
            if not cdir.is_dir():
                raise DataError(f"cifarfs: class folder {cdir} listed in {split_file} is missing; "
                                f"expected {expected}. {CIFARFS_HOW}")
            files = _image_files(cdir)
            paths += files
            labels += [c] * len(files)
        out[split] = Split(FileSource(paths), labels, "rgb", str(split_file))
    return out


# ----------------------------------------------------------------------------- FC100
FC100_HOW = ("Get fc100.zip (https://zenodo.org/record/7978538/files/fc100.zip, what "
             "learn2learn.vision.datasets.FC100 downloads) and unzip it into the root.")


def load_fc100(root) -> Dict[str, Split]:
    """learn2learn format: ``FC100_{train,val,test}.pickle``, latin1 pickles of a dict with
    ``data`` (N, 32, 32, 3) uint8 and ``labels``."""
    l2l = _l2l()
    root = Path(os.path.expanduser(str(root)))
    expected = "FC100_{train,val,test}.pickle (learn2learn format)"
    _need_dir(root, "fc100", expected, FC100_HOW)
    out = {}
    for split, mode in (("train", "train"), ("val", "validation"), ("test", "test")):
        path = _need_file(root / f"FC100_{split}.pickle", "fc100", expected, FC100_HOW)
        try:
            ds = l2l.vision.datasets.FC100(root=str(root), mode=mode, download=False)
            import numpy as np
            data = np.asarray(ds.images)
            if data.ndim != 4 or data.shape[-1] != 3 or len(ds.labels) != len(data):
                raise ValueError(f"data has shape {data.shape}, {len(ds.labels)} labels")
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"fc100: {path} is not in the learn2learn format ({type(e).__name__}: "
                            f"{e}); expected a dict with 'data' (N,32,32,3 uint8) and 'labels'. "
                            f"{FC100_HOW}") from None
        images = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).contiguous()
        out[split] = Split(TensorSource(images), [int(v) for v in ds.labels], "rgb", str(path))
    return out


# ----------------------------------------------------------------------------- CUB
CUB_HOW = ("Get CUB_200_2011.tgz (learn2learn.vision.datasets.CUBirds200(root, download=True) "
           "on a machine with internet) so that <root>/cubirds200/CUB_200_2011/images/<class>/ exists.")


def load_cub(root, cub_split: str) -> Dict[str, Split]:
    """CUB-200-2011 via learn2learn's CUBirds200 (layout ``cubirds200/CUB_200_2011/images/<class>``).

    ``closerlook`` (Chen et al. 2019): class folders sorted, index % 2 == 0 -> train (100),
    % 4 == 1 -> val (50), % 4 == 3 -> test (50), all images. ``metadataset``: learn2learn's own
    140/30/30 split (its default, which drops ImageNet duplicates).
    """
    l2l = _l2l()
    root = Path(os.path.expanduser(str(root)))
    images = root / "cubirds200" / "CUB_200_2011" / "images"
    _need_dir(root, "cub", "cubirds200/CUB_200_2011/images/<class>/*.jpg", CUB_HOW)
    _need_dir(images, "cub", "cubirds200/CUB_200_2011/images/<class>/*.jpg", CUB_HOW)
    out = {}
    try:
        if cub_split == "closerlook":
            ds = l2l.vision.datasets.CUBirds200(root=str(root), mode="all", download=False,
                                                include_imagenet_duplicates=True)
            names = sorted({os.path.basename(os.path.dirname(p)) for p, _ in ds.data})
            if len(names) != 200:
                raise DataError(f"cub: found {len(names)} class folders in {images}, expected 200")
            rank = {n: i for i, n in enumerate(names)}
            cls = [rank[os.path.basename(os.path.dirname(p))] for p, _ in ds.data]
            del ds._bookkeeping_path
            for split, keep in (("train", lambda i: i % 2 == 0), ("val", lambda i: i % 4 == 1),
                                ("test", lambda i: i % 4 == 3)):
                idx = [j for j, c in enumerate(cls) if keep(c)]
                out[split] = Split(_Subset(ds, idx), [cls[j] for j in idx], "rgb",
                                   f"{images} ({split}, closerlook split)")
        else:
            for split, mode in (("train", "train"), ("val", "validation"), ("test", "test")):
                ds = l2l.vision.datasets.CUBirds200(root=str(root), mode=mode, download=False)
                del ds._bookkeeping_path
                out[split] = Split(ds, [c for _, c in ds.data], "rgb",
                                   f"{images} ({split}, learn2learn split)")
    except FileNotFoundError as e:
        raise DataError(f"cub: {e.filename} is missing; expected all 200 CUB class folders in "
                        f"{images}. {CUB_HOW}") from None
    return out


# ----------------------------------------------------------------------------- folders
FOLDER_HOW = ("Arrange the images as <root>/<class>/<image> (e.g. the Cars / Places / Plantae "
              "test splits of the cross-domain literature).")


def _image_files(folder: Path) -> List[str]:
    return sorted(str(p) for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_folder_classes(root, dataset: str = "folder") -> Split:
    """Every sub-folder of ``root`` is a class; its image files are the samples (RGB)."""
    root = Path(os.path.expanduser(str(root)))
    _need_dir(root, dataset, "a folder of class folders <root>/<class>/<image>", FOLDER_HOW)
    paths, labels = [], []
    for cdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _image_files(cdir)
        paths += files
        labels += [cdir.name] * len(files)
    if not paths:
        raise DataError(f"{dataset}: no images found under {root}; expected "
                        f"<root>/<class>/<image> with extensions {', '.join(IMAGE_EXTENSIONS)}. "
                        f"{FOLDER_HOW}")
    return Split(FileSource(paths), labels, "rgb", str(root))


def load_folder(root) -> Dict[str, Split]:
    """As a main dataset: ``root/{train,val,test}/<class>/<image>``; as a test set, see
    :func:`load_folder_classes` (used by :func:`load_splits` with ``role='test'``)."""
    root = Path(os.path.expanduser(str(root)))
    _need_dir(root, "folder", "<root>/{train,val,test}/<class>/<image>", FOLDER_HOW)
    if not all((root / s).is_dir() for s in ("train", "val", "test")):
        raise DataError(f"folder: as a training dataset {root} must contain train/, val/ and "
                        f"test/ sub-folders of class folders. {FOLDER_HOW}")
    return {s: load_folder_classes(root / s) for s in ("train", "val", "test")}


# ----------------------------------------------------------------------------- full omniglot
def load_full_omniglot(root, download: bool) -> Dict[str, Split]:
    """learn2learn's FullOmniglot (torchvision background + evaluation zips, 1,623 characters),
    split by class id 1100 / 100 / 423 (background characters first, as learn2learn numbers them)."""
    l2l = _l2l()
    root = Path(os.path.expanduser(str(root)))
    try:
        ds = l2l.vision.datasets.FullOmniglot(root=str(root), download=download)
    except RuntimeError as e:
        raise DataError(f"omniglot: {e} (root {root}); expected torchvision's "
                        "omniglot-py/images_background and images_evaluation there. Set "
                        "data.download=true on a machine with internet, or use "
                        "dataset=omniglot-small with the zips in ../shared/data.") from None
    bg, ev = ds.dataset.datasets
    offset = len(bg._characters)
    labels = [c for _, c in bg._flat_character_images] + \
             [c + offset for _, c in ev._flat_character_images]
    del ds._bookkeeping_path
    src = _InvertPIL(ds)
    whole = Split(src, labels, "gray", str(root))
    return {"train": _subset_split(whole, lambda c: c < 1100, f"{root} classes 0-1099"),
            "val": _subset_split(whole, lambda c: 1100 <= c < 1200, f"{root} classes 1100-1199"),
            "test": _subset_split(whole, lambda c: c >= 1200, f"{root} classes 1200-1622")}


# ----------------------------------------------------------------------------- dispatch
def load_splits(name: str, root, *, image_size: int, cache_dir=None, cub_split: str = "closerlook",
                download: bool = False, role: str = "main") -> Dict[str, Split]:
    """All splits of dataset ``name``. ``role='test'`` (cross-domain): a plain ``folder`` root
    of class folders is accepted and becomes the test split."""
    if name == "synthetic":
        return load_synthetic(image_size)
    if name == "omniglot-small":
        return load_omniglot_small(root, image_size, cache_dir)
    if name == "omniglot":
        return load_full_omniglot(root, download)
    if name == "mini-imagenet":
        return load_mini_imagenet(root)
    if name == "tiered-imagenet":
        return load_tiered_imagenet(root)
    if name == "cifarfs":
        return load_cifarfs(root)
    if name == "fc100":
        return load_fc100(root)
    if name == "cub":
        return load_cub(root, cub_split)
    if name == "folder":
        r = Path(os.path.expanduser(str(root)))
        if role == "test" and not (r / "test").is_dir():
            return {"test": load_folder_classes(r)}
        if role == "test":
            return {"test": load_folder_classes(r / "test")}
        return load_folder(root)
    raise DataError(f"unknown dataset {name!r}")
