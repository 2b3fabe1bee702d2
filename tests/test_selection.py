"""eval.select: test-time settings chosen on validation episodes only, recorded, cached by choice."""
import json

import pytest
import yaml

from scl_plugin import bench, pipeline
from scl_plugin.bench import load_suite, run_suite
from scl_plugin.config import ConfigError, load_config
from scl_plugin import data as scl_data
from scl_plugin.data import fewshot

from test_bench import CONFIGS, TINY

SELECT = "eval.select={episodic.eval_inner_steps: [1, 4], episodic.eval_lr_scale: [1.0, 0.25]}"


def _suite(tmp_path, select=SELECT):
    suite = {
        "name": "tiny", "run_dir": str(tmp_path / "suite"),
        "overrides": [o.format(cache=tmp_path / "cache") for o in TINY] + ["data.val_episodes=6"],
        "datasets": [{"name": "synthetic"}], "settings": [[5, 1], [5, 5]], "queries": 3, "test_episodes": 6,
        "methods": [{"name": "maml", "config": str(CONFIGS / "fomaml.yaml"),
                     "overrides": ["data.queries=3", "episodic.meta_iterations=6", select]}],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return load_suite(path)


@pytest.fixture
def spy(monkeypatch):
    """Records, in order, which split each evaluation's episodes came from and every read of a
    test split; selection must only ever see validation episodes."""
    log = []
    made = {}
    real_val, real_test, real_splits, real_eval = (fewshot.build_val_tasks, bench.build_test_tasks,
                                                   fewshot._splits, pipeline.evaluate)

    def val_tasks(cfg):
        t = real_val(cfg)
        made[id(t)] = "val"
        return t

    def test_tasks(cfg):
        t = real_test(cfg)
        made[id(t)] = "test"
        return t

    def splits(cfg, test=False):
        if test:
            log.append(("read", "test"))
        return real_splits(cfg, test)

    def evaluate(method, cfg, tasks, *args, **kwargs):
        log.append(("evaluate", made.get(id(tasks), "?"), cfg.episodic.eval_inner_steps, cfg.episodic.eval_lr_scale))
        return real_eval(method, cfg, tasks, *args, **kwargs)

    for module in (bench, fewshot):          # the harness's and scl-eval's (imported at call time)
        monkeypatch.setattr(module, "build_val_tasks", val_tasks)
    for module in (bench, scl_data):
        monkeypatch.setattr(module, "build_test_tasks", test_tasks)
    monkeypatch.setattr(fewshot, "_splits", splits)
    monkeypatch.setattr(bench.pipeline, "evaluate", evaluate)
    return log


def test_selection_reads_validation_only_records_and_caches_the_choice(tmp_path, spy):
    suite = _suite(tmp_path)
    rows = run_suite(suite)
    folder = tmp_path / "suite" / "synthetic" / "maml" / "eval" / "synthetic"
    for row, (ways, shots) in zip(rows, suite.settings):
        # every candidate of the grid scored on validation episodes, then one test evaluation
        record = json.loads(next(folder.glob(f"select-{ways}w{shots}s-*.json")).read_text())
        assert [c["settings"] for c in record["candidates"]] == [
            {"episodic.eval_inner_steps": s, "episodic.eval_lr_scale": r} for s in (1, 4) for r in (1.0, 0.25)]
        best = max(record["candidates"], key=lambda c: c["acc"])      # first of equals: max keeps the first
        assert record["chosen"] == best["settings"]
        assert record["key"]["episode"]["split"] == "val"
        chosen = record["chosen"]
        assert row["test_time"] == (f"eval_inner_steps={chosen['episodic.eval_inner_steps']}, "
                                    f"eval_lr_scale={chosen['episodic.eval_lr_scale']} (val)")
        test = json.loads(next(folder.glob(f"{ways}w{shots}s-6ep-*.json")).read_text())
        assert test["key"]["test_time"] == chosen        # the choice is in the test cache key
    evaluations = [e for e in spy if e[0] == "evaluate"]
    assert [e[1] for e in evaluations] == ["val"] * 4 + ["test"] + ["val"] * 4 + ["test"]
    # the test split is first read (for its fingerprint) after the first selection finished
    val_done = [i for i, e in enumerate(spy) if e[:2] == ("evaluate", "val")][3]
    assert spy.index(("read", "test")) > val_done
    test_evals = [e for e in evaluations if e[1] == "test"]
    assert [(e[2], e[3]) for e in test_evals] == [
        tuple(json.loads(next(folder.glob(f"select-{w}w{s}s-*.json")).read_text())["chosen"].values())
        for w, s in suite.settings]
    # a rerun is fully cached: no evaluation at all
    spy.clear()
    assert [r["acc"] for r in run_suite(suite)] == [r["acc"] for r in rows]
    assert not [e for e in spy if e[0] == "evaluate"]
    # other candidates: a new selection (validation only) and a test evaluation keyed by its choice
    run_suite(_suite(tmp_path, "eval.select={episodic.eval_inner_steps: [2]}"))
    assert [e[1:] for e in spy if e[0] == "evaluate"] == [("val", 2, 1.0), ("test", 2, 1.0)] * 2


def test_select_refuses_settings_that_change_the_weights_or_that_the_method_ignores():
    with pytest.raises(ConfigError, match="eval.select.episodic.inner_lr.*only test-time settings"):
        load_config(CONFIGS / "maml.yaml", ["eval.select={episodic.inner_lr: [0.1, 0.4]}"])
    with pytest.raises(ConfigError, match="protonet does not read episodic.eval_inner_steps"):
        load_config(CONFIGS / "protonet.yaml", ["eval.select={episodic.eval_inner_steps: [1, 3]}"])
    with pytest.raises(ConfigError, match="eval.select.episodic.eval_inner_steps.*candidate 'x'"):
        load_config(CONFIGS / "maml.yaml", ["eval.select={episodic.eval_inner_steps: [1, x]}"])
    with pytest.raises(ConfigError, match="non-empty list"):
        load_config(CONFIGS / "maml.yaml", ["eval.select={eval.C: []}"])
    cfg = load_config(CONFIGS / "ce.yaml", ["eval.select={eval.C: [0.1, 1.0, 10.0]}"])   # logistic regression's C
    assert cfg.eval.select == {"eval.C": [0.1, 1.0, 10.0]}


def test_scl_eval_chooses_on_validation_too(tmp_path, capsys, spy):
    from scl_plugin.cli import eval_main, train_main
    from test_bench import TINY
    overrides = [o.format(cache=tmp_path / "cache") for o in TINY] + [
        f"run_dir={tmp_path / 'run'}", "data.dataset=synthetic", "data.queries=3", "episodic.meta_iterations=4"]
    assert train_main([str(CONFIGS / "fomaml.yaml"), *overrides]) == 0
    capsys.readouterr()
    spy.clear()
    assert eval_main([str(tmp_path / "run"), "eval.select={episodic.eval_inner_steps: [1, 2]}",
                      "data.test_episodes=4"]) == 0
    out = capsys.readouterr().out
    assert "chose eval_inner_steps=" in out and "(val)" in out
    assert [e[1] for e in spy if e[0] == "evaluate"] == ["val", "val", "test"]   # 2 candidates, then the test
    assert spy.index(("read", "test")) > 1
