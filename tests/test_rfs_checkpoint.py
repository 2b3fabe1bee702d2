"""RFS / SCL ResNet-12 checkpoints: key mapping against a hand-written RFS forward pass, safe
loading, one-line errors, and ``scl-eval --weights FILE --format rfs CONFIG`` end to end."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scl_plugin.backbones import create_backbone, resnet12
from scl_plugin.backbones.resnet12 import SCHEDULE_BUFFER
from scl_plugin.backbones.rfs import (RFSCheckpointError, export_rfs, load_rfs_weights, ours_to_rfs,
                                      read_rfs_checkpoint, rfs_to_ours)
from scl_plugin.cli import eval_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _random_resnet12(seed=0, num_classes=5):
    torch.manual_seed(seed)
    m = resnet12(num_classes=num_classes, drop_rate=0.0)
    with torch.no_grad():                      # non-trivial BN statistics and affine parameters
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    return m.eval()


def _rfs_forward(sd, x):
    """RFS's ResNet-12 forward (models/resnet.py, eval mode) written from its description on an
    RFS-layout state dict: conv-bn-lrelu, conv-bn-lrelu, conv-bn, + downsample(x), lrelu, maxpool."""
    def bn(h, p):
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], training=False, eps=1e-5)
    for i in range(1, 5):
        p = f"layer{i}.0"
        out = F.leaky_relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"], padding=1), f"{p}.bn1"), 0.1)
        out = F.leaky_relu(bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2"), 0.1)
        out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"], padding=1), f"{p}.bn3")
        res = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"]), f"{p}.downsample.1")
        x = F.max_pool2d(F.leaky_relu(out + res, 0.1), 2)
    return x.mean((2, 3))


def test_rfs_layout_round_trip_and_matches_rfs_forward(tmp_path):
    ours = _random_resnet12()
    rfs_sd = ours_to_rfs(ours.state_dict())
    # every key has an RFS name except our DropBlock counters (resnet12's train_forwards buffers)
    weights = [k for k in ours.state_dict() if not k.endswith(f".{SCHEDULE_BUFFER}")]
    assert "layer3.0.bn2.running_var" in rfs_sd and "layer1.0.downsample.1.weight" in rfs_sd
    assert "classifier.weight" in rfs_sd and len(rfs_sd) == len(weights)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = ours.forward_head(ours.forward_features(x), pre_logits=True)
        assert torch.allclose(_rfs_forward(rfs_sd, x), want, atol=1e-5)    # the mapping is right
        # file round trip, as RFS / SCL write it: DataParallel prefix + argparse options
        path = tmp_path / "resnet12_last.pth"
        torch.save({"model": {f"module.{k}": v for k, v in rfs_sd.items()},
                    "opt": argparse.Namespace(model="resnet12", n_cls=5, lr=0.05), "epoch": 90}, path)
        back = _random_resnet12(seed=1)
        load_rfs_weights(back, path)
        assert torch.equal(back.forward_features(x), ours.forward_features(x))
        # export writes the same layout
        export_rfs(ours, tmp_path / "exported.pth", epoch=1)
        assert set(read_rfs_checkpoint(tmp_path / "exported.pth")) == set(rfs_sd)
        assert list(rfs_to_ours(rfs_sd)) == weights


class _Evil:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_rfs_checkpoint_errors_are_one_line(tmp_path):
    ours = _random_resnet12()
    rfs_sd = ours_to_rfs(ours.state_dict())
    torch.save({"model": rfs_sd, "opt": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(RFSCheckpointError, match=r"cannot be loaded safely .*only tensors") as e:
        read_rfs_checkpoint(tmp_path / "evil.pth")
    assert "\n" not in str(e.value)
    extra = dict(rfs_sd, **{"head.proj.weight": torch.zeros(2), "layer5.0.conv1.weight": torch.zeros(1)})
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with pytest.raises(RFSCheckpointError, match=r"^2 keys do not map onto resnet12: head\.proj\.weight, "
                                                 r"layer5\.0\.conv1\.weight$"):
        load_rfs_weights(resnet12(num_classes=5), tmp_path / "extra.pth")
    narrow = {k: v for k, v in rfs_sd.items() if not k.startswith("layer4.0.bn3")}
    torch.save({"model": narrow}, tmp_path / "narrow.pth")
    with pytest.raises(RFSCheckpointError, match=r"does not fit resnet12: missing stages\.3\.convs\.2\.1\.bias"):
        load_rfs_weights(resnet12(num_classes=5), tmp_path / "narrow.pth")


def test_scl_eval_weights_rfs_end_to_end(tmp_path, capsys, monkeypatch):
    """An exported checkpoint evaluated by scl-eval gives the accuracy of the model it came from."""
    from scl_plugin import pipeline
    from scl_plugin.config import load_config
    from scl_plugin.data import build_fewshot
    over = ["data.dataset=synthetic", "data.image_size=16", "data.ways=3", "data.shots=1",
            "data.queries=2", "data.test_episodes=4", "data.val_episodes=2", "model.name=resnet12",
            f"data.cache_dir={tmp_path / 'cache'}", "eval.classifier=proto_cosine"]
    cfg = load_config(CONFIGS / "ce.yaml", over)
    data = build_fewshot(cfg.data, seed=cfg.seed)
    method = pipeline.build_method(cfg, data)
    with torch.no_grad():
        for mod in method.backbone.model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_var.uniform_(0.5, 2.0)
    export_rfs(method.backbone.model, tmp_path / "ckpt.pth", opt=argparse.Namespace(dataset="x"))
    want = pipeline.evaluate(method, cfg, data.test_tasks, 3, 1, 2, progress=False).mean() * 100
    import scl_plugin.data.fewshot as fewshot

    def no_training_split(*a, **k):
        raise AssertionError("scl-eval --weights built the training split")
    monkeypatch.setattr(fewshot, "build_fewshot", no_training_split)
    monkeypatch.setattr(pipeline, "build_fewshot", no_training_split)
    import scl_plugin.data
    monkeypatch.setattr(scl_plugin.data, "build_fewshot", no_training_split)
    assert eval_main(["--weights", str(tmp_path / "ckpt.pth"), "--format", "rfs",
                      str(CONFIGS / "ce.yaml")] + over) == 0
    out = capsys.readouterr().out
    assert f"{want:.2f}" in out
    assert eval_main(["--weights", str(tmp_path / "nope.pth"), str(CONFIGS / "ce.yaml")] + over) == 2
    assert "error: checkpoint not found" in capsys.readouterr().err
