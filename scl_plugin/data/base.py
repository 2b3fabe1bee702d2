"""What every loader returns (:class:`Split`), image sources, and the shared file checks.

A loader reads one on-disk layout and returns ``{"train": Split, "val": Split, "test": Split}``.
Images stay uint8 (``(C, H, W)`` per item); the float conversion, resizing, augmentation and
normalisation happen per item in :class:`~scl_plugin.data.transforms.ImageSet`, i.e. in the
DataLoader workers. Normalisation statistics belong to the data (``Split.mean`` / ``Split.std``):
mini- and tiered-ImageNet use the ones RFS / SCL trained with, so their checkpoints see the
input scale they expect.
"""
from __future__ import annotations

import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from . import DataError

__all__ = ["Split", "TensorSource", "NpySource", "FileSource", "Subset", "need_dir", "need_file",
           "image_files", "subset_split", "canonical_order", "l2l", "IMAGE_EXTENSIONS",
           "RFS_IMAGENET_MEAN", "RFS_IMAGENET_STD", "DECODE_ERRORS", "damaged", "open_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff")

# Pixel statistics RFS and SCL normalise mini- and tiered-ImageNet with (their data loaders).
RFS_IMAGENET_MEAN = (120.39586422 / 255.0, 115.59361427 / 255.0, 104.54012653 / 255.0)
RFS_IMAGENET_STD = (70.68188272 / 255.0, 68.27635443 / 255.0, 72.54505529 / 255.0)


# What reading a damaged file raises: a zip member with a bad CRC or cut short (BadZipFile,
# zlib.error, EOFError), a truncated / non-image PNG or JPEG (PIL: UnidentifiedImageError and
# "image file is truncated" are OSErrors, "broken PNG file" is a SyntaxError, bad tiles or
# modes ValueErrors, short headers struct.error / IndexError).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error,
                 zipfile.BadZipFile)


def damaged(dataset: str, file, item: Optional[str], err: BaseException, how: str = "") -> DataError:
    """The one-line :class:`DataError` for a file that cannot be decoded: names the file, the
    member / item inside it (``None``: the file itself), the cause, and says to replace it.

    ``how`` (how to get an intact copy: a dataset's HOW text) is appended when given.
    """
    if isinstance(err, DataError):
        return err
    name = Path(str(file)).name
    where = f"{item} of {file}" if item else str(file)
    kind = type(err).__name__
    if kind == "error":                                # zlib.error, struct.error
        kind = f"{type(err).__module__}.{kind}"
    cause = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", f"{kind}: {err}")
    cause = " ".join(cause.split())
    head = f"{dataset}: " if dataset else ""
    if isinstance(err, FileNotFoundError) and not item:
        msg = f"{head}{file} is missing ({cause}); restore it or re-download the dataset"
    elif isinstance(err, OSError) and err.errno is not None and not item:   # permissions, I/O
        msg = f"{head}cannot read {file} ({cause}); check its permissions or replace {name}"
    elif item:
        msg = (f"{head}cannot decode {where} ({cause}); {name} is damaged (corrupted or "
               f"truncated copy): re-download or replace {name}")
    else:
        msg = (f"{head}cannot decode {where} ({cause}); the file is damaged (corrupted or "
               f"truncated copy) or not what its name says: replace {name} with an intact copy "
               f"(or re-download the dataset)")
    if how:
        msg += f". {how}"
    return DataError(" ".join(msg.split()))


def open_image(path, mode: str = "RGB", dataset: str = ""):
    """PIL image of the file ``path`` converted to ``mode``; a damaged file -> :func:`damaged`."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except DECODE_ERRORS as e:
        raise damaged(dataset, path, None, e) from None


def l2l():
    try:
        import learn2learn
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("learn2learn is not installed: run tools/install.sh "
                          f"(it builds learn2learn 0.2.0 from source) [{e}]") from None
    return learn2learn


@dataclass
class Split:
    """Raw images of one split.

    ``source[i]`` returns a raw image (uint8 / [0,1] float tensor or PIL image, or an
    ``(image, label)`` pair whose label is ignored); ``labels[i]`` is its class (any sortable ids:
    class order = sorted order, whatever the file order). ``kind`` is "gray" (characters,
    strokes = 1) or "rgb" (natural images). ``mean`` / ``std`` ([0, 1] scale, one per channel) are
    the input normalisation of this data; ``None`` = the default of ``kind``.
    """
    source: Dataset
    labels: List
    kind: str
    where: str          # human description for error messages
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None

    @property
    def num_classes(self) -> int:
        return len(set(self.labels))

    @property
    def stats(self):
        return None if self.mean is None else (tuple(self.mean), tuple(self.std))


class TensorSource(Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


class NpySource(Dataset):
    """Images in a uint8 ``.npy`` file (N, C, H, W), memory-mapped read-only.

    Every process (and DataLoader worker) maps the same file, so they share one copy through the
    page cache; pickling (spawned workers) sends only the path.
    """

    def __init__(self, path: os.PathLike, index: Optional[Sequence[int]] = None):
        self.path = str(path)
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self._arr = None
        self._len = len(self.index) if index is not None else int(self.array.shape[0])

    @property
    def array(self) -> np.ndarray:
        if self._arr is None:
            self._arr = np.load(self.path, mmap_mode="r")
        return self._arr

    def __getstate__(self):
        return {"path": self.path, "index": self.index, "_arr": None, "_len": self._len}

    def __len__(self):
        return self._len

    def __getitem__(self, i):
        j = int(self.index[i]) if self.index is not None else i
        return torch.from_numpy(np.array(self.array[j]))


class FileSource(Dataset):
    """Images read lazily from file paths (PIL), e.g. CUB or a folder of class folders.

    A file that cannot be decoded raises a one-line :class:`DataError` naming its path.
    """

    def __init__(self, paths: Sequence[str], mode: str = "RGB", dataset: str = ""):
        self.paths, self.mode, self.dataset = list(paths), mode, dataset

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return open_image(self.paths[i], self.mode, self.dataset)


class Subset(Dataset):
    def __init__(self, base, indices):
        self.base, self.indices = base, list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.base[self.indices[i]]


def subset_split(split: Split, keep: Callable[[object], bool], where: str) -> Split:
    idx = [i for i, c in enumerate(split.labels) if keep(c)]
    return Split(Subset(split.source, idx), [split.labels[i] for i in idx], split.kind, where,
                 split.mean, split.std)


def canonical_order(labels: Sequence) -> List[int]:
    """Positions sorted by class (sorted class order), file order kept within a class.

    Loaders of layouts whose files list classes in arbitrary order (split files, pickles, JSON
    lists) store their images in this order, so two layouts of the same data give the same
    indices and hence the same seeded episodes.
    """
    return sorted(range(len(labels)), key=lambda i: (labels[i], i))


def need_dir(path: Path, dataset: str, expected: str, how: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{dataset}: data root {path} does not exist or is not a directory; "
                        f"expected {expected}. {how}")
    return path


def need_file(path: Path, dataset: str, expected: str, how: str) -> Path:
    if not path.is_file():
        raise DataError(f"{dataset}: missing file {path}; expected {expected}. {how}")
    return path


def image_files(folder: Path) -> List[str]:
    return sorted(str(p) for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)
