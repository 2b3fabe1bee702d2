"""CIFAR-FS and FC100 (CIFAR-100 based, 32x32).

CIFAR-FS: learn2learn's raw zip layout (class folders + Bertinetto split files), its processed
layout (``processed/{split}/<class>/``) and RFS's pickles. FC100: ``FC100_{split}.pickle``, the
same file in learn2learn and RFS. Folder layouts are decoded once into the uint8 ``.npy`` cache;
every layout is stored in canonical class order (class names / ids sorted, files sorted within a
class), so the raw and processed layouts give the same episodes whatever the split files' order.
Normalised with RFS's CIFAR statistics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from .. import DataError
from ..base import Split, image_files, need_dir, need_file
from ..cache import cache_key, cached_encoded_split
from ..registry import LoadOptions, register
from ..pickles import load_data_labels_pickles

# RFS (dataset/cifar.py) normalises CIFAR-FS and FC100 with these.
RFS_CIFAR_MEAN = (0.5071, 0.4867, 0.4408)
RFS_CIFAR_STD = (0.2675, 0.2565, 0.2761)

CIFARFS_HOW = ("Get cifar100.zip (https://zenodo.org/record/7978538/files/cifar100.zip, what "
               "learn2learn.vision.datasets.CIFARFS downloads) and unzip it into <root>/cifarfs/, "
               "or point data.root at RFS's CIFAR_FS_*.pickle files.")
RAW_FILES = "cifarfs/cifar100/data/<class>/*.png with cifarfs/cifar100/splits/bertinetto/{train,val,test}.txt"
PROC_FILES = "cifarfs/processed/{train,val,test}/<class>/*.png"
RFS_FILES = "CIFAR_FS_{train,val,test}.pickle (RFS)"
FC100_HOW = ("Get fc100.zip (https://zenodo.org/record/7978538/files/fc100.zip, what "
             "learn2learn.vision.datasets.FC100 downloads) and unzip it into the root.")
FC100_FILES = "FC100_{train,val,test}.pickle (learn2learn and RFS)"


def _split(source, labels, where) -> Split:
    return Split(source, labels, "rgb", where, RFS_CIFAR_MEAN, RFS_CIFAR_STD)


def _folder_split(class_dirs, opts: LoadOptions, key_file: Path, tag: str, where: str) -> Split:
    def read():
        paths, labels = [], []
        for cdir in class_dirs:
            if not cdir.is_dir():
                raise DataError(f"cifarfs: class folder {cdir} listed in {key_file} is missing; "
                                f"expected {RAW_FILES}. {CIFARFS_HOW}")
            files = image_files(cdir)
            paths += files
            labels += [cdir.name] * len(files)
        return paths, labels
    # a damaged image raises a one-line DataError naming its path (nothing is cached)
    source, labels = cached_encoded_split(opts.cache_dir, "cifarfs", cache_key([key_file], tag), read, None,
                                          where=str(key_file), how=CIFARFS_HOW)
    return _split(source, labels, where)


@register("cifarfs", "raw", files=RAW_FILES, how=CIFARFS_HOW,
          detect=lambda root: (root / "cifarfs" / "cifar100" / "splits").is_dir())
def load_raw(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    """The zip as learn2learn downloads it, read in place (learn2learn would copy the class
    folders into ``<root>/cifarfs/processed``, which fails on read-only roots)."""
    raw = root / "cifarfs" / "cifar100"
    out = {}
    for split in ("train", "val", "test"):
        sf = need_file(raw / "splits" / "bertinetto" / f"{split}.txt", "cifarfs", RAW_FILES, CIFARFS_HOW)
        classes = [ln.strip() for ln in sf.read_text().splitlines() if ln.strip()]
        out[split] = _folder_split([raw / "data" / c for c in classes], opts, sf,
                                   "raw-" + "-".join(sorted(classes))[:60], str(sf))
    return out


@register("cifarfs", "processed", files=PROC_FILES, how=CIFARFS_HOW,
          detect=lambda root: (root / "cifarfs" / "processed").is_dir())
def load_processed(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    proc = root / "cifarfs" / "processed"
    out = {}
    for split in ("train", "val", "test"):
        d = need_dir(proc / split, "cifarfs", PROC_FILES, CIFARFS_HOW)
        classes = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        out[split] = _folder_split(classes, opts, d, "processed", str(d))
    return out


@register("cifarfs", "rfs", files=RFS_FILES, how=CIFARFS_HOW,
          detect=lambda root: any((root / f"CIFAR_FS_{s}.pickle").is_file() for s in ("train", "val", "test")))
def load_rfs(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    """RFS: latin1 pickles of ``{'data': (N,32,32,3) uint8, 'labels': [...]}`` (sparse CIFAR-100
    ids; remapped to 0..K-1 in sorted order like every label)."""
    names = {s: f"CIFAR_FS_{s}.pickle" for s in ("train", "val", "test")}
    parts = load_data_labels_pickles(root, names, "cifarfs", RFS_FILES, CIFARFS_HOW, opts, "cifarfs")
    return {s: _split(*v) for s, v in parts.items()}


@register("fc100", "pickle", files=FC100_FILES, how=FC100_HOW)
def load_fc100(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    """``FC100_{train,val,test}.pickle``: latin1 pickles of ``{'data': (N,32,32,3) uint8,
    'labels': [...]}``."""
    names = {s: f"FC100_{s}.pickle" for s in ("train", "val", "test")}
    parts = load_data_labels_pickles(root, names, "fc100", FC100_FILES, FC100_HOW, opts, "fc100")
    return {s: _split(*v) for s, v in parts.items()}
