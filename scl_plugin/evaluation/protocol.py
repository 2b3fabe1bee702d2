"""The SCL authors' evaluation protocol, batched (``eval.protocol: scl``).

What ``eval/meta_eval.py`` of the authors' code (yassouali/SCL) does per episode, and what
this module does for many episodes at once:

1. support augmentation: every support image is replicated ``copies`` times (5 for the
   standard benchmarks, 10 cross-domain) and *each* copy goes through the dataset's training
   augmentation (so no unaugmented support image remains, also for one copy); queries are
   not augmented (:class:`SupportAugment`, applied to the images before the backbone);
2. two feature sets from one forward pass (:func:`scl_features`): the pooled d-dim
   embedding and the d x H x W map through ``AdaptiveMaxPool2d(2)`` flattened to 4d, each
   L2-normalised;
3. two independent L2 logistic regressions (C = 1, multinomial), one per feature set,
   solved for all episodes at once by :func:`~scl_plugin.evaluation.logreg.fit_predict_proba_logreg`
   (or one episode at a time by scikit-learn, ``logreg_sklearn``, the reference);
4. prediction: argmax of the sum of the two probability matrices (``combine="max"``: of
   their element-wise maximum), :func:`combine_probabilities`.

The confidence interval (Student's t, ``eval.ci: t``) is in :mod:`.stats`.

Example::

    >>> import torch
    >>> from scl_plugin.backbones import create_backbone
    >>> from scl_plugin.evaluation import evaluate
    >>> backbone = create_backbone("conv4", in_chans=3, image_size=32, hidden=8)
    >>> tasks = [(torch.randn(15, 3, 32, 32), torch.arange(5).repeat(3)) for _ in range(2)]   # 5-way, 2 + 1
    >>> mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    >>> accs = evaluate(backbone, tasks, ways=5, shots=2, queries=1, classifier="logreg", protocol="scl",
    ...                 support_augment=SupportAugment.standard("rgb", 32, mean, std, copies=2), progress=False)
    >>> accs.shape
    (2,)
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F_

from .features import _as_layout, frozen_forward, model_device
from ..utils import torch_threads
from .logreg import fit_predict_proba_logreg_sets, sklearn_logreg_predict_proba

__all__ = ["PROTOCOLS", "COMBINES", "SupportAugment", "scl_features", "scl_probabilities",
           "combine_probabilities", "scl_predict"]

PROTOCOLS = ("pooled", "scl")
COMBINES = ("sum", "max")


class SupportAugment:
    """Replicate each support image ``copies`` times, every copy augmented with ``transform``.

    Episode images arrive normalised; ``transform`` works on [0, 1] images (our training
    augmentations do), so each image is un-normalised with ``mean``/``std``, augmented and
    normalised again. The random draws are a function of ``(seed, episode index)`` only, so
    an episode is augmented identically in every run and however episodes are sharded or
    batched (the caller's RNG state is left untouched). Returns ``(xs', ys')`` with
    ``copies * S`` rows: copy ``c`` of the whole support set is rows ``c*S .. c*S+S-1``.
    """

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], mean: Sequence[float],
                 std: Sequence[float], copies: int = 5, seed: int = 0):
        if copies < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        self.transform, self.copies, self.seed = transform, int(copies), int(seed)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    @classmethod
    def standard(cls, kind: str, image_size: int, mean, std, copies: int = 5,
                 seed: int = 0) -> "SupportAugment":
        """The dataset's standard training augmentation (``data.augment: standard``): for
        natural images random crop (padding 8 at 84 px) + colour jitter 0.4 + flip, the
        authors' training transform; for Omniglot characters a small random affine (a
        flipped character can be another character)."""
        from ..data.transforms import build_augmentation
        return cls(build_augmentation("standard", kind, image_size), mean, std, copies, seed)

    def __call__(self, xs: torch.Tensor, ys: torch.Tensor, episode: int) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.mean.to(xs.device), self.std.to(xs.device)
        raw = xs.float() * std + mean
        # One intra-op thread: each per-image op is tiny, and with two OpenMP threads the
        # affine grid measured ~10x slower per image (same values either way).
        with torch.random.fork_rng(devices=[]), torch_threads(1):
            torch.manual_seed(1_000_003 * self.seed + int(episode))
            out = torch.stack([self.transform(raw[i]) for _ in range(self.copies)
                               for i in range(raw.shape[0])])
        return ((out - mean) / std).to(xs.dtype), ys.repeat(self.copies)


@torch.no_grad()
def scl_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(global (N, d), spatial (N, 4d)) L2-normalised features from one forward pass.

    ``model`` needs ``forward_spatial`` (B, d, H, W), like every
    :class:`~scl_plugin.backbones.Backbone`; global = spatial mean (the pooled embedding),
    spatial = ``AdaptiveMaxPool2d(2)`` of the map, flattened channel-major as ``view(B, -1)``.
    """
    if not hasattr(model, "forward_spatial"):
        raise ValueError("protocol 'scl' needs a backbone with forward_spatial (B, d, H, W)")
    with frozen_forward(model) as fmt:
        device = model_device(model)
        gs, ss = [], []
        for i in range(0, x.shape[0], batch_size):
            fmap = model.forward_spatial(_as_layout(x[i:i + batch_size].to(device), fmt)).float()
            gs.append(fmap.mean(dim=(2, 3)))
            ss.append(F_.adaptive_max_pool2d(fmap, 2).flatten(1))
        return (F_.normalize(torch.cat(gs), dim=1).to(x.device),
                F_.normalize(torch.cat(ss), dim=1).to(x.device))


