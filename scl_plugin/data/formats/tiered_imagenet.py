"""tiered-ImageNet: learn2learn's layout (PNG bytes in pickles) and RFS / MetaOptNet's
(``{split}_images.npz`` + ``{split}_labels.pkl``). Both are decoded once into a uint8 ``.npy``
cache per split in canonical class order; normalised with the RFS / SCL statistics."""
from __future__ import annotations

import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Dict

import numpy as np

from .. import DataError
from ..base import (RFS_IMAGENET_MEAN, RFS_IMAGENET_STD, Split, canonical_order, damaged, need_dir,
                    need_file)
from ..cache import plain_label, cache_key, cached_arrays, cached_encoded_split
from ..registry import LoadOptions, register
from ..pickles import load_pickle

TIERED_HOW = ("Get it with learn2learn.vision.datasets.TieredImagenet(root, mode, download=True) "
              "on a machine with internet (12 GB), or point data.root at RFS's / MetaOptNet's "
              "{train,val,test}_images.npz + _labels.pkl folder.")
L2L_FILES = "tiered-imagenet/{train,val,test}_images_png.pkl and {split}_labels.pkl (learn2learn)"
RFS_FILES = "{train,val,test}_images.npz (key 'images') + {split}_labels.pkl (key 'labels') (RFS)"
_BAD = (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError, OSError,
        zipfile.BadZipFile)


def _split(source, labels, where) -> Split:
    return Split(source, labels, "rgb", where, RFS_IMAGENET_MEAN, RFS_IMAGENET_STD)


@register("tiered-imagenet", "l2l", files=L2L_FILES, how=TIERED_HOW,
          detect=lambda root: (root / "tiered-imagenet").is_dir())
