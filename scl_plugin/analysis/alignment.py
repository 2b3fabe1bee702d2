"""Alignment and uniformity of embeddings (Wang & Isola, ICML 2020), on L2-normalised features.

    alignment  = E_{(x, x+) positive pairs} ||f(x) - f(x+)||^alpha          (lower: positives closer)
    uniformity = log E_{x != y} exp(-t ||f(x) - f(y)||^2)                   (lower: more uniform)

with alpha = 2, t = 2 as in the paper. On labelled test embeddings the positive pairs are the
pairs of distinct images of the same class (``class_alignment``). The SCL authors drop the
uniformity term from their contrastive distillation; these two numbers on the test features of
CE, SCL and the distilled student show what that does.

Example (``z``: a model's test features, ``labels`` their classes)::

    >>> import tempfile, pathlib
    >>> z, labels = torch.randn(12, 8), torch.arange(4).repeat(3)
    >>> a, u = class_alignment(z, labels), uniformity(z)
    >>> 0 <= a <= 4 and u <= 0
    True
    >>> path = plot_alignment_uniformity({"a": (a, u), "b": (a / 2, u)}, str(pathlib.Path(tempfile.mkdtemp()) / "au.png"))
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ..utils import save_figure

__all__ = ["alignment", "class_alignment", "uniformity", "alignment_uniformity", "plot_alignment_uniformity"]


def _unit(z) -> torch.Tensor:
    return F.normalize(torch.as_tensor(z).detach().to("cpu", torch.float64), dim=1)


def alignment(z1, z2, alpha: float = 2.0) -> float:
    """Mean ``||z1_i - z2_i||^alpha`` over row pairs (e.g. two views of the same images)."""
    return float((_unit(z1) - _unit(z2)).norm(dim=1).pow(alpha).mean())


def class_alignment(z, labels, alpha: float = 2.0) -> float:
    """Alignment over every pair of distinct rows sharing a label."""
    z, labels = _unit(z), torch.as_tensor(labels).cpu()
    i, j = torch.triu_indices(len(labels), len(labels), offset=1)
    same = labels[i] == labels[j]
    if not bool(same.any()):
        raise ValueError("class_alignment: no two rows share a label")
    i, j = i[same], j[same]
    return float((z[i] - z[j]).norm(dim=1).pow(alpha).mean())


def uniformity(z, t: float = 2.0) -> float:
    """``log mean_{i < j} exp(-t ||z_i - z_j||^2)`` (the log-sum-exp form, stable)."""
    d2 = torch.pdist(_unit(z)).pow(2)
    return float(torch.logsumexp(-t * d2, 0) - torch.log(torch.tensor(float(d2.numel()), dtype=torch.float64)))


def alignment_uniformity(z, labels) -> Tuple[float, float]:
    return class_alignment(z, labels), uniformity(z)


def plot_alignment_uniformity(points: Dict[str, Tuple[float, float]], path: str) -> str:
    """Scatter of (uniformity, alignment) per method, lower-left is better. Returns ``path``."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (a, u) in points.items():
        ax.scatter([u], [a], s=40)
        ax.annotate(name, (u, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel="uniformity (lower = more uniform)", ylabel="alignment (lower = same class closer)",
           title="Test embeddings: alignment vs uniformity")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
