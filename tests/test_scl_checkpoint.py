"""The SCL authors' own checkpoints (yassouali/SCL, issue 24 item 3).

Their training scripts save ``{'opt': Namespace, 'model': ContrastResNet.state_dict(),
'attention': AttentionSimilarity.state_dict() or None}``: the ResNet-12 under ``encoder.``, the
projection head under ``head.net.``, optionally ``module.``-prefixed. Such a file loads into our
``resnet12`` / SCL (features, logits, projections and attention projections equal a forward written
here on the file's tensors), evaluates with ``scl-eval --weights FILE --format rfs``, and is a
distillation teacher whose sha256 the child run records (a changed file is refused).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scl_plugin import pipeline
from scl_plugin.backbones import resnet12
from scl_plugin.backbones.rfs import RFSCheckpointError, load_rfs_weights, read_released, rfs_to_ours
from scl_plugin.cli import eval_main, train_main
from scl_plugin.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
N_CLS, FEAT_DIM = 40, 48          # synthetic has 40 training classes; d' != our default 80
OVER = ["data.dataset=synthetic", "data.image_size=32", "data.ways=3", "data.shots=1", "data.queries=2",
        "data.test_episodes=3", "data.val_episodes=2", "data.num_workers=0", "model.name=resnet12",
        "eval.classifier=proto_cosine"]


# ----------------------------------------------------------------------------- their module layout
# Names and shapes of models/resnet.py (ResNet + BasicBlock, resnet12 = one block per stage,
# 64-160-320-640), models/contrast.py (ContrastResNet, Projection) and models/attention.py
# (AttentionSimilarity, projector). Only the state_dict matters: the forward is _their_forward.
class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.LeakyReLU(0.1)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.maxpool = nn.MaxPool2d(2)
        self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes))


class ResNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        cin = 3
        for i, planes in enumerate((64, 160, 320, 640), 1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, planes)))
            cin = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.0)
        self.classifier = nn.Linear(640, num_classes)


class Projection(nn.Module):
    def __init__(self, dim, projection_size, hidden_size):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_size, bias=False), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_size, projection_size, bias=False))


class ContrastResNet(nn.Module):
    def __init__(self, opt, n_cls):
        super().__init__()
        self.encoder = ResNet(n_cls)
        self.head = Projection(dim=640, projection_size=opt.feat_dim, hidden_size=640)


def projector(dim, projection_size):
    return nn.Sequential(nn.Linear(dim, dim, bias=False), nn.ReLU(inplace=True),
                         nn.Linear(dim, projection_size, bias=False))


class AttentionSimilarity(nn.Module):
    def __init__(self, hidden_size, inner_size):
        super().__init__()
        self.query, self.key, self.value = (projector(hidden_size, inner_size) for _ in range(3))
        self.dropout = nn.Dropout(0.0)


def _opt():
    return argparse.Namespace(model="resnet12", dataset="miniImageNet", feat_dim=FEAT_DIM, n_cls=N_CLS,
                              spatial_cont_loss=True, global_cont_loss=False, aggregation="mean")


def _randomised(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):     # non-trivial statistics and affine parameters
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return module


def _their_forward(sd, x):
    """ContrastResNet's forward in eval mode, written on its state dict: each stage conv-bn-lrelu,
    conv-bn-lrelu, conv-bn, + downsample(x), lrelu, maxpool(2); then the spatial map, its average,
    the classifier's logits and the head's projection."""
    def bn(h, p):
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], training=False, eps=1e-5)
    for i in range(1, 5):
        p = f"encoder.layer{i}.0"
        out = F.leaky_relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"], padding=1), f"{p}.bn1"), 0.1)
        out = F.leaky_relu(bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2"), 0.1)
        out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"], padding=1), f"{p}.bn3")
        res = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"]), f"{p}.downsample.1")
        x = F.max_pool2d(F.leaky_relu(out + res, 0.1), 2)
    pooled = x.mean((2, 3))
    logits = pooled @ sd["encoder.classifier.weight"].t() + sd["encoder.classifier.bias"]
    proj = F.relu(pooled @ sd["head.net.0.weight"].t()) @ sd["head.net.2.weight"].t()
    return x, pooled, logits, proj


def _mlp(att, name, f):
    return F.relu(f @ att[f"{name}.0.weight"].t()) @ att[f"{name}.2.weight"].t()


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Their files: plain, DataParallel (``module.``) with attention None, and with attention."""
    tmp = tmp_path_factory.mktemp("scl_ckpt")
    sd = _randomised(ContrastResNet(_opt(), N_CLS), 0).state_dict()
    att = _randomised(AttentionSimilarity(640, FEAT_DIM), 1).state_dict()
    assert {"encoder.layer1.0.conv1.weight", "encoder.layer4.0.downsample.1.running_var",
            "encoder.classifier.bias", "head.net.0.weight", "head.net.2.weight"} <= set(sd)
    assert sd["head.net.2.weight"].shape == (FEAT_DIM, 640) and att["query.2.weight"].shape == (FEAT_DIM, 640)
    files = {"plain": {"model": sd, "opt": _opt(), "epoch": 3},
             "module": {"model": {f"module.{k}": v for k, v in sd.items()}, "opt": _opt(), "attention": None,
                        "epoch": 3},
             "attention": {"opt": _opt(), "model": sd, "attention": att, "epoch": 3}}
    for name, obj in files.items():
        torch.save(obj, tmp / f"{name}.pth")
    return {"dir": tmp, "sd": sd, "att": att, **{n: tmp / f"{n}.pth" for n in files}}


