"""Linear CKA / feature reuse and alignment / uniformity (issue 19) against known answers."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from scl_plugin import analysis
from scl_plugin.algorithms import MAMLMethod
from scl_plugin.backbones import create_backbone
from scl_plugin.config import ModelConfig, load_config
from scl_plugin.data import build_fewshot


def feature_cka(x, y):   # the feature-space formula, as written in Kornblith et al. 2019
    x, y = x - x.mean(0), y - y.mean(0)
    return ((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm())).item()


def test_linear_cka_known_answers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=g, dtype=torch.float64)
    y = torch.randn(30, 5, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert analysis.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert analysis.linear_cka(x, 3.7 * x @ q + 2.0) == pytest.approx(1.0, abs=1e-12)   # rotation, scale, shift
    assert analysis.linear_cka(x, y) == pytest.approx(feature_cka(x, y), abs=1e-12)
    assert 0 < analysis.linear_cka(x, y) < 0.5
    assert analysis.linear_cka(x.view(30, 2, 2, 2), x) == pytest.approx(1.0)        # maps are flattened
    assert math.isnan(analysis.linear_cka(torch.ones(5, 3), x[:5]))


def test_feature_reuse_on_maml():
    cfg = load_config(None, ["data.dataset=synthetic", "data.image_size=16", "data.test_episodes=3", "data.queries=4"])
    tasks = build_fewshot(cfg.data).test_tasks
    torch.manual_seed(0)
    backbone = create_backbone(ModelConfig(name="conv4", kwargs={"depth": 2, "hidden": 8}), in_chans=3, image_size=16)
    assert analysis.stage_names(backbone) == ["model.blocks.0", "model.blocks.1"]
    maml = MAMLMethod(backbone, ways=5, shots=1, queries=4, inner_lr=0.0, eval_inner_steps=2)
    same = analysis.feature_reuse(maml, tasks, 5, 1, 4, episodes=2)
    assert list(same) == ["model.blocks.0", "model.blocks.1", "head"]
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in same.values())          # lr 0: nothing moves
    maml = MAMLMethod(backbone, ways=5, shots=1, queries=4, inner_lr=5.0, eval_inner_steps=3)
    moved = analysis.feature_reuse(maml, tasks, 5, 1, 4, episodes=2)
    assert all(0 <= v <= 1 + 1e-9 for v in moved.values())
    assert moved["head"] < 0.99 and moved["model.blocks.0"] < 1 - 1e-6      # every layer adapts in MAML
    assert maml.eval_inner_steps == 3
    with pytest.raises(TypeError, match="adaptable"):
        analysis.feature_reuse(backbone, tasks, 5, 1, 4)


def test_alignment_uniformity_match_naive_loops():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 3])
    u = F.normalize(z, dim=1)
    pos = [(i, j) for i, j in itertools.combinations(range(9), 2) if y[i] == y[j]]
    align = sum(((u[i] - u[j]) ** 2).sum().item() for i, j in pos) / len(pos)
    unif = math.log(sum(math.exp(-2 * ((u[i] - u[j]) ** 2).sum().item())
                        for i, j in itertools.combinations(range(9), 2)) / 36)
    assert analysis.class_alignment(z, y) == pytest.approx(align, abs=1e-12)
    assert analysis.uniformity(z) == pytest.approx(unif, abs=1e-12)
    assert analysis.alignment(z[:3], 5 * z[:3]) == pytest.approx(0.0, abs=1e-12)
    # two antipodal points: distance^2 = 4, uniformity = -8; collapsed points: 0
    assert analysis.uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)
    assert analysis.uniformity(torch.ones(4, 3)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="share a label"):
        analysis.class_alignment(z[:3], torch.tensor([0, 1, 2]))


def test_analysis_plots(tmp_path):
    p1 = analysis.plot_feature_reuse({"maml": {"a.0": 0.9, "a.1": 0.8, "head": 0.3}}, str(tmp_path / "f.png"))
    p2 = analysis.plot_alignment_uniformity({"ce": (0.8, -2.0), "scl": (0.6, -2.5)}, str(tmp_path / "a.png"))
    for p in (p1, p2):
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
