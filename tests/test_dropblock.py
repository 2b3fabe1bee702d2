"""DropBlock as the authors train it (issue 24, item 4): the linear ramp of the rate, its counter
in checkpoints (exact resume), their per-channel mask, the per-dataset block size of the paper configs.

Their ResNet-12 (RFS / SCL ``models/resnet.py``, ``BasicBlock.forward``) bumps
``num_batches_tracked`` and then uses ``keep_rate = max(1 - drop_rate / (20 * 2000) * k, 1 - drop_rate)``
and ``gamma = (1 - keep_rate) / block**2 * feat**2 / (feat - block + 1)**2``.
"""
import io
from pathlib import Path

import pytest
import timm
import torch
from timm.layers.drop import drop_block_2d

from scl_plugin.backbones.resnet12 import (SCHEDULE_BUFFER, ScheduledDropBlock, dropblock_gamma,
                                           ramped_drop_prob)
from scl_plugin.backbones.rfs import export_rfs, load_rfs_weights
from scl_plugin.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COUNTERS = ("stages.2.drop." + SCHEDULE_BUFFER, "stages.3.drop." + SCHEDULE_BUFFER)


def tiny(**kw):
    """A ResNet-12 small enough for CPU tests (DropBlock on stages 3-4 as in the real one)."""
    kw = {"drop_rate": 0.5, "dropblock_size": 2, "dropblock_ramp": 4, "dropblock_mask": "rfs",
          "widths": (4, 8, 8, 8), **kw}
    return timm.create_model("resnet12", num_classes=3, **kw)


def theirs(k, drop_rate=0.1):
    """``1 - keep_rate`` of RFS / SCL after ``k`` forwards (their expression, verbatim)."""
    return 1.0 - max(1.0 - drop_rate / (20 * 2000) * k, 1.0 - drop_rate)


# ----------------------------------------------------------------------------- (a) the schedule
@pytest.mark.parametrize("k, hand", [(0, 0.0), (1, 2.5e-6), (20000, 0.05), (40000, 0.1), (50000, 0.1)])
def test_ramp_matches_hand_computation_and_their_formula(k, hand):
    assert ramped_drop_prob(0.1, 40000, k) == pytest.approx(hand, abs=1e-15)
    assert ramped_drop_prob(0.1, 40000, k) == pytest.approx(theirs(k), abs=1e-12)
    assert float(ramped_drop_prob(0.1, 40000, torch.tensor(k))) == pytest.approx(hand, rel=1e-6, abs=1e-12)
    assert ramped_drop_prob(0.1, 0, k) == 0.1                       # no ramp: constant, as before
    block = ScheduledDropBlock(0.1, 5, ramp=40000)
    getattr(block, SCHEDULE_BUFFER).fill_(k)
    assert block.drop_prob == pytest.approx(hand, abs=1e-15)


@pytest.mark.parametrize("p", [2.5e-6, 0.05, 0.1])
def test_gamma_matches_hand_computation(p):
    # 84x84: stage 3 is 10x10, stage 4 5x5 (block 5); 32x32: 4x4 and 2x2 (block 2)
    assert dropblock_gamma(p, 5, 10, 10) == pytest.approx(p * 100 / (25 * 36))      # = p / 9
    assert dropblock_gamma(p, 5, 5, 5) == pytest.approx(p)                           # one seed position
    assert dropblock_gamma(p, 2, 4, 4) == pytest.approx(p * 16 / (4 * 9))           # = 4p / 9
    assert dropblock_gamma(p, 2, 2, 2) == pytest.approx(p)
    assert dropblock_gamma(p, 5, 2, 2) == pytest.approx(p)                           # block clipped
    for feat, block in ((10, 5), (5, 5), (4, 2), (2, 2)):       # their expression on square maps
        their_gamma = p / block ** 2 * feat ** 2 / (feat - block + 1) ** 2
        assert dropblock_gamma(p, block, feat, feat) == pytest.approx(their_gamma)


