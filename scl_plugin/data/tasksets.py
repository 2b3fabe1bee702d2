"""learn2learn's one-call entry point for every dataset and on-disk layout this package reads.

``get_tasksets`` has the signature and return type of ``l2l.vision.benchmarks.get_tasksets``
(a ``BenchmarkTasksets(train, validation, test)`` namedtuple of ``l2l.data.TaskDataset``), so a
learn2learn script changes one line::

    tasksets = l2l.vision.benchmarks.get_tasksets("mini-imagenet", root="~/data")   # before
    tasksets = scl_plugin.data.get_tasksets("mini-imagenet", root="~/data")         # after

and reads mini-ImageNet from RFS / MetaOptNet pickles, CSV splits or learn2learn's pickles,
Omniglot's small sets, CUB, CloserLook lists, class folders... (the README's data table), with
cross-domain test sets (``"mini-imagenet->cub"``, ``test_dataset=`` / ``test_root=``).

Nothing here reads data itself: every call is one :class:`~scl_plugin.config.DataConfig` handed to
:func:`~scl_plugin.data.fewshot.build_fewshot`, so the validation and test tasks *are* the
harness's seeded episodes (``scl-eval`` / ``scl-bench`` score exactly these for the same
``episode_seed``), and the training stream is the one the harness meta-trains on for the same
``seed``. :func:`register_learn2learn_benchmarks` puts the same tasks behind learn2learn's own
``get_tasksets``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["get_tasksets", "list_tasksets", "register_learn2learn_benchmarks", "SeededTransforms",
           "CROSS_DOMAIN"]

# Image size of each dataset when ``image_size`` is not given (the literature's / paper configs').
_IMAGE_SIZE = {"omniglot-small": 28, "omniglot": 28, "mini-imagenet": 84, "tiered-imagenet": 84,
               "cifarfs": 32, "fc100": 32, "cub": 84, "folder": 84, "synthetic": 28}

# The paper's cross-domain settings (configs/paper/cross-*.yaml): pretrain / meta-train on
# mini-ImageNet, test on CUB (CloserLook split) or a folder of class folders given by test_root.
CROSS_DOMAIN = {
    "mini-imagenet->cub": ("mini-imagenet", "cub"),
    "mini-imagenet->cars": ("mini-imagenet", "folder"),
    "mini-imagenet->places": ("mini-imagenet", "folder"),
    "mini-imagenet->plantae": ("mini-imagenet", "folder"),
}

# DataConfig fields set by get_tasksets' own arguments (not accepted as keywords).
_OWN = ("dataset", "root", "ways", "shots", "queries", "train_episodes")
# learn2learn's mini-ImageNet / tiered / CIFAR-FS / FC100 benchmarks' augmentation argument.
_L2L_AUGMENTATION = {None: "none", "normalize": "none", "lee2019": "standard"}
_UNSET = object()


def _datasets() -> List[str]:
    from ..config import DATASETS
    return list(DATASETS)


def list_tasksets() -> List[str]:
    """
    **Description**

    Names :func:`get_tasksets` accepts: every dataset of the data registry (each in all of its
    on-disk layouts, detected from the files in ``root``) and the paper's cross-domain settings.
    Any ``"<train dataset>-><test dataset>"`` pair is accepted too.

    **Example**
    ~~~python
    from scl_plugin.data import list_tasksets
    print(list_tasksets())   # ['omniglot-small', 'omniglot', 'mini-imagenet', ..., 'mini-imagenet->cub', ...]
    ~~~
    """
    return _datasets() + list(CROSS_DOMAIN)


def _resolve(name: str) -> Tuple[str, Optional[str]]:
    """``name`` -> (training dataset, cross-domain test dataset or None)."""
    if name in CROSS_DOMAIN:
        return CROSS_DOMAIN[name]
    known = _datasets()
    if "->" in name:
        train, test = (p.strip() for p in name.split("->", 1))
        if train in known and test in known:
            return train, test
    elif name in known:
        return name, None
    raise ValueError(f"unknown taskset {name!r}; known: {', '.join(list_tasksets())} "
                     f"(or '<train>-><test>' with both in {', '.join(known)})")


def _data_config(name: str, ways: int, samples: int, num_tasks: int, root, kwargs: Dict[str, Any]):
    """The DataConfig of ``get_tasksets(name, ...)`` and the training-stream seed."""
    from ..config import DataConfig
    kwargs = dict(kwargs)
    seed = int(kwargs.pop("seed", 0))
    aug = kwargs.pop("data_augmentation", _UNSET)
    if aug is not _UNSET:
        if aug not in _L2L_AUGMENTATION:
            raise ValueError(f"data_augmentation={aug!r}: allowed {', '.join(map(repr, _L2L_AUGMENTATION))}")
        if "augment" in kwargs:
            raise TypeError("give either augment= or learn2learn's data_augmentation=, not both")
        kwargs["augment"] = _L2L_AUGMENTATION[aug]
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = sorted(set(kwargs) - (fields - set(_OWN)))
    if unknown:
        allowed = ", ".join(sorted(fields - set(_OWN)) + ["seed", "data_augmentation", "device"])
        raise TypeError(f"get_tasksets: unknown keyword(s) {', '.join(unknown)}; allowed: {allowed}")
    dataset, test_dataset = _resolve(name)
    if test_dataset is not None:
        if kwargs.get("test_dataset") not in (None, test_dataset):
            raise ValueError(f"{name!r} tests on {test_dataset}, not test_dataset={kwargs['test_dataset']!r}")
        kwargs["test_dataset"] = test_dataset
    kwargs.setdefault("image_size", _IMAGE_SIZE.get(dataset, 84))
    if num_tasks is None or num_tasks == 0 or num_tasks < -1:
        raise ValueError(f"num_tasks needs to be -1 (infinity) or positive, got {num_tasks}")
    if num_tasks > 0:       # learn2learn: num_tasks tasks in each of the three sets
        kwargs.setdefault("val_episodes", num_tasks)
        kwargs.setdefault("test_episodes", num_tasks)
    # Support / query is the caller's split of the `samples` images per class, as in learn2learn:
    # tasks depend on ways and shots + queries only, so this is the harness's episode for any split.
    cfg = DataConfig(dataset=dataset, root=str(root), ways=int(ways), shots=int(samples), queries=0,
                     train_episodes=int(num_tasks), **kwargs)
    return cfg, seed


class _CollateTo:
    """A task_collate: learn2learn's default collate, then every tensor to ``device`` (a class,
    so that task sets still pickle into DataLoader workers)."""

    def __init__(self, device):
        self.device = device

    def __call__(self, batch):
        import torch
        from torch.utils.data._utils.collate import default_collate
        return [t.to(self.device) if torch.is_tensor(t) else t for t in default_collate(batch)]


def get_tasksets(name: str, train_ways: int = 5, train_samples: int = 10, test_ways: int = 5,
                 test_samples: int = 10, num_tasks: int = -1, root: str = "../shared/data",
                 device=None, **kwargs):
    """
    **Description**

    learn2learn's ``get_tasksets`` for every dataset and on-disk layout this package reads.

    Returns learn2learn's ``BenchmarkTasksets(train, validation, test)`` namedtuple of
    ``l2l.data.TaskDataset``. A task is ``(X, y)`` as learn2learn's: ``X`` a float tensor
    ``(ways * samples, C, H, W)`` (normalised with the dataset's statistics), ``y`` labels
    ``0..ways-1`` with the ``samples`` images of a class consecutive (``RemapLabels`` +
    ``ConsecutiveLabels``); split support / query yourself (or with
    :func:`scl_plugin.data.split_support_query`: the first ``shots`` of each class are support).

    Seeding (what learn2learn's benchmarks do not do): ``validation`` and ``test`` hold fixed
    episodes that are a function of ``episode_seed`` only, the very tasks ``scl-eval`` /
    ``scl-bench`` evaluate for the same settings; ``train`` is the harness's meta-training
    stream for ``seed`` (a private ``random`` state, not the global one).

    **Arguments**

    * **name** (str) - A name of :func:`list_tasksets`: a dataset (``"omniglot-small"``,
      ``"mini-imagenet"``, ``"cub"``, ``"folder"``, ...), its layout detected from the files in
      ``root`` (or named by ``format=``), or a cross-domain ``"<train>-><test>"`` such as
      ``"mini-imagenet->cub"`` (test data read from ``test_root``).
    * **train_ways** (int, *optional*, default=5) - Classes per training task.
    * **train_samples** (int, *optional*, default=10) - Images per class of a training task
      (support + query).
    * **test_ways** (int, *optional*, default=5) - Classes per test and validation task.
    * **test_samples** (int, *optional*, default=10) - Images per class of a test / validation task.
    * **num_tasks** (int, *optional*, default=-1) - Tasks in each set; -1: an endless training
      stream, and ``val_episodes`` / ``test_episodes`` fixed episodes (default 100 / 600).
    * **root** (str, *optional*, default='../shared/data') - Where the data is; never written to.
    * **device** (torch.device, *optional*, default=None) - If given, tasks are moved there.
    * **kwargs** - Any :class:`~scl_plugin.config.DataConfig` field: ``test_dataset``,
      ``test_root`` (cross-domain), ``format``, ``image_size`` (default: the dataset's usual,
      28 Omniglot, 32 CIFAR, 84 otherwise), ``augment`` (of training tasks; default
      ``"standard"`` like the harness), ``episode_seed``, ``val_episodes``, ``test_episodes``,
      ``cache_dir``, ``cub_split``, ``download``; ``seed`` (training stream, default 0) and
      learn2learn's ``data_augmentation`` (None / 'normalize' -> no augmentation, 'lee2019' ->
      standard).

    **Example**
    ~~~python
    from scl_plugin.data import get_tasksets
    tasksets = get_tasksets("omniglot-small", train_ways=5, train_samples=2, test_ways=5,
                            test_samples=2, num_tasks=10, root="../shared/data")
    X, y = tasksets.train.sample()     # X: (10, 1, 28, 28), y: five labels 0..4, each twice
    X, y = tasksets.test[0]            # the harness's test episode 0 for episode_seed=0
    ~~~
    """
    from .base import l2l as _l2l
    from .episodes import make_taskset
    from .fewshot import build_fewshot
    cfg, seed = _data_config(name, test_ways, test_samples, num_tasks, root, kwargs)
    data = build_fewshot(cfg, seed=seed)
    train = data.train_tasks
    if (int(train_ways), int(train_samples)) != (int(test_ways), int(test_samples)):
        # build_fewshot's own training stream, in the training shape: the same meta-dataset
        # (augmented as configured) and seed, only the task shape differs
        train = make_taskset(train.dataset, int(train_ways), int(train_samples), 0, cfg.train_episodes,
                             seed=train.seed, where=f"{cfg.dataset} train ({data.splits_info['train']})")
    out = (train, data.val_tasks, data.test_tasks)
    if device is not None:
        for ts in out:
            ts.task_collate = _CollateTo(device)
    return _l2l().vision.benchmarks.BenchmarkTasksets(*out)


# ----------------------------------------------------------------------------- learn2learn's table
class SeededTransforms(list):
    """learn2learn task transforms applied under a private ``random`` state.

    A list (so it reads and extends like the usual ``task_transforms`` list) that is also
    callable: learn2learn's ``TaskDataset`` calls a callable ``task_transforms`` instead of
    iterating it, and this call runs every transform with ``random`` swapped for a stream that
    is a function of ``seed`` (and of the DataLoader worker), the caller's state restored
    afterwards: the same draws, in the same order, as :class:`~scl_plugin.data.episodes.SeededTaskDataset`,
    so the ``i``-th task drawn equals the harness's fixed episode ``i``.
    """

    def __init__(self, transforms, seed):
        super().__init__(transforms)
        self.seed = seed
        self._states = {}

    def __call__(self, description=None):
        from .episodes import in_stream

        def apply():
            out = description
            for transform in self:
                out = transform(out)
            return out
        return in_stream(self._states, self.seed, apply)


class _ToDevice:
    """Task transform: move each loaded sample's tensors to ``device`` (learn2learn's ``device=``)."""

    def __init__(self, device):
        self.device = device

    def _move(self, sample):
        import torch
        return [s.to(self.device) if torch.is_tensor(s) else s for s in sample]

    def __call__(self, description):
        for dd in description:
            dd.transforms.append(self._move)
        return description


def _benchmark(name: str):
    """The function learn2learn's ``_TASKSETS[name]`` holds: same arguments as its own
    ``omniglot_tasksets`` etc., returns ``(datasets, transforms)`` for it to wrap in ``Taskset``s."""

    def tasksets(train_ways=5, train_samples=10, test_ways=5, test_samples=10, root="~/data",
                 device=None, **kwargs):
        # learn2learn sizes the sets itself (num_tasks): build every set as a seeded stream
        kwargs.update(val_episodes=-1, test_episodes=-1)
        built = get_tasksets(name, train_ways, train_samples, test_ways, test_samples, num_tasks=-1,
                             root=root, **kwargs)
        datasets, transforms = [], []
        for ts in built:
            chain = list(ts.task_transforms) + ([_ToDevice(device)] if device is not None else [])
            datasets.append(ts.dataset)
            transforms.append(SeededTransforms(chain, ts.seed))
        return tuple(datasets), tuple(transforms)

    tasksets.__name__ = f"scl_{name.replace('-', '_').replace('>', '')}_tasksets"
    tasksets.__doc__ = f"scl_plugin's {name!r} tasksets (scl_plugin.data.get_tasksets) for learn2learn's table."
    return tasksets


def register_learn2learn_benchmarks(prefix: str = "scl/", override: bool = False) -> List[str]:
    """
    **Description**

    Adds this package's tasksets to learn2learn's benchmark table, so learn2learn's own
    ``l2l.vision.benchmarks.get_tasksets`` (and ``list_tasksets``) know them. Call it
    explicitly; importing :mod:`scl_plugin` changes nothing in learn2learn.

    How: learn2learn's ``get_tasksets(name, ...)`` looks ``name`` up in the module dict
    ``learn2learn.vision.benchmarks._TASKSETS``, calls the function found with
    ``train_ways, train_samples, test_ways, test_samples, root, device, **kwargs`` and wraps the
    ``(datasets, transforms)`` it returns in ``l2l.data.Taskset(dataset, transforms, num_tasks)``.
    This adds one such function per name of :func:`list_tasksets`; each builds
    :func:`get_tasksets` and hands learn2learn its meta-datasets with the task transforms wrapped
    in a :class:`SeededTransforms`, so the tasks learn2learn draws are the harness's seeded ones:
    with ``num_tasks=-1`` the ``i``-th task drawn from ``test`` is the harness's test episode
    ``i`` (with ``num_tasks > 0`` learn2learn draws a task the first time its index is read,
    so reading indices in order gives the same tasks). Keyword arguments pass through, e.g.
    ``test_root=``, ``cache_dir=``, ``episode_seed=``. Checked on learn2learn 0.2.0 (the only
    private name used is ``_TASKSETS``; a learn2learn without it raises a RuntimeError here).

    **Arguments**

    * **prefix** (str, *optional*, default='scl/') - Every name is registered as
      ``prefix + name`` (``"scl/mini-imagenet"``: any of our mini-ImageNet layouts).
    * **override** (bool, *optional*, default=False) - Names are also registered bare
      (``"omniglot-small"``, ``"cub"``, ``"mini-imagenet->cub"``, ...) where learn2learn has no
      benchmark of that name; with ``override=True`` also over learn2learn's own
      (``"omniglot"``, ``"mini-imagenet"``, ``"tiered-imagenet"``, ``"cifarfs"``, ``"fc100"``).

    Returns the names added (registering twice is harmless).

    **Example**
    ~~~python
    import learn2learn as l2l
    from scl_plugin.data import register_learn2learn_benchmarks
    register_learn2learn_benchmarks()
    tasksets = l2l.vision.benchmarks.get_tasksets("omniglot-small", train_samples=2, test_samples=2,
                                                  root="../shared/data")
    X, y = tasksets.test.sample()      # the harness's test episode 0 (episode_seed=0)
    ~~~
    """
    from .base import l2l as _l2l
    bench = _l2l().vision.benchmarks
    table = getattr(bench, "_TASKSETS", None)
    if not isinstance(table, dict):
        raise RuntimeError(f"learn2learn {getattr(_l2l(), '__version__', '?')} has no "
                           "vision.benchmarks._TASKSETS table (checked on 0.2.0); use "
                           "scl_plugin.data.get_tasksets directly")
    ours = getattr(bench, "_scl_plugin_names", set())
    added = []
    for name in list_tasksets():
        keys = [prefix + name] if prefix else []
        if override or name not in table or name in ours:
            keys.append(name)
        for key in keys:
            table[key] = _benchmark(name)
            ours.add(key)
            added.append(key)
    bench._scl_plugin_names = ours
    return added
