"""SCL / distillation / ProtoNet / MAML as learn2learn-style algorithms (issue 5, 7)."""
import dataclasses

import pytest
import torch

from scl_plugin import pipeline
from scl_plugin.algorithms import SCL, Distiller, MAMLMethod, prototype_logits
from scl_plugin.backbones import create_backbone
from scl_plugin.config import DistillConfig, ModelConfig, SCLLossConfig, load_config
from scl_plugin.data import build_fewshot, split_support_query
from scl_plugin.training import FlatBatches, Trainer

TINY = ["data.dataset=synthetic", "data.image_size=16", "data.augment=none", "data.batch_size=32",
        "model.name=conv4", "model.kwargs.depth=2", "model.kwargs.hidden=16", "data.test_episodes=30",
        "data.queries=5"]


@pytest.fixture(scope="module")
def data():
    return build_fewshot(load_config(None, TINY).data)


def small_backbone():
    return create_backbone(ModelConfig(name="conv4", kwargs={"depth": 2, "hidden": 16}), in_chans=3, image_size=16)


def epoch_losses(tmp_path):
    return [__import__("json").loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()
            if '"epoch"' in l and '"kind": "epoch"' in l]


def test_scl_pretraining_lowers_every_loss_and_probe_beats_chance(tmp_path, data):
    torch.manual_seed(0)
    cfg = load_config(None, TINY + ["method=scl", "loss.lambda_global=1", "loss.lambda_spatial=1",
                                    "train.epochs=4", "train.lr_decay_epochs=[3]", "train.steps_per_epoch=20",
                                    f"run_dir={tmp_path}"])
    before = pipeline.build_method(cfg, data)
    acc_before = pipeline.evaluate(before, cfg, data.test_tasks, 5, 1, 5, progress=False).mean()
    torch.manual_seed(0)
    method = pipeline.train(cfg, data=data)
    logs = epoch_losses(tmp_path / "train")
    for key in ("ce", "gc", "sc"):
        assert logs[-1][key] < 0.7 * logs[0][key], (key, logs[0][key], logs[-1][key])
    accs = pipeline.evaluate(method, cfg, data.test_tasks, 5, 1, 5, progress=False)
    assert accs.mean() > 0.6            # chance: 0.2
    assert accs.mean() >= acc_before - 0.05


def test_adapt_learner_matches_batched_evaluation(data):
    torch.manual_seed(0)
    method = SCL(small_backbone(), data.num_classes, SCLLossConfig())
    x, y = data.test_tasks[0]
    xs, ys, xq, yq = split_support_query(x, y, 5, 1, 5)
    for clf in ("logreg", "proto_cosine"):
        logits = method.adapt(xs, ys, classifier=clf)(xq)
        assert logits.shape == (xq.shape[0], 5)
        acc = (logits.argmax(-1) == yq).float().mean().item()
        cfg = load_config(None, TINY + [f"eval.classifier={clf}"])
        batched = pipeline.evaluate(method, cfg, [data.test_tasks[0]], 5, 1, 5, progress=False)[0]
        assert acc == pytest.approx(batched, abs=1e-6)


def test_distillation_moves_student_to_teacher(tmp_path, data):
    torch.manual_seed(0)
    teacher = SCL(small_backbone(), data.num_classes, SCLLossConfig(lambda_global=1.0))
    distiller = Distiller.from_teacher(teacher, DistillConfig(lambda_kd=1.0, lambda_cd=10.0),
                                       new_backbone=small_backbone)
    batch = next(iter(torch.utils.data.DataLoader(data.pretrain_set(two_view=True), batch_size=32, shuffle=True)))
    _, m0 = distiller.loss(batch)
    t_before = [p.clone() for p in teacher.parameters()]
    cfg = load_config(None, ["train.epochs=3", "train.lr=0.05", "train.schedule=constant"]).train
    batches = FlatBatches(data.pretrain_set(two_view=True), 32, seed=0)
    Trainer(distiller, cfg, tmp_path, epochs=3, parameters=distiller.student.parameters()).fit(
        batches, batches.steps_per_epoch)
    distiller.train()
    _, m1 = distiller.loss(batch)
    assert m1["cd"] < 0.5 * m0["cd"] and m1["kd"] < 0.5 * m0["kd"], (m0, m1)
    assert all(torch.equal(a, b) for a, b in zip(t_before, teacher.parameters()))   # teacher frozen


def test_prototype_logits_by_hand():
    s = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    ys = torch.tensor([0, 0, 1])
    q = torch.tensor([[1.0, 1.0]])
    # prototypes: (1, 0) and (0, 4); squared distances 1 and 1 + 9 = 10
    assert torch.allclose(prototype_logits(s, ys, q, 2), torch.tensor([[-1.0, -10.0]]))