def test_each_training_forward_uses_the_ramped_rate():
    """Block 5 on a 5x5 map: their mask drops whole channel maps, a fraction p_k = 0.5 k / 4 of them."""
    torch.manual_seed(0)
    block = ScheduledDropBlock(0.5, 5, ramp=4, mask="rfs").train()
    x = torch.ones(64, 64, 5, 5)
    for k, p in zip(range(1, 7), (0.125, 0.25, 0.375, 0.5, 0.5, 0.5)):
        y = block(x)
        assert int(getattr(block, SCHEDULE_BUFFER)) == k and block.drop_prob == pytest.approx(p)
        per_map = y.flatten(2)
        dropped = (per_map == 0).all(-1)
        assert ((per_map == 0).any(-1) == dropped).all()                # all of a map or none of it
        assert dropped.float().mean().item() == pytest.approx(p, abs=0.04)
        kept = per_map[~dropped]
        torch.testing.assert_close(kept, torch.full_like(kept, x.numel() / (~dropped).sum().item() / 25))


def test_rfs_mask_drops_what_their_seeding_predicts():
    """Seeds only where a whole block fits: pixel (i, j) is covered by c_i * c_j seed positions."""
    torch.manual_seed(0)
    h, k, p = 10, 5, 0.1
    gamma = dropblock_gamma(p, k, h, h)
    block = ScheduledDropBlock(p, k, mask="rfs").train()
    y = block(torch.ones(256, 64, h, h))
    c = torch.tensor([sum(1 for s in range(h - k + 1) if s <= i <= s + k - 1) for i in range(h)],
                     dtype=torch.float64)                           # 1 2 3 4 5 5 4 3 2 1
    expected = (1 - (1 - gamma) ** (c[:, None] * c[None, :])).mean().item()
    assert expected == pytest.approx(0.09345, abs=1e-5)             # ~p, unlike timm's ~0.19 here
    assert (y == 0).double().mean().item() == pytest.approx(expected, abs=0.005)


def test_timm_mask_under_the_ramp_is_timms_dropblock_at_the_ramped_rate():
    x = torch.randn(4, 8, 10, 10)
    block = ScheduledDropBlock(0.3, 5, ramp=3, mask="timm").train()
    for k in (1, 2, 3, 4):
        torch.manual_seed(k)
        y = block(x)
        torch.manual_seed(k)
        torch.testing.assert_close(y, drop_block_2d(x, 0.3 * min(k / 3, 1.0), 5), rtol=0, atol=0)


# ----------------------------------------------------------------------------- (b) eval mode
def test_eval_forwards_do_not_advance_the_schedule_and_are_deterministic():
    torch.manual_seed(0)
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    model.train()
    model(x)
    model(x)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    assert [int(model.state_dict()[k]) for k in COUNTERS] == [2, 2]
    assert model.stages[3].drop.drop_prob == pytest.approx(0.25)


# ----------------------------------------------------------------------------- (c) state dict, resume
def _steps(model, opt, xs):
    outs = []
    for x in xs:
        out = model(x)
        opt.zero_grad()
        out.square().mean().backward()
        opt.step()
        outs.append(out.detach())
    return outs


@pytest.mark.parametrize("mask", ["rfs", "timm"])
def test_state_dict_round_trip_mid_ramp_continues_identically(mask):
    torch.manual_seed(5)
    xs = [torch.randn(4, 3, 32, 32) for _ in range(6)]

    def start():
        torch.manual_seed(0)
        model = tiny(dropblock_mask=mask, dropblock_ramp=5).train()
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    straight, opt = start()
    torch.manual_seed(1)
    want = _steps(straight, opt, xs)

    first, opt = start()
    torch.manual_seed(1)
    _steps(first, opt, xs[:3])
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state()}, buf)
    assert [int(first.state_dict()[k]) for k in COUNTERS] == [3, 3]

    def resume(drop_counter=False):
        buf.seek(0)
        ckpt = torch.load(buf, weights_only=True)
        if drop_counter:             # an older checkpoint: loads (strict), the counter restarts
            ckpt["model"] = {k: v for k, v in ckpt["model"].items() if k not in COUNTERS}
        torch.manual_seed(99)        # a different initialisation, overwritten by the load
        model = tiny(dropblock_mask=mask, dropblock_ramp=5).train()
        model.load_state_dict(ckpt["model"])
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.load_state_dict(ckpt["opt"])
        torch.set_rng_state(ckpt["rng"])
        return model, _steps(model, opt, xs[3:])

    resumed, got = resume()
    assert all(torch.equal(a, b) for a, b in zip(want[3:], got))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [int(resumed.state_dict()[k]) for k in COUNTERS] == [6, 6]
    # without the counter the ramp restarts, so the continuation differs: the buffer is what keeps it exact
    restarted, got = resume(drop_counter=True)
    assert [int(restarted.state_dict()[k]) for k in COUNTERS] == [3, 3]
    assert not all(torch.equal(a, b) for a, b in zip(want[3:], got))


