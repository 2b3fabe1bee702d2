"""The SCL authors' evaluation protocol (scl_plugin/evaluation/protocol.py): batched probes vs
scikit-learn, features, support augmentation, combination, Student-t CI, config and scl-eval."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scl_plugin.evaluation import (SupportAugment, combine_probabilities, evaluate, mean_ci,
                                   scl_features, scl_predict, scl_probabilities)


def planted_pair(E, ways, support, queries, d, seps, seed):
    """Global (d) and spatial (4d) L2-normalised features sharing the episode's labels: each
    feature set has its own random class means (norm ~sep) plus unit noise."""
    g = np.random.default_rng(seed)
    ys = np.tile(np.repeat(np.arange(ways), support), (E, 1))
    yq = np.tile(np.repeat(np.arange(ways), queries), (E, 1))
    rows = np.arange(E)[:, None]
    out = []
    for dim, sep in zip((d, 4 * d), seps):
        mu = g.normal(size=(E, ways, dim)) * sep / np.sqrt(dim)
        xs = mu[rows, ys] + g.normal(size=(E, ys.shape[1], dim)) / np.sqrt(dim)
        xq = mu[rows, yq] + g.normal(size=(E, yq.shape[1], dim)) / np.sqrt(dim)
        norm = lambda a: torch.from_numpy(a / np.linalg.norm(a, axis=-1, keepdims=True))  # noqa: E731
        out += [norm(xs), norm(xq)]
    Gs, Gq, Ss, Sq = out
    return Gs, Ss, torch.from_numpy(ys), Gq, Sq, torch.from_numpy(yq)


def test_batched_protocol_matches_sklearn_with_margin():
    # 5-way, 1 shot x 5 augmented copies = 5 support rows per class, as the protocol produces.
    Gs, Ss, ys, Gq, Sq, yq = planted_pair(40, 5, 5, 15, 64, seps=(0.45, 0.3), seed=1)
    pg_t, ps_t = scl_probabilities(Gs, Ss, ys, Gq, Sq, 5, classifier="logreg")
    pg_s, ps_s = scl_probabilities(Gs, Ss, ys, Gq, Sq, 5, classifier="logreg_sklearn")
    # Same probabilities up to scikit-learn's tolerance, hence the same labels wherever the
    # decision has a real margin; these features have one nearly everywhere.
    assert (pg_t - pg_s).abs().max() < 2e-3 and (ps_t - ps_s).abs().max() < 2e-3
    for combine in ("sum", "max"):
        for name, (pt, ps) in {"global": (pg_t, pg_s), "spatial": (ps_t, ps_s),
                               "combined": (combine_probabilities(pg_t, ps_t, combine),
                                            combine_probabilities(pg_s, ps_s, combine))}.items():
            top2 = ps.topk(2, dim=-1).values
            clear = (top2[..., 0] - top2[..., 1]) > 1e-2
            assert clear.double().mean() > 0.85, name
            assert (pt.argmax(-1) == ps.argmax(-1)).double().mean() >= 0.999, (name, combine)
            assert torch.equal(pt.argmax(-1)[clear], ps.argmax(-1)[clear]), (name, combine)
            acc = (ps.argmax(-1) == yq).double().mean().item()
            assert 0.6 < acc < 0.97, (name, acc)          # a real but imperfect structure
    pred = scl_predict(Gs, Ss, ys, Gq, Sq, 5, combine="sum")
    assert torch.equal(pred, (pg_t + ps_t).argmax(-1))
    # The two probes together beat either alone here (they see independent evidence).
    acc = lambda p: (p.argmax(-1) == yq).double().mean().item()  # noqa: E731
    assert acc(pg_t + ps_t) > max(acc(pg_t), acc(ps_t))


def test_combine_by_hand():
    p_g = torch.tensor([[[0.5, 0.5, 0.0]]], dtype=torch.float64)
    p_s = torch.tensor([[[0.45, 0.0, 0.55]]], dtype=torch.float64)
    assert combine_probabilities(p_g, p_s, "sum").argmax(-1).item() == 0     # 0.95, 0.5, 0.55
    assert combine_probabilities(p_g, p_s, "max").argmax(-1).item() == 2     # 0.5, 0.5, 0.55
    with pytest.raises(ValueError):
        combine_probabilities(p_g, p_s, "mean")


class FixedMap(torch.nn.Module):
    """forward_spatial = a fixed linear map of the image to (B, 3, 3, 3); BN so modes matter."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(3)

    def forward_spatial(self, x):
        return self.bn(self.conv(x))

    def forward(self, x):
        return self.forward_spatial(x).mean(dim=(2, 3))


def test_scl_features_by_hand():
    torch.manual_seed(0)
    model = FixedMap().train()
    x = torch.randn(7, 1, 3, 3)
    g, s = scl_features(model, x, batch_size=3)
    assert model.training and g.shape == (7, 3) and s.shape == (7, 12)
    with torch.no_grad():
        model.eval()
        fmap = model.forward_spatial(x)
    ref_g = F.normalize(fmap.mean(dim=(2, 3)), dim=1)
    # AdaptiveMaxPool2d(2) on 3x3: windows rows/cols {0,1} and {1,2}; flattened (c, i, j).
    ref_s = torch.stack([torch.stack([fmap[n, c, i:i + 2, j:j + 2].max() for c in range(3)
                                      for i in range(2) for j in range(2)]) for n in range(7)])
    torch.testing.assert_close(g, ref_g)
    torch.testing.assert_close(s, F.normalize(ref_s, dim=1))


