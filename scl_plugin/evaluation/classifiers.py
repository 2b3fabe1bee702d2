"""Batched few-shot classifiers on precomputed features: logistic regression, prototypes.

All functions take a batch of episodes: support features ``Xs`` (E, S, d), support labels
``ys`` (E, S) in ``0..ways-1``, query features ``Xq`` (E, Q, d); they return predicted
query labels (E, Q) as an int64 tensor.
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import torch
import torch.nn.functional as F_

from .logreg import fit_predict_logreg, sklearn_logreg_predict
from .simpleshot import cl2n

__all__ = ["CLASSIFIERS", "classify", "prototypes", "proto_cosine", "proto_euclidean",
           "logreg", "logreg_sklearn", "simpleshot"]


def _t(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def prototypes(Xs, ys, ways: int) -> torch.Tensor:
    """Class means of the support features: (ways, d) for one episode ``Xs`` (S, d), ``ys`` (S,);
    (E, ways, d) for a batch of episodes (E, S, d), (E, S). Differentiable in ``Xs``.

    One episode is summed with ``index_add`` (what the episodic methods train through), a batch
    with one matmul; the two agree to round-off. A class without support rows gets a zero vector.

    Example::

        >>> prototypes(torch.tensor([[0.0, 2.0], [2.0, 0.0], [5.0, 5.0]]), torch.tensor([0, 0, 1]), 2)
        tensor([[1., 1.],
                [5., 5.]])
    """
    Xs, ys = _t(Xs), _t(ys).long().to(_t(Xs).device)
    if Xs.dim() == 2:
        sums = torch.zeros(ways, Xs.shape[-1], device=Xs.device, dtype=Xs.dtype).index_add(0, ys, Xs)
        return sums / torch.bincount(ys, minlength=ways).clamp(min=1)[:, None]
    onehot = F_.one_hot(ys, ways).to(Xs.dtype)                      # (E, S, ways)
    counts = onehot.sum(dim=1).clamp_min(1).unsqueeze(-1)           # (E, ways, 1)
    return onehot.transpose(1, 2) @ Xs / counts


def proto_cosine(Xs, ys, Xq, ways: int, **_) -> torch.Tensor:
    """Nearest prototype by cosine similarity."""
    protos = F_.normalize(prototypes(Xs, ys, ways), dim=-1)
    q = F_.normalize(_t(Xq).to(protos.dtype), dim=-1)
    return (q @ protos.transpose(1, 2)).argmax(dim=-1)


def proto_euclidean(Xs, ys, Xq, ways: int, **_) -> torch.Tensor:
    """Nearest prototype by squared Euclidean distance (ProtoNet's rule)."""
    protos = prototypes(Xs, ys, ways)
    q = _t(Xq).to(protos.dtype)
    return torch.cdist(q, protos).argmin(dim=-1)


def logreg(Xs, ys, Xq, ways: int, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4,
           **_) -> torch.Tensor:
    """Batched torch L2 logistic regression (same optimum as scikit-learn's)."""
    return fit_predict_logreg(Xs, ys, Xq, ways, C=C, max_iter=max_iter, tol=tol).cpu()


def logreg_sklearn(Xs, ys, Xq, ways: int, C: float = 1.0, max_iter: int = 1000,
                   tol: float = 1e-4, **_) -> torch.Tensor:
    """scikit-learn ``LogisticRegression``, one episode at a time (the slow reference)."""
    return torch.from_numpy(sklearn_logreg_predict(Xs, ys, Xq, C=C, max_iter=max_iter, tol=tol))


def simpleshot(Xs, ys, Xq, ways: int, base_mean=None, **_) -> torch.Tensor:
    """SimpleShot: nearest CL2N support centroid, Euclidean (see :mod:`.simpleshot`)."""
    if base_mean is None:
        raise ValueError("classifier 'simpleshot' needs base_mean= (the mean feature of the base classes)")
    Xs, Xq = _t(Xs).float(), _t(Xq).float()
    return proto_euclidean(cl2n(Xs, base_mean), ys, cl2n(Xq, base_mean), ways)


CLASSIFIERS: Dict[str, Callable[..., torch.Tensor]] = {
    "logreg": logreg,
    "logreg_sklearn": logreg_sklearn,
    "proto_cosine": proto_cosine,
    "proto_euclidean": proto_euclidean,
    "simpleshot": simpleshot,
}


def classify(method: str, Xs, ys, Xq, ways: int, **kw) -> torch.Tensor:
    """Predict query labels (E, Q) with one of :data:`CLASSIFIERS`.

    ``kw`` (``C``, ``max_iter``, ``tol``) is used by the logistic regressions, ``base_mean``
    by ``simpleshot``; the others ignore what they do not use. ("native" classification, where
    the learner adapts itself, lives in :func:`scl_plugin.evaluation.episodes.evaluate`.)
    """
    try:
        fn = CLASSIFIERS[method]
    except KeyError:
        raise ValueError(f"unknown classifier {method!r}; allowed: "
                         f"{', '.join(CLASSIFIERS)} (and 'native' in evaluate())") from None
    return fn(Xs, ys, Xq, ways, **kw)
