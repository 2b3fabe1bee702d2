"""Batch sources for the training loop: flat mini-batches and learn2learn episodes.

A batch source is ``(epoch, start) -> iterable``. The flat source draws the epoch's order
from a generator seeded by ``(seed, epoch)`` and can start at batch ``start`` without loading
the skipped images, so a resumed run sees exactly the batches the uninterrupted run would
have seen. Under several processes each rank takes a strided shard of the same permutation
(what ``DistributedSampler`` does); we shard here rather than through ``accelerate.prepare``
because the sampler must also start mid-epoch.

Workers (``num_workers > 0``, the GPU default, see :func:`resolve_num_workers`): decoding,
augmentation and, for episodes, task sampling run in DataLoader worker processes, which are
kept alive across epochs (``persistent_workers``), prefetch, and hand back pinned memory
when CUDA is available. Every sample (flat) or every step (episodes) reseeds the worker's
RNGs from ``(seed, epoch, position)``, so a run with workers is reproducible and resumes
exactly, whichever worker happens to produce what. With ``num_workers=0`` everything runs
in the main process drawing from the global RNGs, exactly as before workers existed
(``tests/test_gpu_path.py`` pins that stream).
"""
from __future__ import annotations

import os
import random
from typing import Any, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from ..distributed import rank, world_size
from ..utils import worker_init_fn

MAX_DEFAULT_WORKERS = 8


def resolve_num_workers(num_workers: int) -> int:
    """``data.num_workers``; -1 (the default) means min(8, this process's share of the CPU
    cores) on a CUDA machine and 0 without CUDA (tests and CI run in the main process)."""
    if num_workers >= 0:
        return num_workers
    if not torch.cuda.is_available():
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_DEFAULT_WORKERS, per_process - 1))     # one core left to the training process


def _loader_options(num_workers: int) -> dict:
    opts = {"num_workers": num_workers, "pin_memory": torch.cuda.is_available()}
    if num_workers > 0:
        opts.update(persistent_workers=True, prefetch_factor=4)
    return opts


def _sample_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of ints (deterministic across processes, unlike hash of str)."""
    s = 0x9E3779B97F4A7C15
    for p in parts:
        s = (s * 1_000_003 ^ (int(p) & 0xFFFFFFFFFFFF)) & 0x7FFFFFFFFFFFFFFF
    return s


def _seed_worker_rngs(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)


class ResumableShardSampler(Sampler[int]):
    """Per-epoch seeded permutation, sharded by rank, starting at a given sample.

    ``with_seeds=True`` yields ``(index, sample_seed)`` pairs for :class:`_SeededItems`.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, with_seeds: bool = False):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.with_seeds = with_seeds
        self.epoch, self.start = 0, 0
        self.per_rank = n // world

    def set_position(self, epoch: int, start_sample: int) -> None:
        self.epoch, self.start = epoch, start_sample

    def __iter__(self) -> Iterator[Any]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: self.per_rank * self.world]
        indices = perm[self.rank:: self.world][self.start:].tolist()
        if not self.with_seeds:
            return iter(indices)
        return ((i, _sample_seed(self.seed, self.epoch, self.rank, self.start + p)) for p, i in enumerate(indices))

    def __len__(self) -> int:
        return self.per_rank - self.start