def test_support_augment_every_copy_seeded_and_normalisation():
    mean, std = (0.2,), (0.5,)
    xs = (torch.rand(4, 1, 8, 8) - 0.2) / 0.5
    ys = torch.tensor([0, 1, 2, 3])
    # identity transform: copies are exact (un-normalise / re-normalise round trip)
    ident = SupportAugment(lambda im: im, mean, std, copies=3)
    x3, y3 = ident(xs, ys, episode=0)
    assert x3.shape == (12, 1, 8, 8) and y3.tolist() == [0, 1, 2, 3] * 3
    torch.testing.assert_close(x3, xs.repeat(3, 1, 1, 1))
    # the transform sees [0, 1] images; every copy is augmented (also with one copy)
    seen = []
    aug = SupportAugment(lambda im: seen.append(im.clone()) or im + torch.rand(()), mean, std, copies=1)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a1, _ = aug(xs, ys, episode=5)
    assert torch.equal(torch.rand(3), before)                          # caller's RNG untouched
    torch.testing.assert_close(seen[0], xs[0] * 0.5 + 0.2)
    assert not torch.isclose(a1, xs).all(dim=(1, 2, 3)).any()
    a2, _ = aug(xs, ys, episode=5)
    a3, _ = aug(xs, ys, episode=6)
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)             # a function of the episode
    std_aug = SupportAugment.standard("gray", 8, mean, std, copies=2)
    xa, _ = std_aug(xs, ys, episode=0)
    assert not torch.allclose(xa[:4], xa[4:])                          # copies differ


def tiny_episodes(n, ways=3, shots=2, queries=4, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for _ in range(n):
        labels = torch.arange(ways).repeat_interleave(shots + queries)
        x = torch.randn(labels.numel(), 1, 4, 4, generator=g) * noise
        codes = torch.randperm(16, generator=g)[:ways]
        x.view(-1, 16)[torch.arange(labels.numel()), codes[labels]] += 1.0
        tasks.append((x, labels))
    return tasks


class Identity(torch.nn.Module):
    """Pixels as channels of a 1x1 map (so both probes see the whole class code)."""

    def forward_spatial(self, x):
        return x.flatten(1)[:, :, None, None]

    def forward(self, x):
        return x.flatten(1)


def test_evaluate_scl_protocol_sharded_and_above_chance():
    tasks = tiny_episodes(8)
    aug = SupportAugment(lambda im: im + 0.05 * torch.randn_like(im), (0.0,), (1.0,), copies=3)
    kw = dict(classifier="logreg", protocol="scl", support_augment=aug, progress=False)
    full = evaluate(Identity(), tasks, 3, 2, 4, batch_episodes=3, **kw)
    assert full.shape == (8,) and full.mean() > 0.8
    idx = [6, 1, 4]
    np.testing.assert_allclose(evaluate(Identity(), tasks, 3, 2, 4, indices=idx, **kw), full[idx])
    ref = evaluate(Identity(), tasks, 3, 2, 4, **dict(kw, classifier="logreg_sklearn"))
    assert abs(ref.mean() - full.mean()) < 0.05
    with pytest.raises(ValueError, match="logreg"):
        evaluate(Identity(), tasks, 3, 2, 4, classifier="proto_cosine", protocol="scl", progress=False)


def test_mean_ci_student_t_by_hand():
    a = [0.5, 0.7, 0.6, 0.9]                 # mean 0.675, sample std 0.17078
    m, h = mean_ci(a, ci="t")
    assert m == pytest.approx(0.675)
    assert h == pytest.approx(3.182446305 * 0.170782513 / 2, rel=1e-6)   # t_{0.975, 3}
    assert mean_ci(a)[1] == pytest.approx(1.96 * 0.170782513 / 2, rel=1e-6)
    with pytest.raises(ValueError):
        mean_ci(a, ci="z")


def test_protocol_config_keys():
    from scl_plugin.config import ConfigError, load_config
    from scl_plugin.pipeline import protocol_for
    cfg = load_config(None, ["eval.protocol=scl", "eval.support_augment=5", "eval.ci=t", "method=ce"])
    assert protocol_for(cfg) == "scl"
    assert protocol_for(load_config(None, ["eval.protocol=scl", "method=protonet"])) == "pooled"
    for bad, key in ((["eval.protocol=rfs"], "eval.protocol"), (["eval.combine=mean"], "eval.combine"),
                     (["eval.support_augment=3"], "eval.support_augment"),
                     (["eval.protocol=scl", "eval.flip=true"], "eval.flip")):
        with pytest.raises(ConfigError, match=key):
            load_config(None, bad)


def test_scl_eval_cli_protocol(tmp_path, capsys):
    from scl_plugin.cli import eval_main, train_main
    run = tmp_path / "run"
    common = ["data.dataset=synthetic", "data.image_size=16", "data.augment=none", "data.batch_size=32",
              f"data.cache_dir={tmp_path / 'cache'}", "model.name=conv4", "model.kwargs.depth=2",
              "model.kwargs.hidden=16", "train.epochs=2", "train.lr_decay_epochs=[1]", "train.validate=false",
              f"run_dir={run}"]
    assert train_main(["configs/ce.yaml", *common]) == 0
    capsys.readouterr()
    assert eval_main([str(run), "data.test_episodes=10", "eval.protocol=scl", "eval.support_augment=2",
                      "eval.ci=t"]) == 0
    out = capsys.readouterr().out
    row = [ln for ln in out.splitlines() if ln.startswith("| ce")][0]
    assert "scl" in row and float(row.split("|")[6].split("±")[0]) > 40.0    # 5-way chance is 20
    assert eval_main([str(run), "eval.protocol=bogus"]) == 2
