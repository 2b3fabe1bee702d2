"""Decoded-once caches under ``data.cache_dir`` (never in the data root).

* :func:`cached_arrays`: one split as ``images.npy`` (uint8 ``N x C x H x W``) + ``labels.json``,
  built once (one process builds, the others wait on a file lock) and then memory-mapped: every
  process on the machine shares one copy through the page cache and a warm start reads only
  the labels. numpy's ``.npy`` + ``mmap_mode`` is the whole mechanism; what is hand-written is
  the streaming writer (so building never holds a second full copy) and the lock.
* :func:`cached_object`: small ``torch.save`` caches (omniglot-small's decoded zips, kept as
  they were so its images stay bit-identical).

A build that fails (e.g. a damaged source file: one-line :class:`~scl_plugin.data.DataError`
naming the file and the item) leaves no cache entry: the ``.npy`` is written in a temporary
folder renamed into place only when complete, and ``cached_object`` stores only what was built.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import DataError
from .base import DECODE_ERRORS, NpySource, TensorSource, damaged

__all__ = ["cached_arrays", "cached_object", "cache_key", "ArrayWriter"]

CACHE_VERSION = "npy1"     # bump when what a cache holds changes (order, layout)


def cache_key(paths: Sequence[Path], *extra) -> str:
    """Name + size + mtime of every source file: a changed file gets a new cache entry."""
    parts = []
    for p in paths:
        st = Path(p).stat()
        parts += [Path(p).stem, str(st.st_size), str(int(st.st_mtime))]
    return "-".join(parts + [str(e) for e in extra])[:200]


class ArrayWriter:
    """Receives the images of one split in chunks of ``(k, C, H, W)`` uint8 and writes the
    ``.npy`` file sequentially (no memory map while writing: only one chunk is resident)."""

    def __init__(self, path: Optional[Path], n: int, shape: Tuple[int, int, int]):
        self.n, self.shape, self.done = n, tuple(shape), 0
        self.path = path
        if path is None:
            self.memory = np.empty((n,) + self.shape, dtype=np.uint8)
            self.f = None
        else:
            self.memory = None
            self.f = open(path, "wb")
            np.lib.format.write_array_header_1_0(
                self.f, {"descr": "|u1", "fortran_order": False, "shape": (n,) + self.shape})

    def write(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk, dtype=np.uint8)
        if chunk.shape[1:] != self.shape:
            raise ValueError(f"image shape {chunk.shape[1:]} != {self.shape}")
        if self.memory is not None:
            self.memory[self.done:self.done + len(chunk)] = chunk
        else:
            self.f.write(chunk.tobytes())
        self.done += len(chunk)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        if self.done != self.n:
            raise ValueError(f"wrote {self.done} images, expected {self.n}")


def write_hwc(writer: ArrayWriter, images: np.ndarray, order: Sequence[int], chunk: int = 1024):
    """``images`` (N, H, W, C) uint8 -> writer in ``order``, as (C, H, W), chunk by chunk."""
    order = np.asarray(order)
    for s in range(0, len(order), chunk):
        writer.write(images[order[s:s + chunk]].transpose(0, 3, 1, 2))


def cached_arrays(cache_dir: Optional[str], sub: str, key: str,
                  build: Callable[[Callable[[int, Tuple[int, int, int]], ArrayWriter]], List]
                  ) -> Tuple[object, List]:
    """``(source, labels)`` of one split, from ``cache_dir/sub/key/`` or built there.

    ``build(open_writer)`` calls ``open_writer(n, (C, H, W))`` once, writes the images in their
    final order and returns their labels (ints or strings). Without a cache dir (or when it is
    not writable) the images are built in memory instead.
    """
    if cache_dir:
        folder = Path(cache_dir).expanduser() / sub / f"{key}-{CACHE_VERSION}"
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            return _cached_on_disk(folder, build)
        except OSError:     # unwritable cache: keep going without it
            pass
    holder = {}

    def open_writer(n, shape):
        holder["w"] = ArrayWriter(None, n, shape)
        return holder["w"]
    labels = build(open_writer)
    holder["w"].close()
    return TensorSource(torch.from_numpy(holder["w"].memory)), list(labels)


def _read(folder: Path):
    labels = json.loads((folder / "labels.json").read_text())
    return NpySource(folder / "images.npy"), labels


def _cached_on_disk(folder: Path, build):
    if (folder / "labels.json").is_file():
        return _read(folder)
    import fcntl
    with open(str(folder) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # one builder per machine; others wait, then read
        if (folder / "labels.json").is_file():
            return _read(folder)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
        try:
            holder = {}

            def open_writer(n, shape):
                holder["w"] = ArrayWriter(tmp / "images.npy", n, shape)
                return holder["w"]
            labels = list(build(open_writer))
            holder["w"].close()
            if len(labels) != holder["w"].n:
                raise ValueError(f"{len(labels)} labels for {holder['w'].n} images")
            (tmp / "labels.json").write_text(json.dumps(labels))   # written last: marks complete
            os.replace(tmp, folder)
        finally:
            if "w" in holder and holder["w"].f is not None and not holder["w"].f.closed:
                holder["w"].f.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return _read(folder)


# ----------------------------------------------------------------------------- small object caches
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


def cached_object(cache_dir: Optional[str], sub: str, key: str, build: Callable[[], dict]) -> dict:
    """Load ``cache_dir/sub/key.pt`` or build and store it."""
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


def plain_label(v):
    """A label as json can store it (numpy ints -> int)."""
    if isinstance(v, (str, int)):
        return v
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, bytes):
        return v.decode("latin1")
    return str(v)


def cached_hwc_split(cache_dir: Optional[str], sub: str, key: str,
                     read: Callable[[], Tuple[np.ndarray, Sequence]], where: Optional[str] = None,
                     array: str = "images", how: str = "") -> Tuple[object, List]:
    """A split read as one ``(N, H, W, C)`` uint8 array + labels (e.g. from a pickle), stored in
    the cache in canonical class order (see :func:`~scl_plugin.data.base.canonical_order`).

    An array of the wrong shape / dtype (or a label count that differs) raises a one-line
    :class:`~scl_plugin.data.DataError` naming ``where`` (the file) and ``array`` (the item in it);
    ``how`` (how to get an intact copy) is appended.
    """
    from .base import canonical_order

    def build(open_writer):
        images, labels = read()
        labels = [plain_label(v) for v in labels]
        images = np.asarray(images) if not isinstance(images, np.ndarray) else images
        if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
            raise DataError(" ".join(
                f"{sub}: '{array}' of {where or 'the data file'} is {images.dtype} "
                f"{tuple(images.shape)} with {len(labels)} labels; expected (N, H, W, C) uint8 "
                f"images and N labels: the file is damaged or not this layout, replace "
                f"{Path(str(where)).name if where else 'it'} with an intact copy (re-download it)"
                f"{'. ' + how if how else ''}".split()))
        order = canonical_order(labels)
        writer = open_writer(len(order), (images.shape[3], images.shape[1], images.shape[2]))
        write_hwc(writer, images, order)
        return [labels[i] for i in order]
    return cached_arrays(cache_dir, sub, key, build)


def cached_encoded_split(cache_dir: Optional[str], sub: str, key: str,
                         read: Callable[[], Tuple[Sequence, Sequence]], image_size: Optional[int],
                         chunk: int = 512, where: Optional[str] = None,
                         how: str = "") -> Tuple[object, List]:
    """A split of encoded images (bytes / file paths, decoded with PIL to RGB), decoded once into
    the cache in canonical class order; resized to ``image_size`` when given and different.

    An item that cannot be decoded raises a one-line :class:`~scl_plugin.data.DataError` naming
    it: its path, or for bytes its index in ``where`` (the file holding them). Images of
    different sizes (no ``image_size``) are reported the same way; ``how`` (how to get an intact
    copy) is appended.
    """
    from PIL import Image
    from .base import canonical_order

    def decode(items, i):
        item = items[i]
        is_path = isinstance(item, (str, os.PathLike))
        try:
            src = item if is_path else io.BytesIO(bytes(memoryview(item)))
            with Image.open(src) as im:
                im = im.convert("RGB")
                if image_size and im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.LANCZOS)
                return np.asarray(im, dtype=np.uint8)
        except DECODE_ERRORS + (TypeError,) as e:
            if is_path:
                raise damaged(sub, item, None, e, how) from None
            raise damaged(sub, where or "the data file", f"image {i} (of {len(items)})", e,
                          how) from None

    def build(open_writer):
        items, labels = read()
        labels = [plain_label(v) for v in labels]
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} images but {len(labels)} labels")
        order = canonical_order(labels)
        first = decode(items, order[0]) if order else np.zeros((1, 1, 3), np.uint8)
        writer = open_writer(len(order), (3, first.shape[0], first.shape[1]))
        for s in range(0, len(order), chunk):
            block = [first if i == order[0] and s == 0 else decode(items, i)
                     for i in order[s:s + chunk]]
            for i, im in zip(order[s:s + chunk], block):
                if im.shape != first.shape:
                    what = items[i] if isinstance(items[i], (str, os.PathLike)) else \
                        f"image {i} of {where or 'the data file'}"
                    raise DataError(f"{sub}: {what} is {im.shape[1]}x{im.shape[0]} but the first "
                                    f"image of its split is {first.shape[1]}x{first.shape[0]}; all "
                                    f"images of this layout have one size: that file is damaged or "
                                    f"does not belong here, replace it with an intact copy")
            writer.write(np.stack(block).transpose(0, 3, 1, 2))
        return [labels[i] for i in order]
    return cached_arrays(cache_dir, sub, key, build)
