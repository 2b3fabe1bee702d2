"""Tests of scl_plugin.evaluation: batched logistic regression vs scikit-learn, prototypes,
CIs, reports and episode evaluation (CPU, well under a minute)."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from scl_plugin.evaluation import (classify, evaluate, extract_features, fit_logreg,
                                   fit_predict_logreg,
                                   format_table, logreg_objective, mean_ci, paired_difference,
                                   paired_table, plot_results, predict, sklearn_logreg_fit,
                                   sklearn_logreg_predict, write_results)


def planted(E, ways, shots, queries, d, sep, seed=0):
    """Episodes of L2-normalised features: per-episode random class means + noise."""
    g = np.random.default_rng(seed)
    mu = g.normal(size=(E, ways, d)) * sep / np.sqrt(d)
    ys = np.tile(np.repeat(np.arange(ways), shots), (E, 1))
    yq = np.tile(np.repeat(np.arange(ways), queries), (E, 1))
    rows = np.arange(E)[:, None]
    Xs = mu[rows, ys] + g.normal(size=(E, ways * shots, d)) / np.sqrt(d)
    Xq = mu[rows, yq] + g.normal(size=(E, ways * queries, d)) / np.sqrt(d)
    norm = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
    return norm(Xs), ys, norm(Xq), yq


@pytest.mark.parametrize("E,ways,shots,d,C,sep", [
    (100, 5, 5, 640, 1.0, 0.18), (100, 5, 1, 640, 1.0, 0.3), (100, 5, 5, 64, 1.0, 0.4),
    (40, 5, 10, 64, 10.0, 0.35), (60, 2, 5, 64, 1.0, 0.3), (40, 3, 20, 32, 0.1, 0.25)])
def test_torch_logreg_matches_sklearn(E, ways, shots, d, C, sep):
    Xs, ys, Xq, yq = planted(E, ways, shots, 15, d, sep=sep, seed=E + d)
    W, b = fit_logreg(Xs, ys, ways, C=C)
    pt = predict(Xq, W, b).numpy()
    ps = sklearn_logreg_predict(Xs, ys, Xq, C=C)
    assert (pt == ps).mean() >= 0.98
    acc_t, acc_s = (pt == yq).mean(), (ps == yq).mean()
    assert 1.2 / ways < acc_s < 0.95   # the planted structure is neither trivial nor absent
    assert abs(acc_t - acc_s) <= 0.005
    # Same objective (C * sum CE + ||W||^2 / 2), and ours is at least as low as sklearn's.
    Ws, bs = sklearn_logreg_fit(Xs, ys, ways, C=C)
    obj_t = logreg_objective(Xs, ys, W, b, C)
    obj_s = logreg_objective(Xs, ys, Ws, bs, C)
    assert torch.all(obj_t <= obj_s + 1e-6 * (1 + obj_s.abs()))
    # Gradient of our objective at the solution vanishes (W part): C X^T (p - Y) + W = 0.
    Xt, yt = torch.as_tensor(Xs), torch.as_tensor(ys)
    p = torch.softmax(Xt @ W + b[:, None], -1)
    Y = torch.nn.functional.one_hot(yt, ways).double()
    gW = C * Xt.transpose(1, 2) @ (p - Y) + W
    if ways == 2:   # binary model: only class 1's column is free
        gW = C * (Xt.transpose(1, 2) @ (p[..., 1] - Y[..., 1]).unsqueeze(-1)).squeeze(-1) + W[..., 1]
    assert gW.abs().max() / (C * shots * ways) < 1e-5
    # The dense-Hessian Newton solver and the kernel-form fit+predict agree too.
    W2, b2 = fit_logreg(Xs, ys, ways, C=C, solver="newton")
    assert (predict(Xq, W2, b2).numpy() == pt).mean() >= 0.999
    assert (fit_predict_logreg(Xs.astype(np.float32), ys, Xq.astype(np.float32), ways, C=C)
            .numpy() == pt).mean() >= 0.995


def test_logreg_duplicate_support_points():
    # Rank-deficient support sets (repeated points) must still solve.
    Xs, ys, Xq, _ = planted(20, 5, 2, 5, 128, sep=1.0)
    Xs[:, 1::2] = Xs[:, 0::2]
    W, b = fit_logreg(Xs, ys, 5)
    assert torch.isfinite(W).all()
    ps = sklearn_logreg_predict(Xs, ys, Xq)
    assert (predict(Xq, W, b).numpy() == ps).mean() >= 0.98


def test_prototypes_separable_perfect():
    Xs, ys, Xq, yq = planted(30, 5, 5, 10, 32, sep=30.0)
    for method in ("proto_cosine", "proto_euclidean", "logreg"):
        pred = classify(method, Xs, ys, Xq, 5)
        assert pred.shape == yq.shape
        assert (pred.numpy() == yq).all(), method


def test_classify_unknown():
    with pytest.raises(ValueError, match="unknown classifier"):
        classify("svm", np.zeros((1, 2, 3)), np.zeros((1, 2)), np.zeros((1, 2, 3)), 2)


def test_mean_ci_by_hand():
    a = [0.5, 0.7, 0.6, 0.8]
    m, ci = mean_ci(a)
    sd = math.sqrt(((0.5 - .65) ** 2 + (0.7 - .65) ** 2 + (0.6 - .65) ** 2 + (0.8 - .65) ** 2) / 3)
    assert m == pytest.approx(0.65)
    assert ci == pytest.approx(1.96 * sd / 2)
    assert math.isnan(mean_ci([0.3])[1])


def test_paired_difference_by_hand():
    a, b = [0.6, 0.8, 0.7], [0.5, 0.6, 0.7]
    d, ci = paired_difference(a, b)
    diffs = [0.1, 0.2, 0.0]
    sd = math.sqrt(sum((x - 0.1) ** 2 for x in diffs) / 2)
    assert d == pytest.approx(0.1)
    assert ci == pytest.approx(1.96 * sd / math.sqrt(3))
    with pytest.raises(ValueError):
        paired_difference([1, 2], [1])
    rows = paired_table({"ref": b, "new": a}, "ref", dataset="x")
    assert rows == [{"method": "new", "reference": "ref", "episodes": 3, "diff": pytest.approx(0.1),
                     "ci95": pytest.approx(ci), "significant": abs(0.1) > ci, "dataset": "x"}]


def test_write_results(tmp_path):
    rows = [{"method": "scl", "dataset": "mini", "ways": 5, "shots": 1, "episodes": 600,
             "acc": 0.6321, "ci95": 0.008, "backbone": "resnet12"},
            {"method": "ce", "dataset": "mini", "ways": 5, "shots": 1, "episodes": 600,
             "acc": 0.6, "ci95": float("nan")}]
    paths = write_results(rows, tmp_path / "out", name="table")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"table.md", "table.csv", "table.json"}
    md = paths["md"].read_text()
    assert "| method | dataset | ways | shots | episodes | acc (%) | backbone |" in md
    assert "63.21 ± 0.80" in md and "| 60.00 |" in md
    with open(paths["csv"]) as f:
        got = list(csv.DictReader(f))
    assert got[0]["method"] == "scl" and float(got[0]["acc"]) == 0.6321
    assert float(got[0]["ci95"]) == 0.008 and got[0]["backbone"] == "resnet12"
    assert got[1]["ci95"] == "" and got[1]["backbone"] == ""
    js = json.loads(paths["json"].read_text())
    assert js[0] == rows[0] and js[1]["ci95"] is None
    assert format_table(rows) == md
    png = plot_results(rows, tmp_path / "out" / "acc.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- episodes
def tiny_episodes(n, ways=3, shots=2, queries=4, noise=0.3, seed=0):
    """Images whose class is coded by a one-hot pixel pattern; classes shuffled per episode."""
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for _ in range(n):
        labels = torch.arange(ways).repeat_interleave(shots + queries)
        perm = torch.randperm(labels.numel(), generator=g)
        labels = labels[perm]
        x = torch.randn(labels.numel(), 1, 4, 4, generator=g) * noise
        codes = torch.randperm(16, generator=g)[:ways]
        x.view(-1, 16)[torch.arange(labels.numel()), codes[labels]] += 1.0
        tasks.append((x, labels))
    return tasks


class Flatten(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)


def test_default_split_is_per_class_order():
    from scl_plugin.data import split_support_query as split_episode
    x = torch.arange(6.0).view(6, 1, 1, 1)
    y = torch.tensor([1, 0, 1, 0, 1, 0])
    xs, ys, xq, yq = split_episode(x, y, ways=2, shots=1, queries=2)
    assert xs.flatten().tolist() == [1.0, 0.0] and ys.tolist() == [0, 1]
    assert xq.flatten().tolist() == [3.0, 5.0, 2.0, 4.0] and yq.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("classifier", ["logreg", "logreg_sklearn", "proto_cosine", "proto_euclidean"])
def test_evaluate_above_chance_in_order(classifier):
    tasks = tiny_episodes(12)
    accs = evaluate(Flatten(), tasks, ways=3, shots=2, queries=4, classifier=classifier,
                    batch_episodes=5, progress=False)
    assert accs.shape == (12,) and accs.mean() > 0.8
    # Episode order: evaluating each episode alone gives the same numbers.
    single = [evaluate(Flatten(), [t], 3, 2, 4, classifier=classifier, progress=False)[0]
              for t in tasks]
    np.testing.assert_allclose(accs, single)


def test_evaluate_indices_shard():
    tasks = tiny_episodes(10, noise=1.0, seed=3)
    full = evaluate(Flatten(), tasks, 3, 2, 4, batch_episodes=4, progress=False)
    assert len(set(full.tolist())) > 1  # not all equal, so order matters
    idx = [7, 2, 5]
    np.testing.assert_allclose(evaluate(Flatten(), tasks, 3, 2, 4, indices=idx, progress=False),
                               full[idx])
    # Same through a plain iterable (no __getitem__), and with shards gathered back.
    got = evaluate(Flatten(), iter(tasks), 3, 2, 4, indices=idx, progress=False)
    np.testing.assert_allclose(got, full[idx])
    shards = [evaluate(Flatten(), tasks, 3, 2, 4, indices=range(r, 10, 3), progress=False)
              for r in range(3)]
    gathered = np.empty(10)
    for r in range(3):
        gathered[r::3] = shards[r]
    np.testing.assert_allclose(gathered, full)


def test_evaluate_native():
    tasks = tiny_episodes(6)

    def adapt(xs, ys):   # nearest-prototype "learner" on raw pixels
        protos = torch.stack([xs[ys == c].flatten(1).mean(0) for c in range(3)])
        return lambda xq: -torch.cdist(xq.flatten(1), protos)

    accs = evaluate(adapt, tasks, 3, 2, 4, classifier="native", progress=False)
    ref = evaluate(Flatten(), tasks, 3, 2, 4, classifier="proto_euclidean", progress=False)
    assert accs.shape == (6,) and accs.mean() > 0.8
    # Same rule as proto_euclidean, which differs only by L2-normalising the features.
    assert abs(accs.mean() - ref.mean()) < 0.2


class LeftHalf(torch.nn.Module):
    """Features that are not flip invariant: the left half of the image, and a BN layer so
    train/eval mode matters."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(8)

    def forward(self, x):
        return self.bn(x[..., : x.shape[-1] // 2].flatten(1))


def test_extract_features_flip_mode_and_norm():
    torch.manual_seed(0)
    model = LeftHalf()
    model.train()
    x = torch.randn(10, 1, 4, 4)
    f = extract_features(model, x, normalize=False, batch_size=3)
    assert model.training                                   # mode restored
    with torch.no_grad():
        model.eval()
        plain = model(x)
        flipped = model(torch.flip(x, dims=[-1]))
        model.train()
    torch.testing.assert_close(f, plain)
    ff = extract_features(model, x, flip=True, normalize=False)
    torch.testing.assert_close(ff, (plain + flipped) / 2)
    fn = extract_features(model, x, flip=True)
    torch.testing.assert_close(fn.norm(dim=1), torch.ones(10))
    torch.testing.assert_close(fn, torch.nn.functional.normalize(ff, dim=1))
    assert not f.requires_grad


def test_features_in_channels_last_equal_the_default_layout_and_leave_the_model_as_it_was():
    """Evaluation runs CPU forwards in channels-last (faster); the features must equal the
    default layout's to round-off, and the model's layout and train mode must be restored."""
    from scl_plugin.backbones import create_backbone
    from scl_plugin.evaluation.protocol import scl_features
    torch.manual_seed(0)
    net = create_backbone("conv4", in_chans=1, depth=3).train()
    x = torch.randn(40, 1, 28, 28)
    with torch.no_grad():
        fmap = net.eval().forward_spatial(x)       # plain NCHW reference
    net.train()
    ref_g = torch.nn.functional.normalize(fmap.mean(dim=(2, 3)), dim=1)
    ref_s = torch.nn.functional.normalize(torch.nn.functional.adaptive_max_pool2d(fmap, 2).flatten(1), dim=1)
    g, s = scl_features(net, x)
    assert torch.allclose(g, ref_g, atol=1e-5) and torch.allclose(s, ref_s, atol=1e-5)
    pooled = extract_features(net, x)
    assert torch.allclose(pooled, ref_g, atol=1e-5)
    assert net.training
    assert all(p.is_contiguous() for p in net.parameters())