def test_rfs_layout_round_trip_skips_the_counter_and_keeps_ours(tmp_path):
    model = tiny(widths=(64, 160, 320, 640), dropblock_size=5)
    model.stages[2].drop.train_forwards.fill_(7)
    model.stages[3].drop.train_forwards.fill_(7)
    export_rfs(model, tmp_path / "rfs.pth")
    saved = torch.load(tmp_path / "rfs.pth", weights_only=True)["model"]
    assert not any(SCHEDULE_BUFFER in k for k in saved)             # RFS keeps no such state
    other = tiny(widths=(64, 160, 320, 640), dropblock_size=5)
    other.stages[2].drop.train_forwards.fill_(11)
    load_rfs_weights(other, tmp_path / "rfs.pth")
    assert int(other.stages[2].drop.train_forwards) == 11          # left as it was
    assert torch.equal(other.stages[0].convs[0][0].weight, model.stages[0].convs[0][0].weight)


def test_reset_parameters_restarts_the_schedule_and_bad_arguments_are_refused():
    block = ScheduledDropBlock(0.1, 5, ramp=10)
    block.train()(torch.randn(1, 2, 6, 6))
    block.reset_parameters()                      # Distiller(student_init='reset') calls it
    assert int(getattr(block, SCHEDULE_BUFFER)) == 0
    with pytest.raises(ValueError, match="dropblock_mask"):
        tiny(dropblock_mask="gaussian")
    with pytest.raises(ValueError, match="dropblock_ramp"):
        tiny(dropblock_ramp=-1)


# ----------------------------------------------------------------------------- paper configs
@pytest.mark.parametrize("name, block", [("mini-imagenet", 5), ("tiered-imagenet", 5), ("cross-cub", 5),
                                         ("cross-cars", 5), ("cross-places", 5), ("cross-plantae", 5),
                                         ("cifarfs", 2), ("fc100", 2)])
def test_paper_configs_use_the_authors_dropblock(name, block):
    cfg = load_config(CONFIGS / "paper" / f"{name}.yaml")
    assert cfg.model.name == "resnet12"
    assert dict(cfg.model.kwargs) == {"drop_rate": 0.1, "dropblock_size": block, "dropblock_ramp": 40000,
                                      "dropblock_mask": "rfs"}
    assert cfg.data.image_size == (32 if block == 2 else 84)
    assert cfg.data.dataset == ("mini-imagenet" if name.startswith("cross-") else name)   # cross-*: on mini


# ----------------------------------------------------------------------------- (d) through the trainer
def test_interrupted_and_resumed_training_is_bit_identical(tmp_path):
    """pipeline.train stopped by train.max_steps mid-ramp and resumed == one uninterrupted run."""
    from scl_plugin import pipeline
    from scl_plugin.training import load_checkpoint
    args = ["data.dataset=synthetic", "data.image_size=32", "data.augment=none", "data.batch_size=8",
            "data.val_episodes=1", "train.validate=true", "model.name=resnet12",
            "model.kwargs={drop_rate: 0.3, dropblock_size: 2, dropblock_ramp: 3, dropblock_mask: rfs, "
            "widths: [8, 16, 32, 64]}",
            "train.epochs=2", "train.steps_per_epoch=2", "train.lr_decay_epochs=[1]", "train.log_every=1",
            f"data.cache_dir={tmp_path / 'cache'}"]

    def cfg(run, *extra):
        return load_config(CONFIGS / "scl.yaml", args + [f"run_dir={tmp_path / run}", *extra])

    pipeline.train(cfg("straight"))
    pipeline.train(cfg("resumed", "train.max_steps=2"))               # stops mid-ramp (step 2 of 3)
    half = load_checkpoint(tmp_path / "resumed" / "train" / "step-2.pt")["model"]
    assert [int(half["backbone.model." + k]) for k in COUNTERS] == [2, 2]
    assert not (tmp_path / "resumed" / "train" / "final.pt").exists()
    pipeline.train(cfg("resumed"))
    a = load_checkpoint(tmp_path / "straight" / "train" / "final.pt")
    b = load_checkpoint(tmp_path / "resumed" / "train" / "final.pt")
    # 4 training steps, one forward each; the validation episodes of each epoch (eval mode) do not count
    assert [int(a["model"]["backbone.model." + k]) for k in COUNTERS] == [4, 4]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
