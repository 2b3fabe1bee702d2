"""Episode-level evaluation: split tasks, embed many episodes at once, classify in batches."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.episodes import split_support_query
from .classifiers import CLASSIFIERS, classify
from .features import extract_features
from .protocol import PROTOCOLS, SupportAugment, scl_features, scl_predict

__all__ = ["evaluate"]

Split = Callable[..., Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


def _iter_episodes(episodes: Any, indices: Optional[Sequence[int]],
                   num_episodes: Optional[int]) -> Tuple[Iterator[Tuple[int, Any]], int]:
    """Yield ``(episode index, task)`` for the selected tasks in output order, and how many."""
    indexable = hasattr(episodes, "__getitem__") and hasattr(episodes, "__len__")
    if indices is not None:
        indices = [int(i) for i in indices]
        if indexable:
            return ((i, episodes[i]) for i in indices), len(indices)
        # Plain iterable: walk it once and keep the wanted ones, then emit in `indices` order.
        wanted = set(indices)
        last = max(indices, default=-1)

        def gen():
            kept = {}
            for i, task in enumerate(episodes):
                if i in wanted:
                    kept[i] = task
                if i >= last:
                    break
            missing = wanted - set(kept)
            if missing:
                raise IndexError(f"episode indices {sorted(missing)[:5]} out of range")
            for i in indices:
                yield i, kept[i]
        return gen(), len(indices)
    if num_episodes is None:
        if not hasattr(episodes, "__len__"):
            raise ValueError("episodes has no len(); pass num_episodes= or indices=")
        num_episodes = len(episodes)
    if indexable:
        return ((i, episodes[i]) for i in range(num_episodes)), num_episodes

    def head():
        for i, task in enumerate(episodes):
            if i >= num_episodes:
                break
            yield i, task
    return head(), num_episodes


def _batches(it: Iterable[Any], size: int) -> Iterator[list]:
    batch = []
    for task in it:
        batch.append(task)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate(model_or_adapt: Any, episodes: Any, ways: int, shots: int,
             queries: Optional[int] = None, classifier: str = "logreg", *, flip: bool = False,
             batch_episodes: int = 100, progress: bool = True, C: float = 1.0,
             max_iter: int = 1000, tol: float = 1e-4, indices: Optional[Sequence[int]] = None,
             num_episodes: Optional[int] = None, split: Optional[Split] = None,
             feature_batch_size: int = 256, desc: str = "eval", protocol: str = "pooled",
             combine: str = "sum", support_augment: Optional[SupportAugment] = None,
             base_mean: Optional[torch.Tensor] = None) -> np.ndarray:
    """Per-episode query accuracies (fractions in [0, 1]), in episode order.

    Args:
        model_or_adapt: for the feature classifiers (``"logreg"``, ``"logreg_sklearn"``,
            ``"proto_cosine"``, ``"proto_euclidean"``) a module mapping images
            (B, C, H, W) -> features (B, d), frozen; for ``"native"`` a callable
            ``adapt(xs, ys) -> learner`` with ``learner(xq) -> logits`` (MAML / ProtoNet
            adapting themselves), called once per episode.
        episodes: a sequence (e.g. a learn2learn ``TaskDataset``) or iterable of tasks
            ``(x, y)``: x (ways*(shots+queries), C, H, W), y labels.
        queries: query images per class (default: every image after the support ones).
        batch_episodes: episodes embedded by one forward pass and classified together.
        C, max_iter, tol: logistic regression settings (scikit-learn's meaning).
        indices: evaluate only these episode indices (for sharding across processes);
            the result is in the order of ``indices`` and equals the corresponding entries
            of a full run.
        num_episodes: how many episodes to take from an iterable without ``len()``.
        base_mean: ``"simpleshot"`` only: the mean raw feature of the base classes
            (:func:`scl_plugin.evaluation.simpleshot.base_mean`); features are then passed
            unnormalised, since CL2N centres before normalising.
        split: ``split(x, y, ways, shots, queries) -> xs, ys, xq, yq`` (default:
            :func:`scl_plugin.data.split_support_query`, first ``shots`` images of each
            class are support, the next ``queries`` the query set).
        protocol: ``"pooled"`` (one probe on the pooled features, RFS) or ``"scl"`` (the
            SCL authors' two probes on pooled + max-pooled spatial features, probabilities
            combined by ``combine`` = ``"sum"`` or ``"max"``; classifier ``logreg`` or
            ``logreg_sklearn``), see :mod:`scl_plugin.evaluation.protocol`.
        support_augment: replaces each episode's support set by augmented copies (a
            :class:`~scl_plugin.evaluation.protocol.SupportAugment`, seeded by episode index).
    """
    if classifier != "native" and classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; allowed: "
                         f"{', '.join(CLASSIFIERS)}, native")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    if protocol == "scl" and classifier not in ("logreg", "logreg_sklearn"):
        raise ValueError(f"protocol 'scl' fits logistic regressions: classifier must be logreg or "
                         f"logreg_sklearn, got {classifier!r}")
    split = split or split_support_query
    tasks, total = _iter_episodes(episodes, indices, num_episodes)
    accs = []
    bar = tqdm(total=total, desc=desc, disable=None if progress else True, leave=False)  # None: off on non-TTY
    try:
        for batch in _batches(tasks, max(1, batch_episodes)):
            parts = [split(task[0], task[1], ways, shots, queries) for _, task in batch]
            if support_augment is not None:
                parts = [(*support_augment(xs, ys, i), xq, yq)
                         for (i, _), (xs, ys, xq, yq) in zip(batch, parts)]
            if classifier == "native":
                for xs, ys, xq, yq in parts:
                    learner = model_or_adapt(xs, ys)
                    with torch.no_grad():
                        pred = learner(xq).argmax(dim=-1).cpu()
                    accs.append((pred == yq).float().mean().item())
            else:
                n_s, n_q = parts[0][0].shape[0], parts[0][2].shape[0]
                if any(p[0].shape[0] != n_s or p[2].shape[0] != n_q for p in parts):
                    raise ValueError("episodes in a batch differ in support/query sizes")
                images = torch.cat([torch.cat([xs, xq]) for xs, _, xq, _ in parts])
                ys = torch.stack([p[1] for p in parts])
                yq = torch.stack([p[3] for p in parts])
                if protocol == "scl":
                    g, sp = scl_features(model_or_adapt, images, batch_size=feature_batch_size)
                    g = g.reshape(len(parts), n_s + n_q, -1).cpu()
                    sp = sp.reshape(len(parts), n_s + n_q, -1).cpu()
                    pred = scl_predict(g[:, :n_s], sp[:, :n_s], ys, g[:, n_s:], sp[:, n_s:], ways,
                                       combine=combine, classifier=classifier, C=C,
                                       max_iter=max_iter, tol=tol)
                else:
                    feats = extract_features(model_or_adapt, images, flip=flip, batch_size=feature_batch_size,
                                             normalize=classifier != "simpleshot")
                    feats = feats.reshape(len(parts), n_s + n_q, -1).cpu()
                    pred = classify(classifier, feats[:, :n_s], ys, feats[:, n_s:], ways,
                                    C=C, max_iter=max_iter, tol=tol, base_mean=base_mean)
                accs.extend((pred.cpu() == yq).double().mean(dim=1).tolist())
            bar.update(len(batch))
    finally:
        bar.close()
    return np.asarray(accs, dtype=np.float64)
