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
# what unpickling a truncated / corrupted file raises (numpy's reconstructors add ValueError)
UNPICKLE_ERRORS = PICKLE_ERRORS + (ImportError, OverflowError, MemoryError, OSError)


def read_pickle(path: Path):
    """Python 2 pickles (RFS, MetaOptNet) need latin1; Python 3 ones load the same way."""
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def load_pickle(path: Path, dataset: str, problem: str = "", how: str = ""):
    """:func:`read_pickle`, with a file that cannot be unpickled (truncated, corrupted, not a
    pickle) reported as one :class:`DataError` naming it and saying to replace it.

    ``problem`` words the failure in the layout's terms (e.g. "is not in the learn2learn format").
    """
    try:
        return read_pickle(path)
    except UNPICKLE_ERRORS as e:
        cause = f"{type(e).__name__}: {e}"
        lead = f"{path} {problem}: cannot unpickle it" if problem else f"cannot unpickle {path}"
        raise DataError(" ".join(
            f"{dataset}: {lead} ({cause}); the file is damaged (truncated or corrupted copy) or "
            f"not a pickle: re-download or replace {Path(path).name}{'. ' + how if how else ''}"
            .split())) from None


def load_data_labels_pickles(root: Path, names: Dict[str, str], dataset: str, files: str, how: str,
                             opts: LoadOptions, sub: str):
    """RFS-style pickles: a dict with ``data`` (N, H, W, 3) uint8 and ``labels`` per split.

    Returns ``{split: (source, labels, where)}``; each split is cached as a uint8 ``.npy``.
    A damaged pickle (cannot be unpickled, or ``data`` of the wrong shape / dtype) raises one
    :class:`DataError` naming the file (and the array) and saying to replace it.
    """
    need_dir(root, dataset, files, how)
    paths = {s: need_file(root / n, dataset, files, how) for s, n in names.items()}
    out = {}
    for split, path in paths.items():
        def read(path=path):
            d = load_pickle(path, dataset, how=how)
            return np.asarray(d["data"]), list(d["labels"])
        try:
            source, labels = cached_hwc_split(opts.cache_dir, sub, cache_key([path], "data-labels"), read,
                                              where=str(path), array="data", how=how)
        except DataError:
            raise
        except PICKLE_ERRORS as e:
            raise DataError(" ".join(
                f"{dataset}: {path} is not in the expected format ({type(e).__name__}: {e}); "
                f"expected a pickled dict with 'data' (N,H,W,3 uint8) and 'labels'. {how}".split())) from None
        out[split] = (source, labels, str(path))
    return out
