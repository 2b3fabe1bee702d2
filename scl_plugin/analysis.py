"""Representation analyses from the SCL paper: k-NN retrieval and feature spectra.

Typical use with a trained backbone (``model(x) -> (B, d)`` pooled features)::

    data = build_fewshot(cfg.data)
    ref, ref_y, ref_i = extract_dataset_features(model, data.train_meta, max_per_class=100)
    qry, qry_y, qry_i = extract_dataset_features(model, data.test_meta, max_per_class=20)
    sims, idx = nearest_neighbours(qry, ref, k=5)
    retrieval_grid(data.test_meta, data.train_meta, idx, "retrieval.png",
                   query_ids=qry_i, ref_ids=ref_i)

    plot_spectra({"CE": feats_ce, "SCL": feats_scl}, "spectra.png")

``knn_accuracy`` scores k-NN classification between two labelled feature sets (e.g. a
held-out part of the base classes against the rest). Plotting uses matplotlib's Agg backend
and is imported lazily, so importing this module stays cheap.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .utils import save_figure

__all__ = ["extract_dataset_features", "knn_accuracy", "knn_predict", "nearest_neighbours", "retrieval_grid",
           "spectrum", "plot_spectra"]

# Rows of queries compared against the reference set at once (bounds the similarity matrix).
_CHUNK = 1024


# --------------------------------------------------------------------------- features

def _dataset_labels(dataset) -> Optional[Sequence[int]]:
    """Labels of every item without loading images, when the dataset can tell; else None."""
    mapping = getattr(dataset, "indices_to_labels", None)  # learn2learn MetaDataset: a dict
    if callable(mapping):                                   # ImageSet: a method
        mapping = mapping()
    if isinstance(mapping, dict) and len(mapping) == len(dataset):
        return [int(mapping[i]) for i in range(len(dataset))]
    return None


def _select_indices(dataset, max_per_class: Optional[int]) -> list:
    """All indices, or the first ``max_per_class`` of each class (in dataset order)."""
    if max_per_class is None:
        return list(range(len(dataset)))
    labels = _dataset_labels(dataset)
    if labels is None:  # fall back to reading each item's label
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    taken: Dict[int, int] = defaultdict(int)
    chosen = []
    for i, y in enumerate(labels):
        if taken[y] < max_per_class:
            taken[y] += 1
            chosen.append(i)
    return chosen


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@torch.no_grad()
def extract_dataset_features(model: torch.nn.Module, dataset, batch_size: int = 256,
                             max_per_class: Optional[int] = None, progress: bool = True,
                             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embed a labelled dataset with ``model`` and L2-normalise the features.

    ``dataset`` yields ``(image, label)`` items (e.g. ``FewShotData.train_meta``).
    ``max_per_class`` keeps only the first that many items of each class. The model runs in
    eval mode without gradients on its own device; its previous train/eval mode is restored.

    Returns ``(features (N, d) float32 CPU with unit rows, labels (N,) int64, indices (N,))``
    where ``indices`` are the positions of the items in ``dataset``.
    """
    indices = _select_indices(dataset, max_per_class)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices),
                                         batch_size=batch_size, shuffle=False, num_workers=0)
    if progress:
        try:
            from tqdm.auto import tqdm
            loader = tqdm(loader, desc="features", leave=False)
        except ImportError:
            pass
    device = _model_device(model)
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for x, y in loader:
            f = model(x.to(device))
            feats.append(F.normalize(f.float(), dim=1).cpu())
            labels.append(torch.as_tensor(y).long().reshape(-1))
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("extract_dataset_features: the dataset (after max_per_class) is empty")
    return torch.cat(feats), torch.cat(labels), torch.as_tensor(indices, dtype=torch.long)


# --------------------------------------------------------------------------- k-NN

