"""Analysis tools: feature extraction, k-NN retrieval, retrieval grids and feature spectra."""
import pytest
import torch
from PIL import Image
from torch import nn

import learn2learn as l2l
from scl_plugin.analysis import (extract_dataset_features, knn_accuracy, knn_predict,
                                 nearest_neighbours, plot_spectra, retrieval_grid, spectrum)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waits when the 2 cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def blobs(n_classes=5, per_class=20, dim=16, spread=0.05, seed=0):
    """Well separated Gaussian blobs around random unit centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_classes, dim, generator=g), dim=1)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    feats = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return feats, labels


def assert_png(path, min_w=100, min_h=100):
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_w and im.size[1] >= min_h
        return im.size


# ------------------------------------------------------------------ extract_dataset_features

class TinyImages(torch.utils.data.Dataset):
    """In-memory (image, label) items; 3 classes of 4 images each, labels 0,1,2,0,1,2,..."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(12, 1, 4, 4, generator=g)
        self.y = [i % 3 for i in range(12)]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def tiny_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    return model


def test_extract_matches_manual_computation_and_restores_mode():
    data, model = TinyImages(), tiny_model()
    model.train()
    feats, labels, idx = extract_dataset_features(model, data, batch_size=5, progress=False)
    assert model.training  # mode restored
    assert feats.shape == (12, 5) and labels.shape == (12,) and idx.tolist() == list(range(12))
    expected = torch.nn.functional.normalize(model(data.x).detach(), dim=1)
    torch.testing.assert_close(feats, expected)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(12))
    assert labels.tolist() == data.y
    assert not feats.requires_grad

    model.eval()
    extract_dataset_features(model, data, progress=False)
    assert not model.training


def test_extract_max_per_class_plain_and_learn2learn_dataset():
    data, model = TinyImages(), tiny_model()
    feats, labels, idx = extract_dataset_features(model, data, max_per_class=2, progress=False)
    assert idx.tolist() == [0, 1, 2, 3, 4, 5]          # first two of each class, dataset order
    assert torch.bincount(labels).tolist() == [2, 2, 2]
    expected = torch.nn.functional.normalize(model(data.x[idx]).detach(), dim=1)
    torch.testing.assert_close(feats, expected)

    meta = l2l.data.MetaDataset(data, indices_to_labels={i: y for i, y in enumerate(data.y)})
    feats_m, labels_m, idx_m = extract_dataset_features(model, meta, max_per_class=1,
                                                        progress=False)
    assert idx_m.tolist() == [0, 1, 2] and labels_m.tolist() == [0, 1, 2]
    torch.testing.assert_close(feats_m, feats[:3])


# ------------------------------------------------------------------ k-NN

def test_nearest_neighbours_returns_self_first():
    ref, _ = blobs()
    sims, idx = nearest_neighbours(ref[[3, 17, 42]], ref, k=4)
    assert sims.shape == idx.shape == (3, 4)
    assert idx[:, 0].tolist() == [3, 17, 42]
    torch.testing.assert_close(sims[:, 0], torch.ones(3))
    assert (sims[:, :-1] >= sims[:, 1:]).all()          # sorted, most similar first


def test_knn_separable_blobs_is_perfect():
    feats, labels = blobs(n_classes=5, per_class=20)
    qf, ql = blobs(n_classes=5, per_class=10, seed=0)    # same centres, fresh noise below
    qf = qf + 0.05 * torch.randn(qf.shape, generator=torch.Generator().manual_seed(7))
    for k in (1, 5):
        assert knn_accuracy(qf, ql, feats, labels, k=k) == 1.0
    # leave-one-out style check: each reference point's nearest *other* point shares its class
    _, idx = nearest_neighbours(feats, feats, k=2)
    assert (labels[idx[:, 1]] == labels).all()


def test_knn_random_labels_is_near_chance():
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(2000, 32, generator=g)
    query = torch.randn(1000, 32, generator=g)
    ref_y = torch.randint(0, 4, (2000,), generator=g)
    query_y = torch.randint(0, 4, (1000,), generator=g)
    acc = knn_accuracy(query, query_y, ref, ref_y, k=5)
    assert 0.18 < acc < 0.32                             # chance = 0.25


