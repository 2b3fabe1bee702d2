"""One registry: dataset name + files found in ``data.root`` -> the loader of that layout.

Each module of :mod:`scl_plugin.data.formats` registers its layouts with :func:`register`;
adding a format is adding one file there. :func:`load_splits` picks the layout named by
``data.format`` or the first one whose marker files are present, and says in one line which
files each layout expects when none is found.

Building a split is cached per process (:func:`load_splits` is memoised on its arguments), so a
harness may ask for the same dataset many times and pay once; with the on-disk ``.npy`` caches
a fresh process pays only for memory-mapping them.
"""
from __future__ import annotations

import functools
import importlib
import os
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import DataError
from .base import Split

__all__ = ["register", "formats_for", "load_splits", "check_layout", "LoadOptions", "Format", "clear_cache"]


@dataclass(frozen=True)
class LoadOptions:
    image_size: int
    cache_dir: Optional[str]
    cub_split: str = "closerlook"
    download: bool = False
    role: str = "main"           # "test": only the test split is needed (cross-domain)


@dataclass(frozen=True)
class Format:
    dataset: str
    name: str
    files: str                                   # the expected files, for messages and the README
    detect: Callable[[Path], bool]               # are this layout's files in root?
    load: Callable[[Path, LoadOptions], Dict[str, Split]]
    how: str = ""                                # where to get the files
    needs_root: bool = True                      # False: nothing is read from data.root (generated data)


_REGISTRY: Dict[str, List[Format]] = {}


def register(dataset: str, name: str, *, files: str, detect: Callable[[Path], bool] = None,
             how: str = "", needs_root: bool = True):
    """Decorator: ``@register("mini-imagenet", "rfs", files="...", detect=lambda root: ...)``."""
    def deco(fn):
        fmts = _REGISTRY.setdefault(dataset, [])
        fmts[:] = [f for f in fmts if f.name != name]
        fmts.append(Format(dataset, name, files, detect or (lambda root: True), fn, how, needs_root))
        return fn
    return deco


@functools.lru_cache(maxsize=None)
def _import_formats() -> None:
    from . import formats
    for mod in pkgutil.iter_modules(formats.__path__):
        importlib.import_module(f"{formats.__name__}.{mod.name}")


def formats_for(dataset: str) -> List[Format]:
    _import_formats()
    return list(_REGISTRY.get(dataset, []))


def _pick(dataset: str, root: Path, fmt: str) -> Format:
    fmts = formats_for(dataset)
    if not fmts:
        raise DataError(f"unknown dataset {dataset!r}")
    names = [f.name for f in fmts]
    if fmt != "auto":
        for f in fmts:
            if f.name == fmt:
                return f
        raise DataError(f"{dataset}: unknown data.format {fmt!r}; {dataset} accepts "
                        f"{', '.join(['auto'] + names)}")
    if len(fmts) == 1:
        return fmts[0]
    for f in fmts:
        try:
            if f.detect(root):
                return f
        except OSError:
            pass
    expected = " | ".join(f"{f.name}: {f.files}" for f in fmts)
    if not root.is_dir():
        raise DataError(f"{dataset}: data root {root} does not exist or is not a directory; "
                        f"expected one of {expected}. {fmts[0].how}")
    raise DataError(f"{dataset}: no known layout in {root}; expected one of {expected} "
                    f"(or set data.format). {fmts[0].how}")


def check_layout(name: str, root, format: str = "auto") -> Format:
    """The layout :func:`load_splits` would read from ``root``, without reading it: one
    DataError naming the expected files when there is none (a suite checks every root first)."""
    root = Path(os.path.expanduser(str(root))) if root is not None else Path(".")
    f = _pick(name, root, format)
    if not f.needs_root:
        return f
    if not root.exists():
        raise DataError(f"{name}: data root {root} does not exist; expected {f.files}. {f.how}")
    try:
        found = f.detect(root)
    except OSError:
        found = False
    if not found:
        raise DataError(f"{name}: no {f.name} layout in {root}; expected {f.files}. {f.how}")
    return f


def load_splits(name: str, root, *, image_size: int, cache_dir=None, cub_split: str = "closerlook",
                download: bool = False, role: str = "main", format: str = "auto") -> Dict[str, Split]:
    """All splits of dataset ``name`` read from ``root`` (``role='test'``: cross-domain test set).

    Example (``"mini-imagenet", "~/data/mini"`` reads a real root the same way)::

        >>> splits = load_splits("synthetic", None, image_size=16)
        >>> sorted(splits), splits["train"].labels[:3], tuple(splits["train"].source[0].shape)   # uint8 images
        (['test', 'train', 'val'], [0, 0, 0], (3, 16, 16))

    Memoised: the same arguments return the same (already built) splits.
    """
    root = Path(os.path.expanduser(str(root))) if root is not None else Path(".")
    return dict(_load(name, str(root), int(image_size), cache_dir, cub_split, bool(download), role,
                      format))


@functools.lru_cache(maxsize=32)
def _load(name, root, image_size, cache_dir, cub_split, download, role, fmt):
    root = Path(root)
    f = _pick(name, root, fmt)
    return f.load(root, LoadOptions(image_size, cache_dir, cub_split, download, role))


def clear_cache() -> None:
    """Forget the splits built in this process (the on-disk caches stay)."""
    _load.cache_clear()