class _SeededItems(Dataset):
    """Item ``(i, seed)``: reseed this worker's RNGs with ``seed``, then ``base[i]``."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        i, seed = item
        _seed_worker_rngs(seed)
        return self.base[i]


class FlatBatches:
    """Mini-batches of a map-style dataset (SCL / CE pretraining).

    Resuming mid-epoch is bitwise exact: with ``num_workers=0`` augmentations draw from the
    global RNG, which checkpoints restore; with workers each sample's augmentation is seeded
    by ``(seed, epoch, position)``.

    Example::

        >>> import torch
        >>> dataset = torch.utils.data.TensorDataset(torch.randn(20, 1, 8, 8), torch.arange(20) % 4)
        >>> batches = FlatBatches(dataset, batch_size=8, seed=0)      # e.g. data.pretrain_set(two_view=True)
        >>> batches.steps_per_epoch
        2
        >>> [tuple(x.shape) for x, y in batches(epoch=0, start=1)]   # resumed at the second batch
        [(8, 1, 8, 8)]
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0):
        num_workers = resolve_num_workers(num_workers)
        self.num_workers = num_workers
        self.sampler = ResumableShardSampler(len(dataset), seed, rank(), world_size(), with_seeds=num_workers > 0)
        self.batch_size, self.seed = batch_size, seed
        # A private generator: otherwise creating the iterator draws a worker base seed from
        # torch's global RNG, which a resumed epoch would draw at a different point.
        self.generator = torch.Generator()
        self.loader = DataLoader(_SeededItems(dataset) if num_workers > 0 else dataset, batch_size=batch_size,
                                 sampler=self.sampler, drop_last=True, worker_init_fn=worker_init_fn,
                                 generator=self.generator, **_loader_options(num_workers))

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.per_rank // self.batch_size

    def __call__(self, epoch: int, start: int) -> DataLoader:
        self.sampler.set_position(epoch, start * self.batch_size)
        self.generator.manual_seed(self.seed * 1_000_003 + epoch * 1009 + start)
        return self.loader


def _as_is(batch: Any) -> Any:
    return batch


class _TaskStream(IterableDataset):
    """Meta-batches of global steps ``first, first+1, ...``; worker ``w`` of ``W`` makes steps
    ``first+w, first+w+W, ...`` (the order in which the DataLoader collects them). Each step
    reseeds the worker's RNGs and the task set's private description stream from the step."""

    def __init__(self, tasks: Any, meta_batch_size: int, seed: str, first: int):
        self.tasks, self.meta_batch_size, self.seed, self.first = tasks, meta_batch_size, seed, first

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, W = (0, 1) if info is None else (info.id, info.num_workers)
        step = self.first + w
        while True:
            stream = random.Random(f"{self.seed}/step{step}")
            _seed_worker_rngs(stream.getrandbits(63))
            if hasattr(self.tasks, "_states"):
                self.tasks._states[self.tasks._stream_key()] = stream.getstate()
            yield [self.tasks.sample() for _ in range(self.meta_batch_size)]
            step += W