def test_maml_adapts_clone_only_and_evaluates_other_ways(data):
    torch.manual_seed(0)
    method = MAMLMethod(small_backbone(), ways=5, shots=1, queries=5, inner_lr=0.5, eval_inner_steps=2)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    cfg = load_config(None, TINY + ["data.ways=10"])
    tasks = build_fewshot(cfg.data).test_tasks
    accs = pipeline.evaluate(method, dataclasses.replace(cfg, method="maml"), [tasks[i] for i in range(3)],
                             10, 1, 5, progress=False)
    assert accs.shape == (3,) and (accs >= 0).all() and (accs <= 1).all()
    after = method.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


ABLATIONS = sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "ablations").glob("*.yaml"))


@pytest.mark.parametrize("path", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_every_ablation_row_runs(path, tmp_path, data):
    """The paper's ablation rows (CE; CE+SS-GC; CE+SS-SC; CE+SS-GC+SS-SC; CE+GC; CE+SC; CE+GC+SC)."""
    cfg = load_config(path, TINY + ["train.epochs=1", "train.max_steps=2", "train.validate=false",
                                    f"run_dir={tmp_path}"])
    torch.manual_seed(0)
    method = pipeline.build_method(cfg, data)
    batch = next(iter(torch.utils.data.DataLoader(data.pretrain_set(two_view=True), batch_size=16)))
    loss, metrics = method.loss(batch if method.needs_two_views else (batch[0][0], batch[1]))
    assert torch.isfinite(loss)
    expected = {"ce"} | ({"gc"} if cfg.loss.lambda_global > 0 else set()) | ({"sc"} if cfg.loss.lambda_spatial > 0 else set())
    assert expected <= set(metrics)
    pipeline.train(cfg, data=data)
    assert (tmp_path / "train" / "step-2.pt").exists()


def test_distillation_authors_objective_by_hand(data):
    """Default (authors'): L_CD on the L2-normalised pooled features, no gradient to the
    projection head, one view; cd_features=projection restores the head-output variant."""
    torch.manual_seed(0)
    teacher = SCL(small_backbone(), data.num_classes, SCLLossConfig(lambda_global=1.0))
    x, y = next(iter(torch.utils.data.DataLoader(data.pretrain_set(), batch_size=16)))
    for feats in ("pooled", "projection"):
        torch.manual_seed(1)
        d = Distiller.from_teacher(teacher, DistillConfig(cd_features=feats), new_backbone=small_backbone)
        d.train()
        loss, m = d.loss((x, y))
        with torch.no_grad():
            s = d.student.backbone(x)
            t = teacher.backbone(x)
            if feats == "projection":
                s, t = d.student.head(s), teacher.head(t)
        ref = (torch.nn.functional.normalize(t, dim=1) - torch.nn.functional.normalize(s, dim=1)).pow(2).sum(1).mean()
        assert m["cd"].item() == pytest.approx(ref.item(), rel=1e-5)
        loss.backward()
        head_grads = [p.grad for p in d.student.head.parameters()]
        if feats == "pooled":
            assert all(g is None for g in head_grads)
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in head_grads)
        assert all(p.grad is None for p in teacher.parameters())


def test_distillation_student_is_freshly_built_backbone():
    """student_init=backbone: ResNet-12's own init (Kaiming-normal fan_out, BN 1/0), not the
    teacher's modules reset with PyTorch defaults (kaiming_uniform a=sqrt(5): 2.4x smaller)."""
    make = lambda: create_backbone(ModelConfig(name="resnet12"), in_chans=3, image_size=16)  # noqa: E731
    torch.manual_seed(0)
    teacher = SCL(make(), 5, SCLLossConfig())
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)                      # a "trained" teacher: nothing of it may leak
    fresh = Distiller.from_teacher(teacher, DistillConfig(), new_backbone=make).student
    reset = Distiller.from_teacher(teacher, DistillConfig(student_init="reset")).student
    biggest = lambda m: max((c.weight for c in m.backbone.modules() if isinstance(c, torch.nn.Conv2d)),  # noqa: E731
                            key=lambda w: w.numel())                              # 640 x 640 x 3 x 3
    w_fresh, w_reset = biggest(fresh), biggest(reset)
    o, i, kh, kw = w_fresh.shape
    assert w_fresh.std().item() == pytest.approx((2 / (o * kh * kw)) ** 0.5, rel=0.03)
    assert w_reset.std().item() == pytest.approx((1 / (3 * i * kh * kw)) ** 0.5, rel=0.03)
    bns = [b for b in fresh.backbone.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)
    assert fresh.classifier.out_features == 5 and all(p.requires_grad for p in fresh.parameters())
    with pytest.raises(ValueError, match="new_backbone"):
        Distiller.from_teacher(teacher, DistillConfig())
