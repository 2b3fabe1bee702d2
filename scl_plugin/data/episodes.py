"""learn2learn task datasets: random (seeded) meta-training episodes and fixed evaluation episodes.

A task is ``(x, y)``: ``x`` of shape ``(ways * (shots + queries), C, H, W)``, ``y`` in
``0..ways-1`` (learn2learn's ``RemapLabels``), samples of a class consecutive
(``ConsecutiveLabels``), the first ``shots`` of each class being the support.

Two things learn2learn does not do, hand-written here:

* learn2learn samples through the *global* ``random`` module, so fixed episodes would depend
  on whatever else consumed random numbers before. :class:`SeededTaskDataset` swaps in its own
  ``random`` state while it samples a task description and swaps the caller's back afterwards;
  fixed episodes are all drawn at construction from a state that is a function of the seed.
* every task transform is bound to the split's *own* MetaDataset (learn2learn's omniglot
  benchmark binds them to the unfiltered dataset, which leaks test classes into training).
"""
from __future__ import annotations

import functools
import random
from typing import Optional, Tuple

import torch

from . import DataError

__all__ = ["SeededTaskDataset", "make_meta_dataset", "make_taskset", "split_support_query",
           "check_episode_feasible"]


def make_meta_dataset(image_set):
    """Wrap an :class:`~scl_plugin.data.transforms.ImageSet` as a learn2learn MetaDataset.

    ``indices_to_labels`` is always passed, so no image is loaded to build the class index and
    no bookkeeping file is written anywhere.
    """
    from .base import l2l as _l2l
    return _l2l().data.MetaDataset(image_set, indices_to_labels=image_set.indices_to_labels())


def check_episode_feasible(meta, ways: int, shots: int, queries: int, where: str) -> None:
    """One DataError if an N-way (K+Q)-shot task cannot be drawn from ``meta``."""
    n_cls = len(meta.labels)
    if ways > n_cls:
        raise DataError(f"{where}: {ways}-way tasks need at least {ways} classes but this split "
                        f"has {n_cls}; lower data.ways or use a dataset with more classes")
    need = shots + queries
    counts = {c: len(v) for c, v in meta.labels_to_indices.items()}
    small = [c for c, n in counts.items() if n < need]
    if small:
        worst = min(small, key=lambda c: counts[c])
        raise DataError(f"{where}: shots + queries = {shots} + {queries} = {need} images per class "
                        f"are needed but {len(small)} of {n_cls} classes have fewer (class {worst} "
                        f"has {counts[worst]}); lower data.shots / data.queries")


@functools.lru_cache(maxsize=None)
def _seeded_class():
    """Defined on first use so that importing scl_plugin.data does not import learn2learn."""
    from .base import l2l as _l2l
    return type("SeededTaskDataset", (_SeededMixin, _l2l().data.TaskDataset), {})


def __getattr__(name):
    if name == "SeededTaskDataset":
        return _seeded_class()
    raise AttributeError(name)


class _SeededMixin:
    """Mixed into ``l2l.data.TaskDataset`` (as ``SeededTaskDataset``): task descriptions
    come from a private ``random`` state.

    With ``num_tasks == -1`` every draw is a new episode from a stream determined by ``seed`` (and
    the DataLoader worker id, so workers do not all produce the same stream). With
    ``num_tasks > 0`` all descriptions are drawn at construction: task ``i`` is identical across
    processes, builds and runs for the same ``seed``.
    """

    def __init__(self, dataset, task_transforms, num_tasks: int = -1, seed=0):
        super().__init__(dataset, task_transforms, num_tasks)
        self.seed = seed
        self._states = {}
        if num_tasks > 0:
            for i in range(num_tasks):
                self.sampled_descriptions[i] = self.sample_task_description()

    def _stream_key(self):
        return worker_key()

    def sample_task_description(self):
        return in_stream(self._states, self.seed, super().sample_task_description)


def worker_key() -> int:
    """The DataLoader worker id (-1 in the main process): each worker has its own stream."""
    info = torch.utils.data.get_worker_info()
    return -1 if info is None else info.id


def in_stream(states: dict, seed, draw):
    """``draw()`` with Python's ``random`` switched to this worker's private stream, a function of
    ``seed`` kept in ``states`` (worker id -> state); the caller's state is restored afterwards."""
    key = worker_key()
    state = states.get(key)
    if state is None:
        state = random.Random(f"{seed}/{key}").getstate()
    saved = random.getstate()
    try:
        random.setstate(state)
        out = draw()
        states[key] = random.getstate()
    finally:
        random.setstate(saved)
    return out


def make_taskset(meta, ways: int, shots: int, queries: int, num_tasks: int, seed,
                 where: str = "split"):
    """N-way (K+Q)-shot TaskDataset with every transform bound to ``meta`` itself.

    ``FusedNWaysKShots`` rather than ``NWays`` + ``KShots``: on Python 3.11 learn2learn's
    ``NWays`` fails when it is not the first transform, and the fused one is faster.
    """
    from .base import l2l as _l2l
    T = _l2l().data.transforms
    check_episode_feasible(meta, ways, shots, queries, where)
    transforms = [
        T.FusedNWaysKShots(meta, n=ways, k=shots + queries),
        T.LoadData(meta),
        T.RemapLabels(meta),
        T.ConsecutiveLabels(meta),
    ]
    return _seeded_class()(meta, transforms, num_tasks=num_tasks, seed=seed)


def split_support_query(x: torch.Tensor, y: torch.Tensor, ways: int, shots: int, queries: int
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a task into support (first ``shots`` per class) and query (the rest).

    Returns ``(xs, ys, xq, yq)`` grouped by class ``0..ways-1``: ``xs`` has ``ways * shots``
    rows, ``xq`` ``ways * queries``. Works for any order of ``y`` (stable within a class).
    """
    y = torch.as_tensor(y).long()
    per = shots + queries
    if x.shape[0] != ways * per or y.numel() != ways * per:
        raise ValueError(f"task has {x.shape[0]} samples / {y.numel()} labels, expected "
                         f"ways * (shots + queries) = {ways} * {per} = {ways * per}")
    order = torch.sort(y, stable=True).indices.view(ways, per)
    ys_sorted = y[order]
    if not torch.equal(ys_sorted, torch.arange(ways, device=y.device).view(ways, 1).expand(ways, per)):
        raise ValueError(f"task labels must be {shots + queries} samples of each of 0..{ways - 1}, "
                         f"got counts {torch.bincount(y).tolist()}")
    s_idx = order[:, :shots].reshape(-1)
    q_idx = order[:, shots:].reshape(-1)
    return x[s_idx], y[s_idx], x[q_idx], y[q_idx]
