"""A method's training recipe comes from its config (issue 26): the episodic meta-optimiser and
its schedule, distillation as long as the teacher, and runs of a changed default refused."""
import json

import pytest
import torch

from scl_plugin import pipeline, runs
from scl_plugin.config import load_config, to_yaml
from scl_plugin.runs import SettingsMismatch, check_run, stamp_run

from test_bench import CONFIGS, TINY


def _tiny(tmp_path, config, *overrides):
    return load_config(CONFIGS / config, [o.format(cache=tmp_path / "cache") for o in TINY]
                       + [f"run_dir={tmp_path / 'run'}", "data.dataset=synthetic", *overrides])


def test_episodic_sgd_recipe_with_step_decays_at_fractions_of_the_budget(tmp_path):
    cfg = _tiny(tmp_path, "metaoptnet.yaml", "episodic.meta_iterations=300", "episodic.meta_batch_size=1",
                "data.queries=2", "train.log_every=50", "train.validate=false", "episodic.lr_decay_at=[0.34,0.67]")
    assert (cfg.episodic.optimizer, cfg.episodic.meta_lr, cfg.episodic.nesterov) == ("sgd", 0.1, True)
    pipeline.train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "train" / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in rows if r.get("kind") == "step"}
    # 100-iteration "epochs": 0.34 and 0.67 of 300 iterations fall at the ends of epochs 1 and 2
    assert lr[50] == pytest.approx(0.1) and lr[100] == pytest.approx(0.1)
    assert lr[150] == pytest.approx(0.01) and lr[250] == pytest.approx(0.001)
    state = torch.load(tmp_path / "run" / "train" / "final.pt", map_location="cpu", weights_only=True)
    group = state["optimizer"]["param_groups"][0]
    assert group["nesterov"] and group["momentum"] == 0.9 and group["weight_decay"] == 0.0005
    # the default episodic recipe is unchanged: Adam, constant
    default = _tiny(tmp_path, "protonet.yaml")
    assert (default.episodic.optimizer, default.episodic.lr_decay_at) == ("adam", [])


def test_student_trains_as_long_as_its_teacher_unless_told(tmp_path):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.yaml").write_text(to_yaml(load_config(CONFIGS / "ce.yaml", ["train.epochs=7"])))
    cfg = load_config(CONFIGS / "rfs_distill.yaml", [f"distill.teacher={teacher}", "train.epochs=3"])
    assert cfg.distill.epochs is None and pipeline.distill_epochs(cfg) == 7      # the teacher's, not this config's
    told = load_config(CONFIGS / "rfs_distill.yaml", [f"distill.teacher={teacher}", "distill.epochs=2"])
    assert pipeline.distill_epochs(told) == 2
    own = load_config(CONFIGS / "scl_distill.yaml", ["train.epochs=5"])             # teacher trained by this config
    assert pipeline.distill_epochs(own) == 5


def test_a_run_from_before_a_changed_default_is_refused_not_reused(tmp_path):
    """Matching Networks runs trained before embed.matching_scale existed used raw cosines: the new
    default (a learned scale) must not reuse them."""
    cfg = load_config(CONFIGS / "matchingnet.yaml", [f"run_dir={tmp_path}"])
    stamp_run(cfg)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "final.pt").write_bytes(b"x")
    check_run(cfg)                                        # stamped by this version: reused
    path = tmp_path / runs.SETTINGS_FILE
    record = json.loads(path.read_text())
    for key in runs.OLDER_BEHAVIOUR:
        del record["settings"][key]                       # as an older version wrote it
    path.write_text(json.dumps(record))
    with pytest.raises(SettingsMismatch, match=r"embed.matching_scale: 1.0 \(trained before the key existed\) there, 10.0 now"):
        check_run(cfg)
    old = load_config(CONFIGS / "matchingnet.yaml", [f"run_dir={tmp_path}", "embed.matching_scale=1.0",
                                                      "embed.matching_learn_scale=false"])
    check_run(old)                                        # the old behaviour asked for explicitly: reused
