"""Omniglot: the two "background small" zips (no learn2learn class), Lake et al.'s 20-run
one-shot challenge (``all_runs.zip``), and learn2learn's FullOmniglot.

omniglot-small keeps its ``torch.save`` cache and decoding exactly as before the data layer was
split into modules: its images and seeded episodes are pinned by a test.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, NamedTuple

import torch
from torch.utils.data import Dataset

from .. import DataError
from ..base import (DECODE_ERRORS, Split, TensorSource, damaged as _damaged, l2l as _l2l,
                    need_file as _need_file, subset_split as _subset_split)
from ..cache import cache_key, cached_object as _cached
from ..registry import LoadOptions, register
from ..transforms import OMNIGLOT_MEAN, OMNIGLOT_STD

__all__ = ["load_omniglot_small", "load_omniglot_challenge", "ChallengeRun", "find_omniglot_dir",
           "OMNIGLOT_SMALL_VAL_FRACTION"]


def _cache_key(path: Path, *extra) -> str:
    return cache_key([path], *extra)


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


# reading a damaged zip member: bad CRC-32 / bad deflate data / cut short
_ZIP_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError)
CHALLENGE_HOW = ("Get all_runs.zip from https://github.com/brendenlake/omniglot "
                 "(python/one-shot-classification/).")


def _read_member(zf: zipfile.ZipFile, zip_path: Path, name: str, dataset: str, how: str) -> bytes:
    """The bytes of one zip member; a damaged one -> one-line DataError naming zip and member."""
    try:
        return zf.read(name)
    except _ZIP_DAMAGE as e:
        raise _damaged(dataset, zip_path, f"member {name}", e, how) from None


def _decode_member(data: bytes, zip_path: Path, name: str, image_size: int, dataset: str, how: str):
    """:func:`_decode_character_png` of member ``name``; not a (whole) PNG -> one-line DataError."""
    try:
        return _decode_character_png(data, image_size)
    except DECODE_ERRORS as e:
        raise _damaged(dataset, zip_path, f"member {name}", e, how) from None


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
        # progress on a terminal only (disable=None): logs and captured stderr keep one line per error
        for i, (c, n) in enumerate(tqdm(entries, desc=f"decoding {zip_path.name}", leave=False,
                                        mininterval=1.0, disable=None)):
            data = _read_member(zf, zip_path, n, "omniglot-small", OMNIGLOT_SMALL_HOW)
            hashes.append(hashlib.md5(data).hexdigest())
            images[i, 0] = _decode_member(data, zip_path, n, image_size, "omniglot-small",
                                          OMNIGLOT_SMALL_HOW)
            labels.append(cid[c])
    return {"images": torch.from_numpy(images), "labels": labels, "classes": classes,
            "hashes": hashes}


def _omniglot_zip(zip_path: Path, image_size: int, cache_dir) -> dict:
    # a damaged zip raises while building: cached_object then stores nothing
    key = _cache_key(zip_path, f"{image_size}px", "v1")
    return _cached(cache_dir, "omniglot-small", key, lambda: _read_omniglot_zip(zip_path, image_size))


@register("omniglot-small", "zips", files="images_background_small{1,2}.zip in <root> or <root>/omniglot",
          how="See github.com/brendenlake/omniglot.")
def _load_small(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    return load_omniglot_small(root, opts.image_size, opts.cache_dir)


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

            def read(n):
                return _read_member(zf, zpath, n, "omniglot challenge", CHALLENGE_HOW)

            def decode(n):
                return _decode_member(read(n), zpath, n, image_size, "omniglot challenge", CHALLENGE_HOW)
            for run in runs:
                labels_txt = f"{run}/class_labels.txt"
                try:
                    text = read(labels_txt).decode()
                except UnicodeDecodeError as e:
                    raise _damaged("omniglot challenge", zpath, f"member {labels_txt}", e,
                                   CHALLENGE_HOW) from None
                pairs = [ln.split() for ln in text.splitlines() if ln.strip()]
                train_names = sorted(n for n in names if n.startswith(f"{run}/training/")
                                     and n.endswith(".png"))
                pos = {n: i for i, n in enumerate(train_names)}
                try:
                    qy = [pos[_zip_name(t, run)] for _, t in pairs]
                    qn = [_zip_name(q, run) for q, _ in pairs]
                    sx = np.stack([decode(n) for n in train_names])
                    qx = np.stack([decode(n) for n in qn])
                except DataError:       # a damaged member, named
                    raise
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



def _full_omniglot_path(ds, i: int) -> str:
    """The file behind item ``i`` of learn2learn's FullOmniglot (torchvision's two Omniglots)."""
    j = i
    try:
        for part in ds.dataset.datasets:
            if j < len(part):
                name, c = part._flat_character_images[j]
                return os.path.join(part.target_folder, part._characters[c], name)
            j -= len(part)
    except (AttributeError, IndexError, TypeError):
        pass
    return f"image {i} of {getattr(ds, 'root', 'omniglot-py')}"


class _InvertPIL(Dataset):
    """torchvision's Omniglot gives black strokes on white; we use strokes = 1 everywhere."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        from PIL import ImageOps
        try:
            img = self.base[i]
        except DECODE_ERRORS as e:
            raise _damaged("omniglot", _full_omniglot_path(self.base, i), None, e) from None
        img = img[0] if isinstance(img, (tuple, list)) else img
        return ImageOps.invert(img.convert("L"))



# ----------------------------------------------------------------------------- full omniglot
@register("omniglot", "torchvision", files="omniglot-py/images_{background,evaluation}/ (torchvision)")
def _load_full(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    return load_full_omniglot(root, opts.download)


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