def load_l2l(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    """``tiered-imagenet/{split}_images_png.pkl`` (a pickled list of PNG-encoded images) and
    ``{split}_labels.pkl`` (a dict whose ``label_specific`` holds the class of each image)."""
    folder = root / "tiered-imagenet"
    need_dir(root, "tiered-imagenet", L2L_FILES, TIERED_HOW)
    out = {}
    for split in ("train", "val", "test"):
        ipath, lpath = (need_file(folder / f"{split}_{n}.pkl", "tiered-imagenet", L2L_FILES, TIERED_HOW)
                        for n in ("images_png", "labels"))

        def read(ipath=ipath, lpath=lpath):
            images = load_pickle(ipath, "tiered-imagenet", how=TIERED_HOW)
            labels = list(load_pickle(lpath, "tiered-imagenet", how=TIERED_HOW)["label_specific"])
            return images, labels
        try:
            source, labels = cached_encoded_split(opts.cache_dir, "tiered-imagenet",
                                                  cache_key([ipath, lpath], "l2l"), read, None,
                                                  where=str(ipath), how=TIERED_HOW)
        except DataError:       # a damaged file, named with the image in it
            raise
        except _BAD as e:
            raise DataError(f"tiered-imagenet: {folder} {split} files are not in the learn2learn "
                            f"format ({type(e).__name__}: {e}); expected a pickled list of PNG bytes "
                            f"and a dict with 'label_specific'. {TIERED_HOW}") from None
        out[split] = _split(source, labels, str(folder / split))
    return out


# reading a damaged .npz member: bad CRC / cut short (zip), or fewer bytes than the header says
_ZIP_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


def _npz_damaged(path: Path, key: str, e: BaseException) -> DataError:
    return damaged("tiered-imagenet", path, f"member {key}.npy", e, TIERED_HOW)


def _npz_member(path: Path, key: str):
    """Open array ``key`` of an ``.npz`` as (shape, dtype, file object positioned at the data),
    so a 10 GB split streams in chunks instead of being loaded whole (works stored or deflated)."""
    zf = zipfile.ZipFile(path)
    try:
        f = zf.open(f"{key}.npy")
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
    except KeyError:
        zf.close()
        raise
    except _ZIP_DAMAGE + (ValueError,) as e:
        zf.close()
        raise _npz_damaged(path, key, e) from None
    if fortran or dtype != np.uint8 or len(shape) != 4:
        f.close()
        zf.close()
        raise DataError(f"tiered-imagenet: member {key}.npy of {path} is {dtype} {shape}"
                        f"{' fortran' if fortran else ''}, expected (N, H, W, 3) uint8: the file is "
                        f"damaged or not this layout; replace {path.name} with an intact copy "
                        f"(re-download it). {TIERED_HOW}")
    return zf, f, shape


def _read_exactly(f, n: int, path: Path, key: str) -> bytes:
    """``n`` bytes of npz member ``key``; a damaged or short member -> one-line DataError."""
    try:
        data = f.read(n)
    except _ZIP_DAMAGE as e:
        raise _npz_damaged(path, key, e) from None
    if len(data) != n:
        raise _npz_damaged(path, key, EOFError(f"{len(data)} of {n} bytes: the array is cut short"))
    return data


@register("tiered-imagenet", "rfs", files=RFS_FILES, how=TIERED_HOW,
          detect=lambda root: any((root / f"{s}_images.npz").is_file() for s in ("train", "val", "test")))
def load_rfs(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    """RFS / MetaOptNet: ``{split}_images.npz`` (key ``images``, (N, 84, 84, 3) uint8) and
    ``{split}_labels.pkl`` (latin1 pickle, key ``labels``)."""
    need_dir(root, "tiered-imagenet", RFS_FILES, TIERED_HOW)
    out = {}
    for split in ("train", "val", "test"):
        ipath = need_file(root / f"{split}_images.npz", "tiered-imagenet", RFS_FILES, TIERED_HOW)
        lpath = need_file(root / f"{split}_labels.pkl", "tiered-imagenet", RFS_FILES, TIERED_HOW)

        def build(open_writer, ipath=ipath, lpath=lpath):
            labels = [plain_label(v) for v in load_pickle(lpath, "tiered-imagenet", how=TIERED_HOW)["labels"]]
            order = np.asarray(canonical_order(labels), dtype=np.int64)
            zf, f, shape = _npz_member(ipath, "images")
            with zf, f:
                if shape[0] != len(labels):
                    raise DataError(f"tiered-imagenet: {ipath} holds {shape[0]} images but {lpath} "
                                    f"{len(labels)} labels: one of them is damaged or from another "
                                    f"copy; replace {ipath.name} and {lpath.name} with intact ones "
                                    f"(re-download them). {TIERED_HOW}")
                # canonical order = a permutation; files are class-sorted in practice, so runs
                # of consecutive indices stream straight through.
                per = int(np.prod(shape[1:]))
                writer = open_writer(shape[0], (shape[3], shape[1], shape[2]))
                if np.array_equal(order, np.arange(len(order))):
                    for s in range(0, shape[0], 1024):
                        k = min(1024, shape[0] - s)
                        chunk = np.frombuffer(_read_exactly(f, k * per, ipath, "images"),
                                              np.uint8).reshape((k,) + tuple(shape[1:]))
                        writer.write(chunk.transpose(0, 3, 1, 2))
                else:
                    whole = np.frombuffer(_read_exactly(f, int(np.prod(shape)), ipath, "images"),
                                          np.uint8).reshape(shape)
                    for s in range(0, len(order), 1024):
                        writer.write(whole[order[s:s + 1024]].transpose(0, 3, 1, 2))
            return [labels[i] for i in order]
        try:
            source, labels = cached_arrays(opts.cache_dir, "tiered-imagenet",
                                           cache_key([ipath, lpath], "rfs"), build)
        except DataError:       # a damaged file, named with the member in it
            raise
        except _BAD as e:
            raise DataError(f"tiered-imagenet: {ipath.name} / {lpath.name} are not in the RFS format "
                            f"({type(e).__name__}: {e}); expected an npz with 'images' (N,84,84,3 "
                            f"uint8) and a pickled dict with 'labels'. {TIERED_HOW}") from None
        out[split] = _split(source, labels, str(ipath))
    return out
