"""mini-ImageNet in the three layouts people have: learn2learn's pickles, RFS / MetaOptNet
pickles, and the Ravi & Larochelle ``images/`` + ``{train,val,test}.csv`` release.

Every layout is decoded once into a uint8 ``.npy`` cache per split (see :mod:`..cache`) in
canonical class order (class names / ids sorted), so the same data in two layouts gives the same
episodes. Normalised with the RFS / SCL statistics.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict

import numpy as np

from .. import DataError
from ..base import RFS_IMAGENET_MEAN, RFS_IMAGENET_STD, Split, need_dir, need_file
from ..cache import cache_key, cached_encoded_split, cached_hwc_split
from ..pickles import PICKLE_ERRORS as _BAD, load_data_labels_pickles, load_pickle
from ..registry import LoadOptions, register

MINI_HOW = ("Get the learn2learn pickles with learn2learn.vision.datasets.MiniImagenet(root, "
            "mode, download=True) on a machine with internet, or from "
            "https://zenodo.org/record/7978538, or point data.root at RFS's / MetaOptNet's "
            "miniImageNet_category_split_*.pickle files.")
L2L_FILES = "mini-imagenet-cache-{train,validation,test}.pkl (learn2learn format)"
RFS_FILES = ("miniImageNet_category_split_train_phase_train.pickle + "
             "miniImageNet_category_split_{val,test}.pickle (RFS / MetaOptNet)")
CSV_FILES = "images/*.jpg + {train,val,test}.csv with filename,label (Ravi & Larochelle)"
RFS_NAMES = {"train": "miniImageNet_category_split_train_phase_train.pickle",
             "val": "miniImageNet_category_split_val.pickle",
             "test": "miniImageNet_category_split_test.pickle"}


def _split(source, labels, where: str) -> Split:
    return Split(source, labels, "rgb", where, RFS_IMAGENET_MEAN, RFS_IMAGENET_STD)


@register("mini-imagenet", "l2l", files=L2L_FILES, how=MINI_HOW,
          detect=lambda root: any((root / f"mini-imagenet-cache-{m}.pkl").is_file()
                                  for m in ("train", "validation", "test")))
def load_l2l(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    """learn2learn format: ``mini-imagenet-cache-{train,validation,test}.pkl``, each a dict with
    ``image_data`` (N, 84, 84, 3) uint8 and ``class_dict`` {class name: [indices]}. Read with
    pickle directly: learn2learn's class keeps a float copy (4x the uint8 size)."""
    need_dir(root, "mini-imagenet", L2L_FILES, MINI_HOW)
    paths = {s: need_file(root / f"mini-imagenet-cache-{m}.pkl", "mini-imagenet", L2L_FILES, MINI_HOW)
             for s, m in (("train", "train"), ("val", "validation"), ("test", "test"))}
    out = {}
    for split, path in paths.items():
        def read(path=path):
            d = load_pickle(path, "mini-imagenet", "is not in the learn2learn format", MINI_HOW)
            images = d["image_data"]
            labels = np.empty(len(images), dtype=object)
            for name, idx in d["class_dict"].items():
                labels[np.asarray(idx, dtype=np.int64)] = str(name)
            if any(v is None for v in labels):
                raise ValueError("class_dict does not cover every image")
            return images, list(labels)
        try:
            source, labels = cached_hwc_split(opts.cache_dir, "mini-imagenet",
                                              cache_key([path], "l2l"), read, where=str(path),
                                              array="image_data", how=MINI_HOW)
        except DataError:
            raise
        except _BAD as e:
            raise DataError(f"mini-imagenet: {path} is not in the learn2learn format "
                            f"({type(e).__name__}: {e}); expected a pickled dict with 'image_data' "
                            f"(N,84,84,3 uint8) and 'class_dict' {{class: [indices]}}. {MINI_HOW}") from None
        out[split] = _split(source, labels, str(path))
    return out


@register("mini-imagenet", "rfs", files=RFS_FILES, how=MINI_HOW,
          detect=lambda root: any((root / n).is_file() for n in RFS_NAMES.values()))
def load_rfs(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    """RFS / MetaOptNet: ``miniImageNet_category_split_train_phase_train.pickle`` (the 64 base
    classes, for pretraining) and ``miniImageNet_category_split_{val,test}.pickle`` (16 / 20
    classes), latin1 pickles of ``{'data': (N,84,84,3) uint8, 'labels': [...]}``."""
    parts = load_data_labels_pickles(root, RFS_NAMES, "mini-imagenet", RFS_FILES, MINI_HOW, opts,
                                     "mini-imagenet")
    return {s: _split(*v) for s, v in parts.items()}


@register("mini-imagenet", "csv", files=CSV_FILES, how=MINI_HOW,
          detect=lambda root: (root / "train.csv").is_file() and (root / "images").is_dir())
def load_csv(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    """Ravi & Larochelle: ``images/<filename>`` and ``{train,val,test}.csv`` (``filename,label``
    with a header line). Images are decoded once, resized to ``data.image_size``."""
    need_dir(root / "images", "mini-imagenet", CSV_FILES, MINI_HOW)
    out = {}
    for split in ("train", "val", "test"):
        path = need_file(root / f"{split}.csv", "mini-imagenet", CSV_FILES, MINI_HOW)

        def read(path=path):
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f) if r]
            if rows and rows[0][0].strip().lower() == "filename":
                rows = rows[1:]
            files = [root / "images" / r[0].strip() for r in rows]
            missing = [p for p in files if not p.is_file()]
            if missing:
                raise DataError(f"mini-imagenet: {path} lists {len(missing)} images missing from "
                                f"{root / 'images'} (first: {missing[0].name}); expected {CSV_FILES}")
            return [str(p) for p in files], [r[1].strip() for r in rows]
        try:
            source, labels = cached_encoded_split(opts.cache_dir, "mini-imagenet",
                                                  cache_key([path], "csv", f"{opts.image_size}px"),
                                                  read, opts.image_size, where=str(path))
        except DataError:       # a damaged image (named) or a missing one
            raise
        except (IndexError, ValueError, OSError) as e:
            raise DataError(f"mini-imagenet: {path} is not a 'filename,label' csv or names an "
                            f"unreadable image ({type(e).__name__}: {e}); expected {CSV_FILES}") from None
        out[split] = _split(source, labels, str(path))
    return out
