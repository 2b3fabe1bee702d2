"""``build_fewshot``: one call from a :class:`~scl_plugin.config.DataConfig` to every set a method needs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from . import DataError
from .base import Split
from .registry import load_splits
from .episodes import make_meta_dataset, make_taskset
from .transforms import ImageSet

__all__ = ["FewShotData", "build_fewshot"]

# Channels the models see per dataset (synthetic is 3 so any timm model accepts it).
_GRAY = ("omniglot-small", "omniglot")


@dataclass
class FewShotData:
    """Everything built from one DataConfig.

    * ``train_set``: plain Dataset of the base (train) classes, items ``(image, label)`` with
      labels ``0..num_classes-1``, augmented with ``cfg.augment`` (for flat pretraining).
    * ``train_tasks``: random meta-training episodes (``cfg.train_episodes``, -1 = infinite),
      augmented with "standard" augmentation unless ``cfg.augment == "none"``.
    * ``val_tasks`` / ``test_tasks``: ``cfg.val_episodes`` / ``cfg.test_episodes`` fixed episodes,
      a function of ``cfg.episode_seed`` only, never augmented.
    * ``train_meta`` / ``val_meta`` / ``test_meta``: the un-augmented learn2learn MetaDatasets
      the task sets sample from (e.g. for feature extraction).
    """
    name: str
    train_set: Any
    num_classes: int
    channels: int
    image_size: int
    train_tasks: Any
    val_tasks: Any
    test_tasks: Any
    train_meta: Any
    val_meta: Any
    test_meta: Any
    ways: int
    shots: int
    queries: int
    test_name: str = ""
    splits_info: Dict[str, str] = field(default_factory=dict)
    _train_images: Optional[ImageSet] = field(default=None, repr=False)
    augment: str = "none"

    def pretrain_set(self, two_view: bool = False, augment: Optional[str] = None,
                     second_augment: Optional[str] = None) -> ImageSet:
        """Base-class Dataset; ``two_view=True`` gives ``((view1, view2), label)`` items, each view
        augmented independently with ``augment`` (default: ``cfg.augment``), the second one
        with ``second_augment`` when given (``data.augment_second_view``)."""
        return self._train_images.variant(augment or self.augment, two_view=two_view,
                                          second_augment=second_augment)

    def split(self, task):
        """``(xs, ys, xq, yq)`` of a task drawn from one of the task sets."""
        from .episodes import split_support_query
        x, y = task
        return split_support_query(x, y, self.ways, self.shots, self.queries)


def _image_set(split: Split, channels: int, image_size: int, augment: str, name: str,
               stats=None) -> ImageSet:
    if len(split.labels) == 0:
        raise DataError(f"{name}: split {split.where} is empty")
    return ImageSet(split.source, split.labels, kind=split.kind, channels=channels,
                    image_size=image_size, augment=augment, name=name, stats=stats)


def _splits(cfg, test: bool = False):
    """:func:`load_splits` of ``cfg``'s training dataset (in ``data.format``), or with ``test`` of
    the dataset its test episodes come from (cross-domain: ``data.test_dataset`` read as a test
    set from ``data.test_root``). Memoised there: every caller shares one build."""
    cross = test and bool(cfg.test_dataset)
    return load_splits(cfg.test_dataset if cross else cfg.dataset, (cfg.test_root or cfg.root) if cross else cfg.root,
                       image_size=int(cfg.image_size), cache_dir=cfg.cache_dir, cub_split=cfg.cub_split,
                       download=cfg.download, role="test" if cross else "main",
                       format="auto" if test else getattr(cfg, "format", "auto"))


def build_fewshot(cfg, seed: int = 0) -> FewShotData:
    """Build datasets and task sets for ``cfg`` (a DataConfig).

    ``seed`` only drives the stream of *training* episodes (and per-worker streams derived from
    it); validation and test episodes depend on ``cfg.episode_seed`` alone, so every method and
    every run seed is evaluated on exactly the same tasks. Cross-domain: ``cfg.test_dataset``
    (read from ``cfg.test_root``, default ``cfg.root``) replaces the test split; its images are
    converted to the training channel count and normalised like the training data (the
    statistics are a property of the training dataset / format, e.g. RFS's for mini-ImageNet).
    """
    name = cfg.dataset
    size = int(cfg.image_size)
    splits = _splits(cfg)
    channels = 1 if name in _GRAY else 3
    test_name = name
    if cfg.test_dataset:
        test_name = cfg.test_dataset
        test_splits = _splits(cfg, test=True)
        splits = dict(splits, test=test_splits["test"])

    train_aug = cfg.augment
    task_aug = "none" if cfg.augment == "none" else "standard"
    stats = splits["train"].stats
    train_images = _image_set(splits["train"], channels, size, "none", f"{name} train", stats)
    train_set = train_images.variant(train_aug)
    val_images = _image_set(splits["val"], channels, size, "none", f"{name} val", stats)
    test_images = _image_set(splits["test"], channels, size, "none", f"{test_name} test", stats)

    train_meta = make_meta_dataset(train_images)
    val_meta = make_meta_dataset(val_images)
    test_meta = make_meta_dataset(test_images)
    task_meta = train_meta if task_aug == "none" else make_meta_dataset(train_images.variant(task_aug))

    w, k, q = cfg.ways, cfg.shots, cfg.queries
    train_tasks = make_taskset(task_meta, w, k, q, cfg.train_episodes, seed=f"train/{seed}",
                               where=f"{name} train ({splits['train'].where})")
    val_tasks = make_taskset(val_meta, w, k, q, cfg.val_episodes, seed=f"val/{cfg.episode_seed}",
                             where=f"{name} val ({splits['val'].where})")
    test_tasks = make_taskset(test_meta, w, k, q, cfg.test_episodes,
                              seed=f"test/{cfg.episode_seed}",
                              where=f"{test_name} test ({splits['test'].where})")
    return FewShotData(
        name=name, train_set=train_set, num_classes=train_images.num_classes, channels=channels,
        image_size=size, train_tasks=train_tasks, val_tasks=val_tasks, test_tasks=test_tasks,
        train_meta=train_meta, val_meta=val_meta, test_meta=test_meta, ways=w, shots=k, queries=q,
        test_name=test_name, splits_info={s: sp.where for s, sp in splits.items()},
        _train_images=train_images, augment=train_aug,
    )


def channels_for(dataset: str) -> int:
    """Channels the models see for ``dataset`` (grayscale Omniglot: 1, everything else: 3)."""
    return 1 if dataset in _GRAY else 3


def build_test_tasks(cfg) -> Any:
    """Only the fixed test episodes of ``cfg`` (a DataConfig): what evaluation needs, without
    building the train and validation splits (whose class counts may not fit the episodes)."""
    size = int(cfg.image_size)
    name = cfg.test_dataset or cfg.dataset
    test = _splits(cfg, test=True)["test"]
    stats = test.stats
    if cfg.test_dataset:
        # normalised like the training data (the statistics are the training format's property)
        stats = _splits(cfg)["train"].stats
    meta = make_meta_dataset(_image_set(test, channels_for(cfg.dataset), size, "none", f"{name} test", stats))
    return make_taskset(meta, cfg.ways, cfg.shots, cfg.queries, cfg.test_episodes, seed=f"test/{cfg.episode_seed}",
                        where=f"{name} test split ({test.where})")


def build_val_tasks(cfg) -> Any:
    """``cfg.val_episodes`` fixed episodes of ``cfg``'s shape (ways, shots, queries) from the
    training dataset's validation split, seeded by ``cfg.episode_seed`` (what a run is tuned on;
    never the test split)."""
    splits = _splits(cfg)
    val = splits["val"]
    meta = make_meta_dataset(_image_set(val, channels_for(cfg.dataset), int(cfg.image_size), "none",
                                        f"{cfg.dataset} val", splits["train"].stats))
    return make_taskset(meta, cfg.ways, cfg.shots, cfg.queries, cfg.val_episodes, seed=f"val/{cfg.episode_seed}",
                        where=f"{cfg.dataset} val split ({val.where})")


def val_identity(cfg) -> str:
    """Content fingerprint of the validation images of ``cfg`` (a DataConfig)."""
    from .identity import split_identity
    return split_identity(_splits(cfg)["val"])


def train_identity(cfg) -> str:
    """Content fingerprint of the training images of ``cfg`` (a DataConfig): what a run's weights
    are computed from (:func:`scl_plugin.data.identity.split_identity`; cheap on a warm cache)."""
    from .identity import split_identity
    return split_identity(_splits(cfg)["train"])


def test_identity(cfg) -> str:
    """Content fingerprint of the test images of ``cfg`` (cross-domain: of ``cfg.test_dataset``)."""
    from .identity import split_identity
    return split_identity(_splits(cfg, test=True)["test"])