def scl_probabilities(Gs, Ss, ys, Gq, Sq, ways: int, classifier: str = "logreg", C: float = 1.0,
                      max_iter: int = 1000, tol: float = 1e-4) -> Tuple[torch.Tensor, torch.Tensor]:
    """Query class probabilities (E, Q, K) of the global and of the spatial probe.

    ``G*``: global features (E, n, d), ``S*``: spatial features (E, n, 4d); ``classifier``
    ``"logreg"`` (batched torch) or ``"logreg_sklearn"`` (scikit-learn per episode).
    """
    if classifier == "logreg":   # both probes in one batched solve
        p_g, p_s = fit_predict_proba_logreg_sets([(Gs, Gq), (Ss, Sq)], ys, ways, C=C,
                                                 max_iter=max_iter, tol=tol)
        return p_g.cpu(), p_s.cpu()
    if classifier == "logreg_sklearn":
        fit = lambda Xs, Xq: torch.from_numpy(sklearn_logreg_predict_proba(  # noqa: E731
            Xs, ys, Xq, C=C, max_iter=max_iter, tol=tol))
    else:
        raise ValueError(f"protocol 'scl' fits logistic regressions: classifier must be logreg or "
                         f"logreg_sklearn, got {classifier!r}")
    return fit(Gs, Gq), fit(Ss, Sq)


def combine_probabilities(p_global: torch.Tensor, p_spatial: torch.Tensor, combine: str = "sum") -> torch.Tensor:
    """The authors' aggregation of the two probes: sum (default) or element-wise max."""
    if combine == "sum":
        return p_global + p_spatial
    if combine == "max":
        return torch.maximum(p_global, p_spatial)
    raise ValueError(f"unknown combine {combine!r}; allowed: {', '.join(COMBINES)}")


def scl_predict(Gs, Ss, ys, Gq, Sq, ways: int, combine: str = "sum", classifier: str = "logreg",
                **kw) -> torch.Tensor:
    """Predicted query labels (E, Q) of the two-probe protocol (see the module docstring)."""
    p_g, p_s = scl_probabilities(Gs, Ss, ys, Gq, Sq, ways, classifier=classifier, **kw)
    return combine_probabilities(p_g, p_s, combine).argmax(dim=-1)