class EpisodeBatches:
    """``meta_batch_size`` tasks per step from a learn2learn ``TaskDataset`` (MAML / ProtoNet).

    ``num_workers=0``: tasks are sampled in the main process. Seeded task sets
    (``scl_plugin.data``) draw descriptions from private ``random`` states; :meth:`state_dict`
    exposes them so checkpoints resume the same task stream. ``num_workers>0`` (-1: the GPU
    default): tasks are sampled, loaded and augmented in DataLoader workers, each step seeded by
    its global index (``epoch * steps_per_epoch + batch``), so the stream is reproducible and
    resumes exactly with any number of workers (it differs from the ``num_workers=0`` stream).
    Each process gets its own stream (rank in the seed) so data parallelism sees different tasks.

    Example::

        >>> import torch
        >>> class Tasks:                                   # e.g. data.train_tasks (a learn2learn TaskDataset)
        ...     def sample(self):
        ...         return torch.randn(10, 1, 8, 8), torch.arange(5).repeat(2)
        >>> batches = EpisodeBatches(Tasks(), meta_batch_size=2, steps_per_epoch=3)
        >>> [len(tasks) for tasks in batches(epoch=0, start=0)]       # loss, _ = method.loss(tasks)
        [2, 2, 2]
    """

    def __init__(self, tasks: Any, meta_batch_size: int, steps_per_epoch: int, num_workers: int = 0):
        self.tasks, self.meta_batch_size, self.steps_per_epoch = tasks, meta_batch_size, steps_per_epoch
        self.num_workers = resolve_num_workers(num_workers)
        if world_size() > 1 and hasattr(tasks, "_states"):
            tasks.seed = f"{tasks.seed}/rank{rank()}"
            tasks._states = {}
        self._iter: Optional[Iterator] = None
        self._next = -1                          # global step the live worker iterator yields next

    def state_dict(self) -> dict:
        return {"task_states": dict(getattr(self.tasks, "_states", {}))}

    def load_state_dict(self, state: dict) -> None:
        if hasattr(self.tasks, "_states"):
            self.tasks._states = dict(state.get("task_states", {}))

    def _open(self, first: int) -> None:
        self._iter = None                         # shuts the previous workers down
        seed = f"{getattr(self.tasks, 'seed', 0)}/rank{rank()}"
        loader = DataLoader(_TaskStream(self.tasks, self.meta_batch_size, seed, first), batch_size=None,
                            collate_fn=_as_is, **dict(_loader_options(self.num_workers), persistent_workers=False))
        self._iter, self._next = iter(loader), first

    def __call__(self, epoch: int, start: int) -> Iterator[List[Sequence[torch.Tensor]]]:
        if self.num_workers == 0:
            for _ in range(start, self.steps_per_epoch):
                yield [self.tasks.sample() for _ in range(self.meta_batch_size)]
            return
        first = epoch * self.steps_per_epoch + start
        if self._iter is None or self._next != first:
            self._open(first)
        for _ in range(start, self.steps_per_epoch):
            batch = next(self._iter)
            self._next += 1
            yield batch


class PKBatches:
    """Batches of P classes x K images (triplet / N-pair losses need positives and negatives).

    Each batch draws P distinct classes among those with at least K images, then K distinct
    images of each, from a generator seeded by (seed, epoch, rank): resuming at batch ``start``
    gives exactly the batches the uninterrupted run would have seen, and every process draws
    its own batches. An epoch has ``len(dataset) // (P * K)`` batches (about one pass).
    (learn2learn's ``NWays``/``KShots`` task transforms sample the same thing, but one task at a
    time through a MetaDataset; here a whole epoch's indices are drawn at once.)
    """

    def __init__(self, dataset: Dataset, classes_per_batch: int, images_per_class: int, seed: int,
                 num_workers: int = 0):
        labels = torch.as_tensor(getattr(dataset, "targets", None) or [int(dataset[i][1]) for i in range(len(dataset))])
        by_class = [torch.nonzero(labels == c).flatten() for c in labels.unique()]
        self.by_class = [ix for ix in by_class if ix.numel() >= images_per_class]
        if len(self.by_class) < classes_per_batch:
            raise ValueError(f"PK batches need {classes_per_batch} classes with >= {images_per_class} images, "
                             f"the dataset has {len(self.by_class)}: lower embed.pk_classes / embed.pk_images")
        self.dataset, self.P, self.K, self.seed = dataset, classes_per_batch, images_per_class, seed
        self.batch_size = classes_per_batch * images_per_class
        self.num_workers = resolve_num_workers(num_workers)
        self.generator = torch.Generator()

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.dataset) // self.batch_size)

    def epoch_batches(self, epoch: int) -> List[List[int]]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1009 + rank())
        batches = []
        for _ in range(self.steps_per_epoch):
            classes = torch.randperm(len(self.by_class), generator=g)[: self.P]
            batch = [self.by_class[c][torch.randperm(self.by_class[c].numel(), generator=g)[: self.K]]
                     for c in classes.tolist()]
            batches.append(torch.cat(batch).tolist())
        return batches

    def __call__(self, epoch: int, start: int) -> DataLoader:
        self.generator.manual_seed(self.seed * 1_000_003 + epoch * 1009 + start)
        return DataLoader(self.dataset, batch_sampler=self.epoch_batches(epoch)[start:],
                          generator=self.generator, **_loader_options(self.num_workers))
