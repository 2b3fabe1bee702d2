"""k-NN retrieval on frozen features (the SCL paper's retrieval figure and k-NN scores).

``extract_dataset_features`` embeds a labelled dataset (unit rows), ``nearest_neighbours`` /
``knn_predict`` / ``knn_accuracy`` work on such features, and ``retrieval_grid`` draws queries next
to their nearest references. Plotting uses matplotlib's Agg backend, imported lazily.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..evaluation.features import eval_mode, model_device
from ..utils import save_figure

__all__ = ["extract_dataset_features", "knn_accuracy", "knn_predict", "nearest_neighbours", "retrieval_grid"]

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
    device = model_device(model)
    feats, labels = [], []
    with eval_mode(model):
        for x, y in loader:
            f = model(x.to(device))
            feats.append(F.normalize(f.float(), dim=1).cpu())
            labels.append(torch.as_tensor(y).long().reshape(-1))
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
