"""SimCLR, MoCo v2, BYOL, triplet, N-pair, Matching Networks (issue 19): losses against loops,
EMA and queue against hand computations, PK batches, and a few training steps on real Omniglot."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from scl_plugin import pipeline
from scl_plugin.algorithms import BYOL, MoCo
from scl_plugin.algorithms.ema import byol_momentum, ema_update
from scl_plugin.backbones import create_backbone
from scl_plugin.config import ConfigError, ModelConfig, load_config
from scl_plugin.data import build_fewshot
from scl_plugin.losses import infonce_queue_loss, npair_loss, nt_xent_loss, triplet_semihard_loss
from scl_plugin.training import PKBatches

# Omniglot-small from ../shared/data, a small Conv-4 so that a few steps run in seconds.
REAL = ["data.image_size=28", "model.kwargs.depth=2", "model.kwargs.hidden=32", "data.batch_size=32",
        "train.validate=false", "data.test_episodes=30", "data.queries=5", "train.log_every=1",
        "train.schedule=constant"]


def tiny_backbone():
    return create_backbone(ModelConfig(name="conv4", kwargs={"depth": 1, "hidden": 4}), in_chans=1, image_size=8)


# ----------------------------------------------------------------------------- losses vs loops
def test_triplet_semihard_matches_loop():
    g = torch.Generator().manual_seed(0)
    emb, y = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2] * 4)
    z = F.normalize(emb, dim=1)
    terms = []
    for a in range(12):
        for p in range(12):
            if p == a or y[p] != y[a]:
                continue
            d_ap = ((z[a] - z[p]) ** 2).sum()
            negs = [((z[a] - z[n]) ** 2).sum() for n in range(12) if y[n] != y[a]]
            semi = [d for d in negs if d > d_ap]
            d_an = min(semi) if semi else max(negs)
            terms.append(max(d_ap - d_an + 0.3, 0.0))
    assert triplet_semihard_loss(emb, y, margin=0.3).item() == pytest.approx(float(sum(terms) / len(terms)), abs=1e-12)


def test_npair_matches_loop():
    g = torch.Generator().manual_seed(1)
    emb, y = torch.randn(8, 3, generator=g, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    terms = []
    for a in range(8):
        for p in range(8):
            if p != a and y[p] == y[a]:
                s = sum(math.exp(emb[a] @ emb[n] - emb[a] @ emb[p]) for n in range(8) if y[n] != y[a])
                terms.append(math.log(1 + s))
    expected = sum(terms) / len(terms) + 0.01 * (emb ** 2).sum(1).mean().item()
    assert npair_loss(emb, y, l2=0.01).item() == pytest.approx(expected, abs=1e-12)


def test_nt_xent_and_infonce_by_hand():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64)          # 3 images x 2 views
    u = F.normalize(z, dim=1)
    total = 0.0
    for i in range(6):
        pos = (i + 3) % 6
        denom = sum(math.exp(u[i] @ u[m] / 0.5) for m in range(6) if m != i)
        total += -(u[i] @ u[pos] / 0.5 - math.log(denom))
    assert nt_xent_loss(z, 0.5).item() == pytest.approx(float(total) / 6, abs=1e-12)
    q, k = z[:3], z[3:]
    queue = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=1)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    expected = sum(-math.log(math.exp(qn[i] @ kn[i] / 0.2) / (math.exp(qn[i] @ kn[i] / 0.2)
                   + sum(math.exp(qn[i] @ queue[j] / 0.2) for j in range(5)))) for i in range(3)) / 3
    assert infonce_queue_loss(q, k, queue, 0.2).item() == pytest.approx(float(expected), abs=1e-12)


# ----------------------------------------------------------------------------- EMA and queue
def test_ema_after_k_steps_matches_closed_form():
    target, online = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    target.weight.data.fill_(1.0)
    m, values = 0.9, [2.0, 4.0, -1.0]
    for v in values:                        # the online weight changes between updates
        online.weight.data.fill_(v)
        ema_update(target, online, m)
    # 0.9^3 * 1 + 0.1 * (0.9^2 * 2 + 0.9 * 4 + (-1))
    expected = 0.729 + 0.1 * (0.81 * 2 + 0.9 * 4 - 1)
    assert target.weight.item() == pytest.approx(expected, abs=1e-6)


def test_byol_schedule_and_target_update():
    assert byol_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert byol_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert byol_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert byol_momentum(7, 0, 0.99) == 0.99
    torch.manual_seed(0)
    byol = BYOL(tiny_backbone(), proj_dim=3, hidden_dim=4, momentum=0.9, total_steps=4)
    w0 = byol.target_projector[0].weight.clone()
    taus = []
    for k in range(2):                      # online weights move by +1 before each update
        for p in byol.projector.parameters():
            p.data.add_(1.0)
        taus.append(byol.current_momentum())
        byol.momentum_update()
    assert taus == pytest.approx([0.9, 1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2])
    online = byol.projector[0].weight      # = w0 + 2
    t1, t2 = taus
    expected = t2 * (t1 * w0 + (1 - t1) * (w0 + 1)) + (1 - t2) * online
    assert torch.allclose(byol.target_projector[0].weight, expected, atol=1e-6)
    assert int(byol.ema_step) == 2


def test_moco_queue_ring_buffer_and_key_ema():
    torch.manual_seed(0)
    moco = MoCo(tiny_backbone(), proj_dim=2, queue_size=5, momentum=0.5)
    a, b = torch.arange(6.0).view(3, 2), -torch.arange(1.0, 7.0).view(3, 2)
    moco.enqueue(a)
    moco.enqueue(b)                         # slots 3, 4, then wraps to 0
    assert int(moco.queue_ptr) == 1
    assert torch.equal(moco.queue[0], b[2]) and torch.equal(moco.queue[1:3], a[1:3])
    assert torch.equal(moco.queue[3:5], b[:2])
    # a loss step in train mode: key encoder <- 0.5 key + 0.5 query, then the 2 keys are queued
    with torch.no_grad():
        for p in moco.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in moco.key_backbone.parameters()]
    x = torch.randn(2, 1, 8, 8)
    moco.train()
    moco.loss(((x, x.flip(-1)), torch.zeros(2, dtype=torch.long)))
    for k, k0, q in zip(moco.key_backbone.parameters(), before, moco.backbone.parameters()):
        assert torch.allclose(k, 0.5 * k0 + 0.5 * q)
    assert int(moco.queue_ptr) == 3
    assert torch.allclose(moco.queue[1:3].norm(dim=1), torch.ones(2))


def test_pk_batches_and_resume():
    from scl_plugin.data.transforms import ImageSet
    from scl_plugin.data.datasets import TensorSource
    labels = [c for c in range(6) for _ in range(5)] + [6]           # class 6 has 1 image: never drawn
    ds = ImageSet(TensorSource(torch.zeros(len(labels), 1, 4, 4)), labels, kind="gray", channels=1, image_size=4)
    pk = PKBatches(ds, 3, 2, seed=1)
    assert pk.steps_per_epoch == len(labels) // 6
    epoch = pk.epoch_batches(0)
    for batch in epoch:
        ys = [labels[i] for i in batch]
        assert len(batch) == 6 and len(set(batch)) == 6 and len(set(ys)) == 3
        assert all(ys.count(c) == 2 for c in set(ys)) and 6 not in ys
    resumed = [b[1].tolist() for b in pk(0, 2)]
    assert resumed == [[labels[i] for i in b] for b in epoch[2:]]
    assert pk.epoch_batches(1) != epoch
    with pytest.raises(ValueError, match="pk_classes"):
        PKBatches(ds, 7, 2, seed=0)


def test_embed_config_errors():
    with pytest.raises(ConfigError, match="embed.momentum"):
        load_config("configs/moco.yaml", ["embed.momentum=1.0"])
    with pytest.raises(ConfigError, match="pk_images"):
        load_config("configs/triplet.yaml", ["embed.pk_images=1"])


# ----------------------------------------------------------------------------- training on Omniglot
@pytest.fixture(scope="module")
def omniglot():
    return build_fewshot(load_config("configs/ce.yaml", REAL).data)


TRAIN = {   # method: (steps, overrides); budgets of a few seconds each on 2 idle cores
    "simclr": (20, ["train.epochs=1", "train.steps_per_epoch=20"]),           # lr 0.02 from simclr.yaml
    "moco": (20, ["train.epochs=1", "train.steps_per_epoch=20", "embed.momentum=0.99", "embed.queue_size=128"]),
    "byol": (20, ["train.epochs=1", "train.steps_per_epoch=20"]),
    "triplet": (20, ["train.epochs=1", "train.steps_per_epoch=20", "embed.pk_classes=8"]),
    "npair": (25, ["train.epochs=1", "train.steps_per_epoch=25", "embed.pk_classes=8"]),
    "matchingnet": (20, ["episodic.meta_iterations=20", "episodic.meta_batch_size=2"]),
}


@pytest.fixture(scope="module")
def trained(omniglot, tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    out = {}
    for name, (_, extra) in TRAIN.items():
        cfg = load_config(f"configs/{name}.yaml", REAL + extra + [f"run_dir={root / name}"])
        torch.manual_seed(0)
        method = pipeline.train(cfg, data=omniglot, resume=False)
        losses = [json.loads(l)["loss"] for l in (root / name / "train" / "metrics.jsonl").read_text().splitlines()
                  if '"kind": "step"' in l]
        acc = pipeline.evaluate(method, cfg, omniglot.test_tasks, 5, 1, 5, progress=False).mean()
        out[name] = (cfg, losses, acc)
    return out


@pytest.mark.parametrize("name", list(TRAIN))
def test_few_steps_lower_loss_and_beat_chance(trained, name):
    cfg, losses, acc = trained[name]
    assert len(losses) == TRAIN[name][0]
    # MoCo's first steps contrast with the random initial queue (easy negatives): its loss is
    # comparable only once the queue holds real keys
    start = cfg.embed.queue_size // cfg.data.batch_size if name == "moco" else 0
    first, last = sum(losses[start:start + 5]) / 5, sum(losses[-5:]) / 5
    assert last < first, (name, losses)
    assert acc > 0.4, (name, acc)           # 5-way 1-shot on unseen alphabets; chance 0.2


def test_protonet_initialised_from_each(trained, omniglot, tmp_path):
    for name in ("moco", "byol", "triplet", "matchingnet"):
        cfg, _, _ = trained[name]
        pcfg = load_config("configs/protonet.yaml", REAL + [f"episodic.init_from={cfg.run_dir}",
                                                            f"run_dir={tmp_path / name}"])
        proto = pipeline.build_method(pcfg, omniglot)
        source, _ = pipeline.load_trained(cfg.run_dir, omniglot)
        for (k, v), (k2, v2) in zip(proto.backbone.state_dict().items(), source.backbone.state_dict().items()):
            assert k == k2 and torch.equal(v, v2), (name, k)


def test_byol_paused_run_resumes_to_the_uninterrupted_weights(omniglot, tmp_path):
    """``train.max_steps`` only pauses a run (the run fingerprint leaves it out), so BYOL's EMA
    schedule must span the whole run, and pause + resume must give the uninterrupted weights."""
    base = REAL + ["train.epochs=1", "train.steps_per_epoch=4"]

    def run(name, extra, resume):
        cfg = load_config("configs/byol.yaml", base + extra + [f"run_dir={tmp_path / name}"])
        torch.manual_seed(0)
        return pipeline.train(cfg, data=omniglot, resume=resume)

    whole = run("whole", [], False)
    paused = run("paused", ["train.max_steps=2"], False)
    assert paused.total_steps == whole.total_steps == 4
    resumed = run("paused", [], True)
    for (k, v), (_, v2) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, v2), k
