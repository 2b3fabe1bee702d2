"""Batch sources for the training loop: flat mini-batches and learn2learn episodes.

A batch source is ``(epoch, start) -> iterable``. The flat source draws the epoch's order
from a generator seeded by ``(seed, epoch)`` and can start at batch ``start`` without loading
the skipped images, so a resumed run sees exactly the batches the uninterrupted run would
have seen. Under several processes each rank takes a strided shard of the same permutation
(what ``DistributedSampler`` does); we shard here rather than through ``accelerator.prepare``
because the sampler must also start mid-epoch.
"""
from __future__ import annotations

from typing import Any, Iterator, List, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..distributed import rank, world_size
from ..utils import worker_init_fn


class ResumableShardSampler(Sampler[int]):
    """Per-epoch seeded permutation, sharded by rank, starting at a given sample."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.start = 0, 0
        self.per_rank = n // world

    def set_position(self, epoch: int, start_sample: int) -> None:
        self.epoch, self.start = epoch, start_sample

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: self.per_rank * self.world]
        return iter(perm[self.rank:: self.world][self.start:].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start


class FlatBatches:
    """Mini-batches of a map-style dataset (SCL / CE pretraining).

    Resuming mid-epoch is bitwise exact with ``num_workers=0`` (augmentations draw from the
    global RNG, which checkpoints restore). With workers, each worker's seed comes from a
    generator seeded by (seed, epoch, start batch): reproducible, but a resumed epoch's
    augmentations differ from the uninterrupted run's after the resume point.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0):
        self.sampler = ResumableShardSampler(len(dataset), seed, rank(), world_size())
        self.batch_size, self.seed = batch_size, seed
        # A private generator: otherwise creating the iterator draws a worker base seed from
        # torch's global RNG, which a resumed epoch would draw at a different point.
        self.generator = torch.Generator()
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=num_workers, worker_init_fn=worker_init_fn,
                                 generator=self.generator, persistent_workers=False)

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.per_rank // self.batch_size

    def __call__(self, epoch: int, start: int) -> DataLoader:
        self.sampler.set_position(epoch, start * self.batch_size)
        self.generator.manual_seed(self.seed * 1_000_003 + epoch * 1009 + start)
        return self.loader


class EpisodeBatches:
    """``meta_batch_size`` tasks per step from a learn2learn ``TaskDataset`` (MAML / ProtoNet).

    Seeded task sets (``scl_plugin.data``) draw descriptions from private ``random`` states;
    :meth:`state_dict` exposes them so checkpoints resume the same task stream, and each
    process gets its own stream (rank in the seed) so data parallelism sees different tasks.
    """

    def __init__(self, tasks: Any, meta_batch_size: int, steps_per_epoch: int):
        self.tasks, self.meta_batch_size, self.steps_per_epoch = tasks, meta_batch_size, steps_per_epoch
        if world_size() > 1 and hasattr(tasks, "_states"):
            tasks.seed = f"{tasks.seed}/rank{rank()}"
            tasks._states = {}

    def state_dict(self) -> dict:
        return {"task_states": dict(getattr(self.tasks, "_states", {}))}

    def load_state_dict(self, state: dict) -> None:
        if hasattr(self.tasks, "_states"):
            self.tasks._states = dict(state.get("task_states", {}))

    def __call__(self, epoch: int, start: int) -> Iterator[List[Sequence[torch.Tensor]]]:
        for _ in range(start, self.steps_per_epoch):
            yield [self.tasks.sample() for _ in range(self.meta_batch_size)]


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
        self.num_workers = num_workers
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
                          num_workers=self.num_workers, worker_init_fn=worker_init_fn, generator=self.generator)
