"""What data a run was computed from: a content fingerprint of the images and labels of a split.

A run's weights depend on the images it read, not on where they lay: two roots holding the
same files give the same identity, and a root whose files differ (other images, another
version of a zip) gives another one, so a finished run is never reused for other data
(:mod:`scl_plugin.runs`). The fingerprint hashes what the loader actually produced (the decoded
uint8 images in their final order and their labels), so it is the same for every layout of the
same data and blind to nothing the model sees::

    from scl_plugin.data import load_splits
    from scl_plugin.data.identity import split_identity
    splits = load_splits("synthetic", None, image_size=16)
    split_identity(splits["train"])          # 16 hex digits

Cheap on a warm cache: a split memory-mapped from ``data.cache_dir`` stores its digest next to
``images.npy`` once (the cache folder never changes after it is complete); in-memory splits
(Omniglot-small, a few MB) are hashed in place; lazily read image files are hashed once per
process. Hand-written because nothing in torchvision / learn2learn identifies a dataset's content.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from .base import FileSource, NpySource, Split, Subset, TensorSource

__all__ = ["split_identity", "file_digest", "source_digest"]

_CHUNK = 1 << 24
_FILE_MEMO: Dict[Tuple[str, int, int], str] = {}


def file_digest(path: os.PathLike) -> str:
    """sha256 of a file's bytes (memoised per process on path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        _FILE_MEMO[key] = h.hexdigest()
    return _FILE_MEMO[key]


def _npy_digest(source: NpySource) -> str:
    """Digest of the cached ``images.npy``, stored beside it once (the cache is immutable)."""
    side = Path(source.path + ".sha256")
    st = Path(source.path).stat()
    stamp = f"{st.st_size}"
    if side.is_file():
        text = side.read_text().split()
        if len(text) == 2 and text[1] == stamp:
            return text[0]
    digest = file_digest(source.path)
    try:
        tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{digest} {stamp}\n")
        os.replace(tmp, side)
    except OSError:          # read-only cache: recomputed (memoised) in each process
        pass
    return digest


def source_digest(source: Any) -> str:
    """Content digest of an image source (the uint8 images in their order)."""
    if isinstance(source, NpySource):
        base = _npy_digest(source)
        if source.index is None:
            return base
        return hashlib.sha256(base.encode() + np.ascontiguousarray(source.index).tobytes()).hexdigest()
    if isinstance(source, TensorSource):
        array = np.ascontiguousarray(source.images.numpy())
        return hashlib.sha256(str(array.shape).encode() + array.tobytes()).hexdigest()
    if isinstance(source, FileSource):
        h = hashlib.sha256(source.mode.encode())
        for p in source.paths:
            h.update(f"{Path(p).name}:{os.path.getsize(p)}:{file_digest(p)};".encode())
        return h.hexdigest()
    if isinstance(source, Subset):
        base = source_digest(source.base)
        return hashlib.sha256(base.encode() + json.dumps(source.indices).encode()).hexdigest()
    # any other Dataset: hash its items (small, e.g. test doubles)
    h = hashlib.sha256(type(source).__name__.encode())
    for i in range(len(source)):
        item = source[i]
        item = item[0] if isinstance(item, tuple) else item
        h.update(np.ascontiguousarray(np.asarray(item)).tobytes())
    return h.hexdigest()


def split_identity(split: Split) -> str:
    """16 hex digits identifying a split's content: images, labels, kind and normalisation."""
    memo = getattr(split, "_identity", None)
    if memo is None:
        meta = json.dumps([[str(v) for v in split.labels], split.kind, split.stats], default=str)
        memo = hashlib.sha256((source_digest(split.source) + meta).encode()).hexdigest()[:16]
        split._identity = memo     # the registry memoises splits per process: hash once
    return memo
