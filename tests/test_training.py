"""Training loop reliability: exact resume, clear failures, atomic outputs (issue 11)."""
import errno
import json
import os

import pytest
import torch
from torch.utils.data import Dataset

from scl_plugin.algorithms import SCL
from scl_plugin.backbones import create_backbone
from scl_plugin.config import ModelConfig, SCLLossConfig, TrainConfig
from scl_plugin.training import CheckpointError, FlatBatches, Trainer, TrainingError, load_checkpoint
from scl_plugin.utils import atomic_write_json, seed_everything


class NoisyBlobs(Dataset):
    """Separable 3x16x16 images; __getitem__ adds noise from torch's global RNG (an "augmentation")."""

    def __init__(self, n_classes=4, per_class=8, two_view=False):
        g = torch.Generator().manual_seed(0)
        self.means = torch.randn(n_classes, 3, 16, 16, generator=g)
        self.labels = torch.arange(n_classes).repeat_interleave(per_class)
        self.two_view = two_view

    def __len__(self):
        return len(self.labels)

    def _view(self, i):
        return self.means[self.labels[i]] + 0.3 * torch.randn(3, 16, 16)

    def __getitem__(self, i):
        x = (self._view(i), self._view(i)) if self.two_view else self._view(i)
        return x, self.labels[i]


def make_method(lambda_spatial=0.0, num_classes=4):
    backbone = create_backbone(ModelConfig(name="conv4", kwargs={"depth": 2, "hidden": 16}), in_chans=3, image_size=16)
    return SCL(backbone, num_classes, SCLLossConfig(lambda_global=1.0, lambda_spatial=lambda_spatial))


def run(tmp_path, max_steps=-1, epochs=3, lambda_spatial=1.0, **train_kw):
    seed_everything(0)
    method = make_method(lambda_spatial)
    train_kw.setdefault("lr", 0.05)
    cfg = TrainConfig(epochs=epochs, lr_decay_epochs=[2], max_steps=max_steps, log_every=1, **train_kw)
    data = NoisyBlobs(two_view=True)
    batches = FlatBatches(data, batch_size=8, seed=0)
    trainer = Trainer(method, cfg, tmp_path, epochs=epochs, meta={"backbone": "conv4", "num_classes": 4})
    result = trainer.fit(batches, batches.steps_per_epoch)
    return method, result


def test_resume_mid_epoch_gives_identical_weights(tmp_path):
    straight, res = run(tmp_path / "a")
    assert res.finished and res.steps == 12
    _, half = run(tmp_path / "b", max_steps=6)          # stops mid-epoch 2 (4 steps per epoch)
    assert not half.finished and half.steps == 6
    resumed, res2 = run(tmp_path / "b")                  # picks up step-6.pt automatically
    assert res2.finished and res2.steps == 12
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name


def test_training_reduces_loss_and_writes_metrics(tmp_path):
    _, res = run(tmp_path, epochs=3)
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [l for l in lines if l["kind"] == "epoch"]
    assert len(epochs) == 3 and epochs[-1]["loss"] < epochs[0]["loss"]
    assert (tmp_path / "final.pt").exists()
    assert len(list(tmp_path.glob("step-*.pt"))) <= 2       # keep_last


def test_truncated_checkpoint_is_reported(tmp_path):
    run(tmp_path, epochs=1)
    ckpt = tmp_path / "final.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(ckpt)


def test_incompatible_checkpoint_is_reported(tmp_path):
    run(tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match="num_classes is 4 there but 5"):
        load_checkpoint(tmp_path / "final.pt", expect={"num_classes": 5})
    other = make_method(num_classes=7)
    trainer = Trainer(other, TrainConfig(epochs=1), tmp_path / "x", epochs=1)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        trainer.load_state_dict(load_checkpoint(tmp_path / "final.pt"))


def test_nan_loss_stops_with_debug_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match=r"loss is (nan|inf) at step \d+ .*debug checkpoint"):
        run(tmp_path, lr=1e30, lambda_spatial=0.0)
    assert list(tmp_path.glob("debug-nonfinite-step-*.pt"))


def test_atomic_write_leaves_old_file_on_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"complete": True})

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(target, {"complete": False, "partial": [1, 2, 3]})
    assert json.loads(target.read_text()) == {"complete": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]      # no temp file left


def test_checkpoint_write_failure_names_the_cause(tmp_path, monkeypatch):
    from scl_plugin.training import save_checkpoint

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(CheckpointError, match="No space left on device.*free disk space"):
        save_checkpoint(tmp_path / "step-1.pt", {"model": {}})
    assert list(tmp_path.iterdir()) == []


def test_rerun_at_step_budget_does_not_train_further(tmp_path):
    _, first = run(tmp_path, max_steps=5, lambda_spatial=0.0)
    _, again = run(tmp_path, max_steps=5, lambda_spatial=0.0)
    assert first.steps == again.steps == 5 and not again.finished
    assert sorted(p.name for p in tmp_path.glob("step-*.pt"))[-1] == "step-5.pt"


def test_no_resume_starts_over_and_forgets_the_old_run(tmp_path):
    run(tmp_path, epochs=1, lambda_spatial=0.0)
    assert (tmp_path / "final.pt").exists()
    seed_everything(0)
    method = make_method(0.0)
    trainer = Trainer(method, TrainConfig(epochs=1, max_steps=2), tmp_path, epochs=1)
    batches = FlatBatches(NoisyBlobs(two_view=True), batch_size=8, seed=0)
    result = trainer.fit(batches, batches.steps_per_epoch, resume=False)
    assert result.steps == 2 and not (tmp_path / "final.pt").exists()
    assert [p.name for p in tmp_path.glob("step-*.pt")] == ["step-2.pt"]