def nearest_neighbours(query_feats, ref_feats, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` reference rows most cosine-similar to each query row.

    Returns ``(sims, idx)``, both ``(Q, k)``, sorted from most to least similar.
    """
    q = F.normalize(torch.as_tensor(query_feats).float(), dim=1)
    r = F.normalize(torch.as_tensor(ref_feats).float().to(q.device), dim=1)
    if not 1 <= k <= r.shape[0]:
        raise ValueError(f"nearest_neighbours: k={k} must be in 1..{r.shape[0]} (reference size)")
    sims, idx = [], []
    for start in range(0, q.shape[0], _CHUNK):
        s, i = (q[start:start + _CHUNK] @ r.T).topk(k, dim=1)
        sims.append(s)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def knn_predict(query_feats, ref_feats, ref_labels, k: int = 1) -> torch.Tensor:
    """k-NN labels: majority vote among the ``k`` most cosine-similar reference rows.

    A tie between classes goes to the class whose closest neighbour is nearest the query.
    """
    _, idx = nearest_neighbours(query_feats, ref_feats, k)
    ref_labels = torch.as_tensor(ref_labels).to(idx.device)
    classes, ref_codes = torch.unique(ref_labels, return_inverse=True)
    codes = ref_codes[idx]                                           # (Q, k), nearest first
    n_q, n_c = codes.shape[0], classes.numel()
    votes = torch.zeros(n_q, n_c, dtype=torch.long, device=idx.device)
    votes.scatter_add_(1, codes, torch.ones_like(codes))
    rank = torch.arange(k, device=idx.device).expand(n_q, k)
    first = torch.full((n_q, n_c), k, dtype=torch.long, device=idx.device)
    first.scatter_reduce_(1, codes, rank, reduce="amin")             # rank of nearest per class
    score = votes * (k + 1) - first                                  # votes first, then nearness
    return classes[score.argmax(dim=1)]


def knn_accuracy(query_feats, query_labels, ref_feats, ref_labels, k: int = 1) -> float:
    """Fraction of queries whose k-NN prediction (cosine similarity, majority vote, ties to the
    nearest) equals their label."""
    pred = knn_predict(query_feats, ref_feats, ref_labels, k)
    truth = torch.as_tensor(query_labels).to(pred.device)
    return (pred == truth).float().mean().item()


# --------------------------------------------------------------------------- retrieval grid

def _image(source, i: int) -> torch.Tensor:
    """Image ``i`` of a tensor batch or of a dataset of ``(image, label)`` items."""
    item = source[int(i)]
    if isinstance(item, (tuple, list)):
        item = item[0]
    return torch.as_tensor(item)


def _displayable(img: torch.Tensor):
    """(C, H, W) tensor -> (H, W) or (H, W, 3) array in [0, 1] by per-image min-max."""
    img = img.detach().float().cpu()
    if img.dim() == 2:
        img = img.unsqueeze(0)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
    if img.shape[0] == 1:
        return img[0].numpy()
    return img[:3].permute(1, 2, 0).numpy()


def retrieval_grid(query_images, ref_images, idx, path: str, n_queries: int = 8, k: int = 5,
                   query_ids=None, ref_ids=None, query_labels=None, ref_labels=None) -> str:
    """Save a PNG with one row per query: the query image, then its ``k`` nearest references.

    ``query_images`` / ``ref_images`` are ``(N, C, H, W)`` tensors or datasets of
    ``(image, label)`` items. ``idx`` is ``(Q, >=k)`` as from :func:`nearest_neighbours`; its
    row ``q`` and entries index the query / reference *feature* rows. When the features cover
    a subset of a dataset, ``query_ids`` / ``ref_ids`` (the ``indices`` returned by
    :func:`extract_dataset_features`) map feature rows back to dataset positions. With labels
    given, each retrieved image is titled with its label, green if it matches the query's
    (only meaningful when both sets share a label space, e.g. two parts of the base classes).
    Images are rescaled to [0, 1] per image for display. Returns ``path``.
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    idx = torch.as_tensor(idx)
    n_queries = min(n_queries, idx.shape[0])
    k = min(k, idx.shape[1])
    if n_queries < 1 or k < 1:
        raise ValueError("retrieval_grid: need at least one query and one neighbour")
    q_pos = (lambda q: int(query_ids[q])) if query_ids is not None else int
    r_pos = (lambda j: int(ref_ids[j])) if ref_ids is not None else int

    fig, axes = plt.subplots(n_queries, k + 1, figsize=(1.4 * (k + 1), 1.5 * n_queries),
                             squeeze=False)
    for q in range(n_queries):
        row = [("query", q_pos(q), query_images, None)]
        row += [(f"#{j + 1}", r_pos(idx[q, j]), ref_images, int(idx[q, j])) for j in range(k)]
        for col, (title, pos, source, ref_row) in enumerate(row):
            ax = axes[q, col]
            img = _displayable(_image(source, pos))
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            color = "black"
            if query_labels is not None and ref_labels is not None:
                if ref_row is None:
                    title = f"query {int(query_labels[q])}"
                else:
                    lab = int(ref_labels[ref_row])
                    color = "green" if lab == int(query_labels[q]) else "red"
                    title = f"{title}: {lab}"
            ax.set_title(title, fontsize=7, color=color)
            if col == 0:
                for spine in ax.spines.values():
                    spine.set_linewidth(2)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- spectra

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


# The paper's two other analyses live in their own modules and are re-exported here.
from .alignment import (alignment, alignment_uniformity, class_alignment, plot_alignment_uniformity,  # noqa: E402
                        uniformity)
from .feature_reuse import feature_reuse, layer_outputs, linear_cka, plot_feature_reuse, stage_names  # noqa: E402

__all__ += ["alignment", "class_alignment", "uniformity", "alignment_uniformity", "plot_alignment_uniformity",
            "linear_cka", "stage_names", "layer_outputs", "feature_reuse", "plot_feature_reuse"]