@pytest.mark.parametrize("variant", ["plain", "module", "attention"])
def test_their_checkpoint_loads_into_our_resnet12_and_scl(released, variant):
    path, sd, att = released[variant], released["sd"], released["att"]
    ckpt = read_released(path)
    assert (ckpt.layout, ckpt.num_classes, ckpt.proj_dim) == ("scl", N_CLS, FEAT_DIM)
    assert isinstance(ckpt.opt, argparse.Namespace) and bool(ckpt.attention) == (variant == "attention")
    x = torch.randn(2, 3, 32, 32)
    spatial, pooled, logits, proj = _their_forward(sd, x)
    close = dict(atol=1e-5, rtol=1e-4)
    if variant == "plain":           # the bare timm resnet12 (its fc = their classifier)
        backbone = resnet12(num_classes=N_CLS, drop_rate=0.0).eval()
        load_rfs_weights(backbone, path)
        with torch.no_grad():
            assert torch.allclose(backbone.forward_head(backbone.forward_features(x)), logits, atol=1e-4)
    # as our SCL method (CE too for the file with attention: it has no attention to receive)
    for config in ("scl.yaml", "ce.yaml") if variant == "attention" else ("scl.yaml",):
        method, _ = pipeline.build_released(load_config(CONFIGS / config, OVER), path)
        method.eval()
        assert (method.attention is not None) == (config == "scl.yaml")
        with torch.no_grad():
            ours_spatial, ours_pooled = method.features(x)
            assert torch.allclose(ours_spatial, spatial, **close)
            assert torch.allclose(ours_pooled, pooled, **close)
            assert torch.allclose(method.classifier(ours_pooled), logits, atol=1e-4)
            assert torch.allclose(method.head(ours_pooled), proj, **close)          # d' from the file
            if variant == "attention" and method.attention is not None:
                f = spatial.flatten(2).transpose(1, 2)
                for name, ours in zip(("query", "key", "value"), method.attention.project(ours_spatial)):
                    assert torch.allclose(ours, _mlp(att, name, f), **close)


def test_what_does_not_map_is_named(released, tmp_path):
    sd = released["sd"]
    extra = dict(sd, **{"encoder.layer1.0.se.fc.0.weight": torch.zeros(1), "head.net.1.bias": torch.zeros(1)})
    with pytest.raises(RFSCheckpointError, match=r"^2 keys do not map onto resnet12: "
                                                 r"encoder\.layer1\.0\.se\.fc\.0\.weight, head\.net\.1\.bias$"):
        rfs_to_ours(extra)
    torch.save({"model": sd, "attention": {"query.0.weight": torch.zeros(1), "gate.weight": torch.zeros(1)}},
               tmp_path / "bad_att.pth")
    with pytest.raises(RFSCheckpointError, match=r"1 keys of its 'attention' entry do not map onto "
                                                 r"SpatialAttention.*: gate\.weight$"):
        read_released(tmp_path / "bad_att.pth")


def test_scl_eval_weights_on_their_checkpoint(released, tmp_path, capsys):
    """scl-eval's accuracy on their file is the accuracy of the hand-written forward."""
    from scl_plugin.data import build_test_tasks
    from scl_plugin.evaluation import evaluate
    over = OVER + [f"data.cache_dir={tmp_path / 'cache'}"]
    cfg = load_config(CONFIGS / "scl.yaml", over)

    class Theirs(nn.Module):
        def forward(self, x):
            return _their_forward(released["sd"], x)[1]
    want = evaluate(Theirs(), build_test_tasks(cfg.data), 3, 1, 2, classifier="proto_cosine",
                    progress=False).mean() * 100
    assert eval_main(["--weights", str(released["module"]), "--format", "rfs", str(CONFIGS / "scl.yaml")] + over) == 0
    out = capsys.readouterr().out
    assert "| scl" in out and f"{want:.2f}" in out, out


def test_their_checkpoint_as_distillation_teacher(released, tmp_path, capsys):
    teacher = tmp_path / "resnet12_last.pth"
    shutil.copy(released["attention"], teacher)
    run = tmp_path / "run"
    args = [str(CONFIGS / "scl_distill.yaml"), *OVER, f"data.cache_dir={tmp_path / 'cache'}", f"run_dir={run}",
            f"distill.teacher={teacher}", "distill.epochs=1", "train.steps_per_epoch=2", "data.batch_size=8",
            "train.validate=false"]
    assert train_main(args) == 0, capsys.readouterr().err
    assert (run / "distill-1" / "final.pt").exists() and not (run / "train").exists()   # no pretraining
    settings = json.loads((run / "settings.json").read_text())
    assert settings["inputs"]["distill.teacher"] == hashlib.sha256(teacher.read_bytes()).hexdigest()
    assert settings["settings"]["distill.teacher"] == str(teacher.resolve())
    metrics = [json.loads(line) for line in (run / "distill-1" / "metrics.jsonl").read_text().splitlines()]
    assert any("kd" in m for m in metrics), metrics
    # the finished run is rebuilt (teacher from the file, then the student) and evaluates
    assert eval_main([str(run), "data.test_episodes=2"]) == 0
    assert "| scl" in capsys.readouterr().out
    # the teacher file changes: the child run is refused in one line
    with torch.serialization.safe_globals([argparse.Namespace]):
        changed = torch.load(teacher, weights_only=True, map_location="cpu")
    changed["model"]["head.net.0.weight"] += 1.0
    torch.save(changed, teacher)
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "distill.teacher" in err and "retrain" in err, err
    # a teacher file whose classes are not the data's is refused before training
    with pytest.raises(ConfigError, match=r"classifies 40 classes .* has 20"):
        pipeline.load_teacher(load_config(CONFIGS / "scl_distill.yaml", OVER + [f"distill.teacher={teacher}"]),
                              data=argparse.Namespace(num_classes=20))
