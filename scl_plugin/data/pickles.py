"""Pickled splits as RFS, MetaOptNet and learn2learn ship them (shared by several formats)."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Dict

import numpy as np

from . import DataError
from .base import need_dir, need_file
from .cache import cache_key, cached_hwc_split
from .registry import LoadOptions

PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError,
        IndexError, RuntimeError)


def read_pickle(path: Path):
    """Python 2 pickles (RFS, MetaOptNet) need latin1; Python 3 ones load the same way."""
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def load_data_labels_pickles(root: Path, names: Dict[str, str], dataset: str, files: str, how: str,
                             opts: LoadOptions, sub: str):
    """RFS-style pickles: a dict with ``data`` (N, H, W, 3) uint8 and ``labels`` per split.

    Returns ``{split: (source, labels, where)}``; each split is cached as a uint8 ``.npy``.
    """
    need_dir(root, dataset, files, how)
    paths = {s: need_file(root / n, dataset, files, how) for s, n in names.items()}
    out = {}
    for split, path in paths.items():
        def read(path=path):
            d = read_pickle(path)
            return np.asarray(d["data"]), list(d["labels"])
        try:
            source, labels = cached_hwc_split(opts.cache_dir, sub, cache_key([path], "data-labels"), read)
        except PICKLE_ERRORS as e:
            raise DataError(f"{dataset}: {path} is not in the expected format ({type(e).__name__}: "
                            f"{e}); expected a pickled dict with 'data' (N,H,W,3 uint8) and "
                            f"'labels'. {how}") from None
        out[split] = (source, labels, str(path))
    return out
