"""Watching a long run (issue 24, item 6): ``train.log_with`` sends the rows of
``train/metrics.jsonl`` (validation accuracy included) to Accelerate's experiment trackers,
with the run's settings as hyper-parameters; read back here from TensorBoard's event files."""
import json
from collections import defaultdict

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

from scl_plugin import pipeline  # noqa: E402
from scl_plugin.config import ConfigError, load_config, to_dict  # noqa: E402
from scl_plugin.runs import weight_settings  # noqa: E402
from scl_plugin.training.trainer import hparams  # noqa: E402

TINY = ["data.dataset=synthetic", "data.image_size=16", "data.augment=none", "data.batch_size=32",
        "data.val_episodes=4", "data.queries=5", "model.name=conv4", "model.kwargs.depth=2",
        "model.kwargs.hidden=16", "train.epochs=2", "train.lr_decay_epochs=[1]", "train.steps_per_epoch=3",
        "train.log_every=1", "train.validate=true"]


def config(tmp_path, *extra):
    return load_config(None, TINY + [f"run_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}", *extra])


def jsonl_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]


def expected_series(rows):
    """``{tag: [(step, value), ...]}`` as the trackers should have them: every number of every row."""
    series = defaultdict(list)
    for row in rows:
        for key, value in row.items():
            if key not in ("kind", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                series[f"{row['kind']}/{key}"].append((row["step"], value))
    return dict(series)


def events(run_dir):
    folder = run_dir / "train" / "tracking" / "scl_plugin"
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, folder


def assert_same(got, want):
    assert set(got) == set(want), (sorted(got), sorted(want))
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag        # same steps, each once
        assert [v for _, v in got[tag]] == [float(np.float32(v)) for _, v in points], tag   # float32 exact


def recorded_hparams(folder):
    """The hyper-parameters of every TensorBoard hparams session under ``folder``."""
    sessions = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("events.out.tfevents.*"))):
        acc = EventAccumulator(str(sub))
        acc.Reload()
        for content in acc.PluginTagToContent("hparams").values():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                sessions.append({k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                                 for k, v in data.session_start_info.hparams.items()})
    return sessions


def test_tensorboard_scalars_equal_metrics_jsonl_and_settings_are_hparams(tmp_path):
    cfg = config(tmp_path, "train.log_with=tensorboard")
    pipeline.train(cfg)
    run_dir = tmp_path / "run"
    rows = jsonl_rows(run_dir)
    want = expected_series(rows)
    assert [s for s, _ in want["epoch/val_acc"]] == [3, 6]            # validation accuracy, per epoch
    assert len(want["step/loss"]) == 6
    got, folder = events(run_dir)
    assert_same(got, want)
    sessions = recorded_hparams(folder)
    assert len(sessions) == 1
    flat = hparams(to_dict(cfg))
    assert sessions[0] == flat          # every setting (numbers and booleans come back as doubles)
    assert sessions[0]["train.log_with"] == "tensorboard" and sessions[0]["train.lr"] == cfg.train.lr
    assert sessions[0]["train.lr_decay_epochs"] == "[1]" and sessions[0]["distill.teacher"] == "none"


def test_unknown_tracker_is_a_config_error_naming_the_key_and_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'train.log_with': got 'tensorbored', allowed: .*tensorboard.*wandb"):
        config(tmp_path, "train.log_with=tensorboard,tensorbored")
    assert config(tmp_path, "train.log_with=tensorboard,wandb").train.trackers() == ["tensorboard", "wandb"]
    assert config(tmp_path).train.trackers() == [] == config(tmp_path, "train.log_with=none").train.trackers()


def test_a_tracker_not_installed_fails_at_start_naming_the_extra(tmp_path, monkeypatch):
    import accelerate.tracking
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(ConfigError, match=r"train.log_with': the tensorboard tracker needs the tensorboard package.*"
                                          r"pip install 'scl_plugin\[tensorboard\]'"):
        pipeline.train(config(tmp_path, "train.log_with=tensorboard"))
    assert not (tmp_path / "run").exists()          # nothing was started


def test_log_with_is_not_a_weight_setting_and_resumes_keep_the_series_exact(tmp_path):
    assert "train.log_with" not in weight_settings(config(tmp_path, "train.log_with=tensorboard"))
    run_dir = tmp_path / "run"
    pipeline.train(config(tmp_path, "train.max_steps=2"))                  # paused, no tracker
    assert not (run_dir / "train" / "final.pt").exists()
    pipeline.train(config(tmp_path, "train.log_with=tensorboard"))         # resumed with one: accepted
    assert (run_dir / "train" / "final.pt").exists()
    rows = jsonl_rows(run_dir)
    got, _ = events(run_dir)
    assert_same(got, expected_series([r for r in rows if r["step"] > 2]))   # what this call logged
    # a call interrupted after its last checkpoint logged steps 4-6 that the next call redoes:
    # TensorBoard shows each step once, with the values of the call that kept them
    for name in ("final.pt", "step-6.pt"):
        (run_dir / "train" / name).unlink()
    pipeline.train(config(tmp_path, "train.log_with=tensorboard"))
    got, _ = events(run_dir)
    assert_same(got, expected_series([r for r in jsonl_rows(run_dir) if r["step"] > 2]))
