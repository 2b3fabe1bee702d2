"""Feature spectra: how many directions an embedding uses (the SCL paper's spectrum figure).

``spectrum`` gives the normalised singular values and explained cumulative variance of a centred
feature matrix; ``plot_spectra`` draws one line per method. Plotting is imported lazily.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..utils import save_figure

__all__ = ["spectrum", "plot_spectra"]


def spectrum(features) -> Dict[str, torch.Tensor]:
    """Singular-value spectrum of a feature matrix ``(N, d)`` after centring its columns.

    Returns a dict of float64 CPU tensors of length ``min(N, d)``:

    * ``singular_values``: descending, divided by the largest (so it starts at 1, ends >= 0);
    * ``explained_cumulative_variance``: ``cumsum(s**2) / sum(s**2)``, non-decreasing and
      ending at exactly 1.

    A matrix with no variance at all gets zeros and an all-ones variance curve.
    """
    x = torch.as_tensor(features).detach().to("cpu", torch.float64)
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"spectrum: expected an (N, d) matrix, got shape {tuple(x.shape)}")
    x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x).clamp_min(0)
    if s[0] <= 0:
        return {"singular_values": torch.zeros_like(s),
                "explained_cumulative_variance": torch.ones_like(s)}
    var = s ** 2
    cum = (var.cumsum(0) / var.sum()).clamp(max=1.0)
    cum = torch.cummax(cum, dim=0).values  # guard against rounding dips
    cum[-1] = 1.0
    return {"singular_values": s / s[0], "explained_cumulative_variance": cum}


def plot_spectra(features_by_method: Dict[str, object], path: str, max_components: Optional[int]
                 = None, title: Optional[str] = None) -> str:
    """One PNG, two panels, one line per method (``{name: (N, d) features}``):

    left, explained cumulative variance vs component index; right, normalised singular values
    on a log scale. ``max_components`` truncates the x axis. Returns ``path``.
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not features_by_method:
        raise ValueError("plot_spectra: no features given")
    fig, (ax_var, ax_sv) = plt.subplots(1, 2, figsize=(10, 4))
    for name, feats in features_by_method.items():
        spec = spectrum(feats)
        var = spec["explained_cumulative_variance"].numpy()
        sv = spec["singular_values"].numpy()
        if max_components is not None:
            var, sv = var[:max_components], sv[:max_components]
        comps = range(1, len(var) + 1)
        ax_var.plot(comps, var, label=name)
        # log axis: numerical zeros (rank deficiency, e.g. the direction removed by centring)
        # would stretch it to 1e-16, so values below 1e-10 are left out of the line
        ax_sv.plot(comps, [v if v > 1e-10 else float("nan") for v in sv], label=name)
    ax_var.set(xlabel="component", ylabel="explained cumulative variance", ylim=(0, 1.02))
    ax_sv.set(xlabel="component", ylabel="singular value / largest", yscale="log")
    for ax in (ax_var, ax_sv):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