def test_knn_majority_vote_and_tie_break():
    # query at angle 0; references at increasing angles (decreasing similarity)
    angles = torch.tensor([0.1, 0.2, 0.3, 0.4])
    ref = torch.stack([angles.cos(), angles.sin()], dim=1)
    query = torch.tensor([[1.0, 0.0]])
    # k=3 over labels [7, 9, 9]: majority 9 beats the nearest 7
    assert knn_predict(query, ref, torch.tensor([7, 9, 9, 7]), k=3).tolist() == [9]
    # k=4 over labels [7, 9, 9, 7]: 2-2 tie goes to the class of the nearest neighbour (7)
    assert knn_predict(query, ref, torch.tensor([7, 9, 9, 7]), k=4).tolist() == [7]
    assert knn_predict(query, ref, torch.tensor([9, 7, 7, 9]), k=4).tolist() == [9]
    assert knn_accuracy(query, [7], ref, torch.tensor([7, 9, 9, 7]), k=1) == 1.0


# ------------------------------------------------------------------ spectra

def test_spectrum_shapes_and_variance_curve():
    feats = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    spec = spectrum(feats)
    sv, var = spec["singular_values"], spec["explained_cumulative_variance"]
    assert sv.shape == var.shape == (8,)
    assert sv[0].item() == pytest.approx(1.0)
    assert (sv[:-1] >= sv[1:]).all() and sv[-1] >= 0
    assert (var[1:] >= var[:-1]).all()
    assert abs(var[-1].item() - 1.0) < 1e-6
    # the curve is the cumulative share of squared singular values of the centred matrix
    s = torch.linalg.svdvals((feats - feats.mean(0)).double())
    torch.testing.assert_close(var, (s ** 2).cumsum(0) / (s ** 2).sum())
    torch.testing.assert_close(sv, s / s[0])


def test_spectrum_rank_two():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(100, 2, generator=g) @ torch.randn(2, 10, generator=g) + 3.0
    spec = spectrum(feats)                               # constant offset removed by centring
    sv, var = spec["singular_values"], spec["explained_cumulative_variance"]
    assert sv.shape == (10,)
    assert var[1].item() == pytest.approx(1.0, abs=1e-6)
    assert var[0].item() < 0.999
    assert sv[1].item() > 1e-3
    assert sv[2:].abs().max().item() < 1e-5


def test_spectrum_constant_features():
    spec = spectrum(torch.ones(5, 3))
    assert spec["singular_values"].tolist() == [0.0, 0.0, 0.0]
    assert spec["explained_cumulative_variance"][-1].item() == 1.0


# ------------------------------------------------------------------ plots

def test_plot_spectra_writes_png(tmp_path):
    g = torch.Generator().manual_seed(0)
    low_rank = torch.randn(60, 3, generator=g) @ torch.randn(3, 20, generator=g)
    path = plot_spectra({"CE": torch.randn(60, 20, generator=g), "SCL": low_rank},
                        str(tmp_path / "sub" / "spectra.png"))
    w, h = assert_png(path, min_w=500, min_h=200)
    assert w > h                                         # two panels side by side


def test_retrieval_grid_writes_png_from_tensors_and_datasets(tmp_path):
    g = torch.Generator().manual_seed(0)
    queries = torch.rand(4, 3, 8, 8, generator=g)
    refs = torch.rand(10, 3, 8, 8, generator=g)
    _, idx = nearest_neighbours(queries.flatten(1), refs.flatten(1), k=3)
    path = retrieval_grid(queries, refs, idx, str(tmp_path / "grid.png"), n_queries=4, k=3,
                          query_labels=[0, 1, 0, 1], ref_labels=[i % 2 for i in range(10)])
    w, h = assert_png(path)
    assert h > w                                         # 4 rows x 4 columns, rows taller

    # grayscale (image, label) datasets with feature rows mapped back to dataset positions
    data = TinyImages()
    path2 = retrieval_grid(data, data, torch.tensor([[0, 1], [2, 3]]), str(tmp_path / "g2.png"),
                           n_queries=8, k=5, query_ids=[5, 6], ref_ids=[0, 3, 9, 11])
    assert_png(path2)
