"""Folders of class folders (``<root>/<class>/<image>``) and CloserLook's JSON file lists
(``{base,val,novel}.json`` with ``image_names`` / ``image_labels``, what SCL's download scripts
write for CUB, Cars, Places and Plantae). Images are read lazily from their files (sizes vary);
a file that cannot be decoded raises a one-line DataError naming its path when it is first read."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from .. import DataError
from ..base import FileSource, Split, canonical_order, image_files, need_dir, IMAGE_EXTENSIONS
from ..registry import LoadOptions, register

FOLDER_HOW = ("Arrange the images as <root>/<class>/<image> (e.g. the Cars / Places / Plantae "
              "test splits of the cross-domain literature), or put CloserLook's "
              "{base,val,novel}.json file lists in <root>.")
JSON_FILES = "{base,val,novel}.json with image_names / image_labels (CloserLook)"
FOLDER_FILES = "<root>/<class>/<image> (test set) or <root>/{train,val,test}/<class>/<image>"
JSON_SPLITS = {"train": "base", "val": "val", "test": "novel"}


def load_folder_classes(root, dataset: str = "folder") -> Split:
    """Every sub-folder of ``root`` is a class; its image files are the samples (RGB)."""
    root = Path(root).expanduser()
    need_dir(root, dataset, "a folder of class folders <root>/<class>/<image>", FOLDER_HOW)
    paths, labels = [], []
    for cdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = image_files(cdir)
        paths += files
        labels += [cdir.name] * len(files)
    if not paths:
        raise DataError(f"{dataset}: no images found under {root}; expected "
                        f"<root>/<class>/<image> with extensions {', '.join(IMAGE_EXTENSIONS)}. "
                        f"{FOLDER_HOW}")
    return Split(FileSource(paths, dataset=dataset), labels, "rgb", str(root))


@register("folder", "closerlook", files=JSON_FILES, how=FOLDER_HOW,
          detect=lambda root: (root / "novel.json").is_file())
def load_closerlook(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    """``novel.json`` -> test (and, as a main dataset, ``base.json`` -> train, ``val.json`` -> val).

    The JSON lists hold the absolute paths of the machine that wrote them: a path that does not
    exist is looked up under ``root`` by its trailing components (``<class>/<image>`` or longer).
    """
    splits = {"test": "novel"} if opts.role == "test" else JSON_SPLITS
    return {s: _json_split(root, root / f"{name}.json") for s, name in splits.items()}


def _resolve(paths: List[str], root: Path, jpath: Path) -> List[str]:
    if not paths or Path(paths[0]).is_file():
        return paths
    parts = Path(paths[0]).parts
    for k in range(2, len(parts) + 1):      # shortest suffix first: <class>/<image>
        for base in (root, root / "images", jpath.parent):
            if (base / Path(*parts[-k:])).is_file():
                return [str(base / Path(*Path(p).parts[-k:])) for p in paths]
    raise DataError(f"folder: {jpath} lists {paths[0]}, found neither there nor under {root} "
                    f"(by its last path components); expected {JSON_FILES} next to the images")


def _json_split(root: Path, jpath: Path) -> Split:
    if not jpath.is_file():
        raise DataError(f"folder: missing file {jpath}; expected {JSON_FILES}. {FOLDER_HOW}")
    try:
        meta = json.loads(jpath.read_text())
        names, labels = list(meta["image_names"]), list(meta["image_labels"])
        if len(names) != len(labels):
            raise ValueError(f"{len(names)} image_names but {len(labels)} image_labels")
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"folder: {jpath} is not a CloserLook file list ({type(e).__name__}: {e}); "
                        f"expected {JSON_FILES}") from None
    paths = _resolve(names, root, jpath)
    order = canonical_order(labels)
    return Split(FileSource([paths[i] for i in order], dataset="folder"), [labels[i] for i in order],
                 "rgb", str(jpath))


@register("folder", "classfolders", files=FOLDER_FILES, how=FOLDER_HOW,
          detect=lambda root: root.is_dir())
def load_folder(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    """As a test set (``role='test'``): ``root/<class>/<image>`` (or ``root/test/<class>/...``);
    as a main dataset: ``root/{train,val,test}/<class>/<image>``."""
    need_dir(root, "folder", FOLDER_FILES, FOLDER_HOW)
    if opts.role == "test":
        return {"test": load_folder_classes(root / "test" if (root / "test").is_dir() else root)}
    if not all((root / s).is_dir() for s in ("train", "val", "test")):
        raise DataError(f"folder: as a training dataset {root} must contain train/, val/ and "
                        f"test/ sub-folders of class folders. {FOLDER_HOW}")
    return {s: load_folder_classes(root / s) for s in ("train", "val", "test")}


@register("cub", "closerlook", files=JSON_FILES, how=FOLDER_HOW,
          detect=lambda root: (root / "novel.json").is_file())
def load_cub_closerlook(root: Path, opts: LoadOptions) -> Dict[str, Split]:
    return load_closerlook(root, opts)
