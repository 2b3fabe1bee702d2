"""The benchmark harness end to end on tiny separable data (issue 7)."""
import json

import pytest
import yaml

from scl_plugin.bench import load_suite, run_suite
from scl_plugin.cli import bench_main, train_main
from scl_plugin.config import ConfigError

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"

TINY = [
    "data.image_size=16", "data.augment=none", "data.batch_size=32",
    "data.val_episodes=5", "data.cache_dir={cache}", "model.name=conv4", "model.kwargs.depth=2",
    "model.kwargs.hidden=16", "train.epochs=2", "train.lr_decay_epochs=[1]", "distill.epochs=1",
    "episodic.meta_iterations=20", "episodic.meta_batch_size=2", "train.log_every=5",
]


def write_suite(tmp_path, methods):
    suite = {
        "name": "tiny", "run_dir": str(tmp_path / "suite"),
        "overrides": [o.format(cache=tmp_path / "cache") for o in TINY],
        "datasets": [{"name": "synthetic"}],
        "settings": [[5, 1]], "queries": 5, "test_episodes": 20, "reference": "ce",
        "methods": methods,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


ALL_METHODS = [
    {"name": "ce", "config": str(CONFIGS / "ce.yaml")},
    {"name": "protonet", "config": str(CONFIGS / "protonet.yaml"), "overrides": ["data.queries=5"]},
    {"name": "maml", "config": str(CONFIGS / "fomaml.yaml"), "overrides": ["data.queries=5"]},
    {"name": "scl", "config": str(CONFIGS / "ablations/ce_gc_sc.yaml")},
    {"name": "scl_distill", "config": str(CONFIGS / "scl_distill.yaml"), "init_from_method": "scl",
     "overrides": ["loss.lambda_global=1.0"]},
    {"name": "scl_protonet", "config": str(CONFIGS / "scl_protonet.yaml"), "init_from_method": "scl",
     "overrides": ["data.queries=5"]},
]


def test_tiny_suite_all_methods(tmp_path, capsys):
    path = write_suite(tmp_path, ALL_METHODS)
    rows = run_suite(load_suite(path))
    assert [r["method"] for r in rows] == [m["name"] for m in ALL_METHODS]
    for r in rows:
        assert 0.0 <= r["acc"] <= 1.0
        assert r["acc"] > 0.4, r          # chance is 0.2 on 5-way separable data
        assert r["episodes"] == 20
    out = tmp_path / "suite"
    table = json.loads((out / "results.json").read_text())
    assert len(table) == len(ALL_METHODS)
    assert (out / "results.md").read_text().count("|") > 10
    assert (out / "results.csv").exists() and (out / "results.png").stat().st_size > 1000
    assert len(json.loads((out / "paired.json").read_text())) == len(ALL_METHODS) - 1
    # a fully cached rerun rebuilds every method (distilled student included) from its
    # checkpoints without data and serves the same numbers
    again = run_suite(load_suite(path))
    assert [(r["method"], r["acc"]) for r in again] == [(r["method"], r["acc"]) for r in rows]


def test_interrupted_suite_reuses_finished_checkpoint(tmp_path, capsys):
    methods = ALL_METHODS[:2]
    path = write_suite(tmp_path, methods)
    assert bench_main([str(path), "--max-methods", "1"]) == 0       # "killed" after the first method
    final = tmp_path / "suite" / "synthetic" / "ce" / "train" / "final.pt"
    assert final.exists()
    assert not (tmp_path / "suite" / "synthetic" / "protonet" / "train" / "final.pt").exists()
    stamp = final.stat().st_mtime_ns
    out = capsys.readouterr().out
    assert "stopping before protonet" in out
    assert bench_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "ce: reusing finished checkpoint" in out and "protonet: training" in out
    assert final.stat().st_mtime_ns == stamp                        # not retrained
    assert "| ce" in out and "| protonet" in out                    # table printed


def test_suite_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [{name: ce, config: x.yaml, overidez: []}]\n")
    with pytest.raises(ConfigError, match="overidez"):
        load_suite(bad)


def test_cli_config_error_is_one_line(tmp_path, capsys):
    code = train_main([str(CONFIGS / "scl.yaml"), "train.epochz=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: unknown config key 'train.epochz'"


def test_cli_data_error_is_one_line(tmp_path, capsys):
    code = train_main([str(CONFIGS / "scl.yaml"), f"data.root={tmp_path / 'nowhere'}", f"run_dir={tmp_path / 'r'}",
                       f"data.cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "nowhere" in err and "\n" not in err


def test_cli_too_many_ways(tmp_path, capsys):
    code = train_main([str(CONFIGS / "protonet.yaml"), "data.dataset=synthetic", "data.ways=50",
                       f"run_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "ways" in err and "\n" not in err


def test_cli_print_config_applies_overrides(capsys):
    assert train_main([str(CONFIGS / "scl.yaml"), "train.epochs=3", "model.name=resnet12", "--print-config"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["train"]["epochs"] == 3 and out["model"]["name"] == "resnet12" and out["method"] == "scl"
    assert out["loss"]["lambda_spatial"] == 1.0


@pytest.mark.parametrize("path", sorted((CONFIGS / "suites").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_suites_resolve(path):
    """Every suite (default, real-data, full-size GPU ones) and each of its method configs validates."""
    from scl_plugin.bench import method_config
    from scl_plugin.utils import expand
    suite = load_suite(path)
    for ds in suite.datasets:
        for spec in suite.methods:
            cfg = method_config(suite, spec, ds, expand(suite.run_dir))
            assert cfg.run_dir.endswith(f"{ds.name}/{spec.name}")
            if spec.init_from_method:
                assert (cfg.episodic.init_from or cfg.distill.teacher).endswith(spec.init_from_method)
