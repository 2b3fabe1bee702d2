"""SimpleShot (Wang et al., 2019, arXiv 1911.04623): nearest centroid on CL2N features.

CL2N: subtract the mean feature of the *base* (training) classes, then L2-normalise; each
query goes to the class whose support centroid is nearest in Euclidean distance. It is an
evaluation rule on a frozen pretrained backbone (the paper uses a CE-trained one), so it
costs no training. The features it receives are the backbone's raw pooled features (the
evaluation skips its usual L2 normalisation for this classifier, since centring must come
first). scikit-learn's ``NearestCentroid`` does the classification step but works on one
episode at a time; this batched version does the same on (episodes, samples, d) tensors.

Example::

    >>> import torch
    >>> from scl_plugin.backbones import create_backbone
    >>> from scl_plugin.evaluation import evaluate
    >>> backbone = create_backbone("conv4", in_chans=1, image_size=28, hidden=8)
    >>> base_set = torch.utils.data.TensorDataset(torch.randn(20, 1, 28, 28), torch.arange(4).repeat(5))
    >>> mean = base_mean(backbone, base_set)             # e.g. data.pretrain_set(augment="none")
    >>> test_tasks = [(torch.randn(10, 1, 28, 28), torch.arange(5).repeat(2)) for _ in range(2)]
    >>> accs = evaluate(backbone, test_tasks, ways=5, shots=1, queries=1, classifier="simpleshot", base_mean=mean,
    ...                 progress=False)
    >>> mean.shape, accs.shape
    (torch.Size([8]), (2,))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F_

from .features import extract_features

__all__ = ["base_mean", "cl2n"]   # the classifier itself: classifiers.simpleshot


def cl2n(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Centre on the base-class mean, then L2-normalise (last dimension)."""
    return F_.normalize(x - mean.to(x.device, x.dtype), dim=-1)


@torch.no_grad()
def base_mean(backbone: torch.nn.Module, dataset, batch_size: int = 256, flip: bool = False) -> torch.Tensor:
    """Mean raw feature (d,) of every image of ``dataset`` (the base classes; no augmentation)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    total, count = None, 0
    for x, _ in loader:
        f = extract_features(backbone, x, flip=flip, batch_size=batch_size, normalize=False)
        total = f.sum(0) if total is None else total + f.sum(0)
        count += f.shape[0]
    return total / count

