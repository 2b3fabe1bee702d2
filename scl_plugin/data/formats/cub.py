"""CUB-200-2011 through learn2learn's CUBirds200 (images read lazily from their files).

learn2learn lists the images; they are read as it reads them (``Image.open(path).convert("RGB")``)
by a :class:`~scl_plugin.data.base.FileSource`, so a damaged file raises a one-line DataError
naming its path instead of PIL's traceback."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

from .. import DataError
from ..base import FileSource, Split, Subset as _Subset, l2l as _l2l, need_dir as _need_dir
from ..registry import LoadOptions, register


@register("cub", "l2l", files="cubirds200/CUB_200_2011/images/<class>/*.jpg (learn2learn)",
          detect=lambda root: (root / "cubirds200").is_dir())
def _load(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    return load_cub(root, opts.cub_split)


CUB_HOW = ("Get CUB_200_2011.tgz (learn2learn.vision.datasets.CUBirds200(root, download=True) "
           "on a machine with internet) so that <root>/cubirds200/CUB_200_2011/images/<class>/ exists.")


def load_cub(root, cub_split: str) -> Dict[str, Split]:
    """CUB-200-2011 via learn2learn's CUBirds200 (layout ``cubirds200/CUB_200_2011/images/<class>``).

    ``closerlook`` (Chen et al. 2019): class folders sorted, index % 2 == 0 -> train (100),
    % 4 == 1 -> val (50), % 4 == 3 -> test (50), all images. ``metadataset``: learn2learn's own
    140/30/30 split (its default, which drops ImageNet duplicates).
    """
    l2l = _l2l()
    root = Path(os.path.expanduser(str(root)))
    images = root / "cubirds200" / "CUB_200_2011" / "images"
    _need_dir(root, "cub", "cubirds200/CUB_200_2011/images/<class>/*.jpg", CUB_HOW)
    _need_dir(images, "cub", "cubirds200/CUB_200_2011/images/<class>/*.jpg", CUB_HOW)
    out = {}
    try:
        if cub_split == "closerlook":
            ds = l2l.vision.datasets.CUBirds200(root=str(root), mode="all", download=False,
                                                include_imagenet_duplicates=True)
            names = sorted({os.path.basename(os.path.dirname(p)) for p, _ in ds.data})
            if len(names) != 200:
                raise DataError(f"cub: found {len(names)} class folders in {images}, expected 200")
            rank = {n: i for i, n in enumerate(names)}
            cls = [rank[os.path.basename(os.path.dirname(p))] for p, _ in ds.data]
            del ds._bookkeeping_path
            files = FileSource([p for p, _ in ds.data], dataset="cub")
            for split, keep in (("train", lambda i: i % 2 == 0), ("val", lambda i: i % 4 == 1),
                                ("test", lambda i: i % 4 == 3)):
                idx = [j for j, c in enumerate(cls) if keep(c)]
                out[split] = Split(_Subset(files, idx), [cls[j] for j in idx], "rgb",
                                   f"{images} ({split}, closerlook split)")
        else:
            for split, mode in (("train", "train"), ("val", "validation"), ("test", "test")):
                ds = l2l.vision.datasets.CUBirds200(root=str(root), mode=mode, download=False)
                del ds._bookkeeping_path
                out[split] = Split(FileSource([p for p, _ in ds.data], dataset="cub"),
                                   [c for _, c in ds.data], "rgb",
                                   f"{images} ({split}, learn2learn split)")
    except FileNotFoundError as e:
        raise DataError(f"cub: {e.filename} is missing; expected all 200 CUB class folders in "
                        f"{images}. {CUB_HOW}") from None
    return out


