"""Backbones: registered timm models, the spatial wrapper, and MAML compatibility."""
import pytest
import torch
import timm
from torch import nn

import learn2learn as l2l
from scl_plugin.config import ModelConfig, load_config
from scl_plugin.backbones import (Backbone, create_backbone, maml_bn_policy, prepare_for_maml)

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waits when the 2 cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


VIT = ModelConfig(name="vit_tiny_patch16_224", kwargs={"patch_size": 8})


def make(name, in_chans=3, size=32, **kwargs):
    return create_backbone(ModelConfig(name=name, kwargs=kwargs), in_chans=in_chans, image_size=size)


@pytest.mark.parametrize("name,in_chans,size,dim,hw", [
    ("resnet12", 3, 84, 640, (5, 5)),
    ("resnet12", 3, 32, 640, (2, 2)),
    ("conv4", 3, 84, 64, (5, 5)),
    ("conv4", 1, 28, 64, (1, 1)),      # Omniglot size: a single location (see conv4.py)
    ("resnet18", 3, 32, 512, (1, 1)),
    ("l2l:OmniglotCNN", 1, 28, 64, (2, 2)),
    ("l2l:CNN4", 3, 84, 64, (5, 5)),
])
def test_spatial_shapes(name, in_chans, size, dim, hw):
    b = make(name, in_chans, size)
    assert (b.feature_dim, b.spatial_shape) == (dim, hw)
    x = torch.randn(2, in_chans, size, size)
    assert b.forward_spatial(x).shape == (2, dim, *hw)


def test_vit_patch_tokens_on_grid():
    b = create_backbone(VIT, image_size=32)          # 32 / 8 -> 4x4 patches, class token dropped
    assert b.num_prefix_tokens == 1
    assert (b.feature_dim, b.spatial_shape) == (192, (4, 4))
    b.eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = b.model.forward_features(x)
    fmap = b.forward_spatial(x)
    assert fmap.shape == (2, 192, 4, 4)
    # patch token k sits at row k // 4, column k % 4
    assert torch.equal(fmap[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])


def test_timm_interface_of_registered_models():
    for name in ("resnet12", "conv4"):
        m = timm.create_model(name, num_classes=5, in_chans=1)
        x = torch.randn(2, 1, 32, 32)
        feats = m.forward_features(x)
        assert feats.ndim == 4 and feats.shape[1] == m.num_features
        assert m.forward_head(feats, pre_logits=True).shape == (2, m.num_features)
        assert m(x).shape == (2, 5)
        m.reset_classifier(7)
        assert m(x).shape == (2, 7)
        assert m.pretrained_cfg["architecture"] == name and m.default_cfg["input_size"] == (3, 84, 84)


def test_resnet12_parameter_count():
    n = sum(p.numel() for p in timm.create_model("resnet12", num_classes=0).parameters())
    assert abs(n - 12.4e6) / 12.4e6 < 0.05, n


def test_forward_is_mean_of_spatial():
    b = make("resnet12", size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(b(x), b.forward_spatial(x).mean(dim=(2, 3)))


def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet13'.*Close matches: .*resnet12"):
        make("resnet13")
    with pytest.raises(ValueError, match=r"unknown backbone 'l2l:Foo'"):
        make("l2l:Foo")
    with pytest.raises(ValueError, match=r"l2l:ResNet12 only works on 84x84"):
        make("l2l:ResNet12", size=32)


def test_swap_backbone_from_config():
    for name, dim in (("conv4", 64), ("resnet12", 640)):
        cfg = load_config(None, [f"model.name={name}"])
        assert create_backbone(cfg.model, image_size=32).feature_dim == dim


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _maml_step(backbone, in_chans, size, ways=5, first_order=False):
    """Clone, adapt one step on a 5-way support set, return (original, adapted clone, query loss)."""
    model = nn.Sequential(backbone, nn.Linear(backbone.feature_dim, ways))
    maml = l2l.algorithms.MAML(model, lr=0.1, first_order=first_order)
    x, y = torch.randn(ways, in_chans, size, size), torch.arange(ways)
    learner = maml.clone()
    learner.adapt(nn.functional.cross_entropy(learner(x), y))
    return maml, learner, nn.functional.cross_entropy(learner(x), y)


@pytest.mark.parametrize("cfg,in_chans,size", [
    (ModelConfig(name="conv4"), 1, 28),
    (ModelConfig(name="resnet12"), 3, 32),
    (ModelConfig(name="resnet18", kwargs={"zero_init_last": False}), 3, 32),  # else residual grads are 0
    (VIT, 3, 32),
    (ModelConfig(name="l2l:OmniglotCNN"), 1, 28),
    (ModelConfig(name="l2l:CNN4"), 3, 32),
    (ModelConfig(name="l2l:ResNet12"), 3, 84),
], ids=lambda v: getattr(v, "name", str(v)))
def test_maml_second_order(cfg, in_chans, size):
    torch.manual_seed(0)
    backbone = prepare_for_maml(create_backbone(cfg, in_chans, size), keep_bn_buffers=True)
    before = _state(backbone)
    maml, learner, query_loss = _maml_step(backbone, in_chans, size)
    adapted = dict(learner.named_parameters())
    changed = [not torch.equal(p, adapted[k]) for k, p in maml.named_parameters()]
    assert sum(changed) >= 0.5 * len(changed)
    query_loss.backward()                        # meta-gradient through the inner step
    assert all(p.grad is not None for p in maml.parameters())
    after = _state(backbone)                     # parameters and BN buffers, bitwise
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bn_hazard_without_policy():
    """Why the policy exists: a plain clone writes its batch statistics into the original."""
    backbone = make("conv4", 1, 28)
    before = _state(backbone)
    _maml_step(backbone, 1, 28, first_order=True)
    assert not torch.equal(before["model.blocks.0.1.running_mean"],
                           backbone.state_dict()["model.blocks.0.1.running_mean"])


def test_default_bn_policy_uses_batch_stats_everywhere():
    backbone = make("resnet12", size=32, drop_rate=0.0)
    assert maml_bn_policy(backbone) == 4 * 4     # 3 conv BNs + 1 shortcut BN per stage
    assert not any("running" in k or "num_batches" in k for k in backbone.state_dict())
    x = torch.randn(4, 3, 32, 32)
    train_out = backbone.train()(x)
    torch.testing.assert_close(backbone.eval()(x), train_out)
