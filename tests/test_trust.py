"""Runs you can trust (issue 18): no result reused for other settings, one-line errors, plain API."""
import json
import os
import shutil
import stat
from types import SimpleNamespace

import pytest
import torch
import yaml

from scl_plugin import bench, pipeline
from scl_plugin.bench import SuiteFailed, load_suite, method_config, run_suite
from scl_plugin.cli import bench_main, eval_main, train_main
from scl_plugin.config import ConfigError, load_config
from scl_plugin.runs import stamp_run

from test_bench import CONFIGS

TINY = ["data.dataset=synthetic", "data.image_size=16", "data.augment=none", "data.batch_size=32",
        "data.val_episodes=3", "train.validate=false", "model.name=conv4", "model.kwargs.depth=2",
        "model.kwargs.hidden=16", "train.epochs=1", "train.steps_per_epoch=3", "train.lr_decay_epochs=[1]",
        "train.log_every=1"]


def tiny(tmp_path, run="run", *extra):
    return [str(CONFIGS / "ce.yaml"), *TINY, f"data.cache_dir={tmp_path / 'cache'}",
            f"run_dir={tmp_path / run}", *extra]


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny finished CE run; tests copy it before changing anything."""
    tmp = tmp_path_factory.mktemp("trained")
    assert train_main(tiny(tmp)) == 0
    return tmp


def copy_run(trained, tmp_path):
    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


# ----------------------------------------------------------------------------- settings fingerprints
def test_changed_weight_settings_are_refused_not_reused(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    final, config = run / "train" / "final.pt", (run / "config.yaml").read_text()
    stamp = final.stat().st_mtime_ns
    assert train_main(tiny(tmp_path, "run", "train.epochs=4", "train.lr=0.01")) == 2
    err = one_line_error(capsys)
    assert "train.epochs: 1 there, 4 now" in err and "train.lr: 0.05 there, 0.01 now" in err
    assert "another run_dir" in err and "--restart" in err
    assert (run / "config.yaml").read_text() == config and final.stat().st_mtime_ns == stamp
    # evaluation-only settings never force retraining and never rewrite config.yaml
    assert train_main(tiny(tmp_path, "run", "eval.C=0.5", "data.test_episodes=7", "train.log_every=3")) == 0
    assert final.stat().st_mtime_ns == stamp and (run / "config.yaml").read_text() == config
    # the way out: --restart (anywhere on the line) retrains and records the new settings
    assert train_main(["--restart", *tiny(tmp_path, "run", "train.epochs=2")]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    assert final.stat().st_mtime_ns != stamp


def test_legacy_run_is_refused_until_stamped(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    (run / "settings.json").unlink()                       # as written by the previous version
    assert train_main(tiny(tmp_path)) == 2
    assert "stamp_run" in one_line_error(capsys)
    stamp_run(load_config(tiny(tmp_path)[0], tiny(tmp_path)[1:]))
    assert train_main(tiny(tmp_path)) == 0
    # stamped with other settings than asked now: refused again, naming the key
    assert train_main(tiny(tmp_path, "run", "seed=3")) == 2
    assert "seed: 0 there, 3 now" in one_line_error(capsys)


def test_resume_sums_train_time_and_logs_each_step_once(tmp_path):
    args = tiny(tmp_path, "run", "train.epochs=2")
    cfg = load_config(args[0], args[1:] + ["train.max_steps=4"])          # stops mid-epoch 2
    pipeline.train(cfg)
    first = json.loads((tmp_path / "run" / "train_time.json").read_text())
    assert first["calls"] == 1 and not (tmp_path / "run" / "train" / "final.pt").exists()
    # step-4.pt is the newest checkpoint: pretend the process died after logging steps 5 and 6
    metrics = tmp_path / "run" / "train" / "metrics.jsonl"
    with open(metrics, "a") as f:
        for s in (5, 6):
            f.write(json.dumps({"kind": "step", "step": s, "epoch": 1, "loss": 1.0}) + "\n")
    pipeline.train(load_config(args[0], args[1:]))
    total = json.loads((tmp_path / "run" / "train_time.json").read_text())
    assert total["calls"] == 2 and total["seconds"] >= first["seconds"]
    steps = [r["step"] for r in map(json.loads, metrics.read_text().splitlines()) if r["kind"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]


# ----------------------------------------------------------------------------- suites
def write_suite(tmp_path, **extra):
    suite = {"name": "trust", "run_dir": str(tmp_path / "suite"),
             "overrides": TINY + [f"data.cache_dir={tmp_path / 'cache'}"],
             "datasets": [{"name": "synthetic", "label": "syn->syn", "overrides": ["data.test_dataset=synthetic"]}],
             "settings": [[5, 1]], "queries": 5, "test_episodes": 6,
             "methods": [{"name": "ce", "config": str(CONFIGS / "ce.yaml")},
                         {"name": "ce_seed1", "config": str(CONFIGS / "ce.yaml"), "overrides": ["seed=1"]}]}
    suite.update(extra)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


class Counter:
    def __init__(self, monkeypatch, module, name):
        self.n, real = 0, getattr(module, name)

        def counted(*a, **k):
            self.n += 1
            return real(*a, **k)
        monkeypatch.setattr(module, name, counted)


def test_suite_caches_are_keyed_by_everything_that_changes_a_number(tmp_path, monkeypatch, capsys):
    path = write_suite(tmp_path)
    rows = run_suite(load_suite(path))
    assert [r["dataset"] for r in rows] == ["syn->syn"] * 2
    ce = tmp_path / "suite" / "synthetic" / "ce"
    # cross-domain: the training run's config names no test set; evaluations live per test set
    assert yaml.safe_load((ce / "config.yaml").read_text())["data"]["test_dataset"] is None
    assert [p.parent.name for p in ce.glob("eval/*/*.json")] == ["syn-to-syn"]
    assert not list(ce.rglob("*>*"))
    fewshot, tests = Counter(monkeypatch, bench, "build_fewshot"), Counter(monkeypatch, bench, "build_test_tasks")
    evals = Counter(monkeypatch, bench, "_evaluate")
    again = run_suite(load_suite(path))                      # fully cached: no image data loaded at all
    assert (fewshot.n, tests.n, evals.n) == (0, 0, 0)
    assert [r["acc"] for r in again] == [r["acc"] for r in rows]
    stamp = (ce / "train" / "final.pt").stat().st_mtime_ns
    for override in ("queries=3", "eval.C=0.01", "episode_seed=4", "test_episodes=5"):
        before = evals.n
        run_suite(load_suite(path, [override]))
        assert evals.n == before + 2, override                 # recomputed for both methods, never served stale
    assert tests.n == 4 and fewshot.n == 0                      # each test split built once per invocation
    assert (ce / "train" / "final.pt").stat().st_mtime_ns == stamp   # evaluation settings never retrain
    os.utime(ce / "train" / "final.pt", ns=(stamp + 10**9, stamp + 10**9))   # touched, same weights
    before = evals.n
    run_suite(load_suite(path))
    assert evals.n == before                                    # caches follow content, not file dates
    state = torch.load(ce / "train" / "final.pt", weights_only=True)     # "retrained": other weights
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] + 1e-3
    torch.save(state, ce / "train" / "final.pt")
    run_suite(load_suite(path))
    assert evals.n == before + 1                                # only ce's cache is invalid


def test_suite_refuses_changed_training_settings_and_finishes_the_other_methods(tmp_path, capsys):
    path = write_suite(tmp_path)
    run_suite(load_suite(path))
    with pytest.raises(SuiteFailed, match=r"ce: .*train.epochs: 1 there, 2 now.*scl-bench --restart"):
        run_suite(load_suite(path, ["train.epochs=2"]))
    ce_final = tmp_path / "suite" / "synthetic" / "ce_seed1" / "train" / "final.pt"
    stamp = ce_final.stat().st_mtime_ns
    run_suite(load_suite(path, ["train.epochs=2"]), restart=True)          # scl-bench --restart: retrain
    assert ce_final.stat().st_mtime_ns != stamp
    assert run_suite(load_suite(path, ["train.epochs=2"]))                   # now reused as is
    assert ce_final.stat().st_mtime_ns != stamp
    # one damaged checkpoint: the other method is still evaluated and the failure reported at the end
    final = tmp_path / "suite" / "synthetic" / "ce" / "train" / "final.pt"
    final.write_bytes(final.read_bytes()[:100])
    capsys.readouterr()
    assert bench_main([str(path), "train.epochs=2"]) == 1
    err = one_line_error(capsys)
    assert "syn->syn / ce:" in err and "truncated or corrupt" in err and "--restart" in err
    # the last complete table stays; what this run has is the partial table, paired likewise
    table = json.loads((tmp_path / "suite" / "results.json").read_text())
    assert [r["method"] for r in table] == ["ce", "ce_seed1"]
    partial = json.loads((tmp_path / "suite" / "results.partial.json").read_text())
    assert [r["method"] for r in partial] == ["ce_seed1"]


def test_suite_override_precedence(tmp_path):
    path = write_suite(tmp_path, overrides=["train.epochs=3", "data.root=rel/suite"],
                       datasets=[{"name": "synthetic", "overrides": ["train.lr=0.5"]}],
                       methods=[{"name": "ce", "config": str(CONFIGS / "ce.yaml"),
                                 "overrides": ["train.epochs=4", "train.lr=0.4", "train.momentum=0.4"]}])
    suite = load_suite(path, ["test_episodes=9", "train.lr=0.6"])
    ds, spec = suite.datasets[0], suite.methods[0]
    cfg = method_config(suite, spec, ds, tmp_path / "suite")
    assert suite.test_episodes == 9
    # command line > dataset entry > method entry > suite file
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.momentum) == (0.6, 4, 0.4)
    assert cfg.data.root == str(tmp_path / "rel" / "suite")       # relative to the suite file
    cfg = method_config(load_suite(path, ["data.root=cli/rel"]), spec, ds, tmp_path / "suite")
    assert cfg.data.root == os.path.abspath("cli/rel")              # command line: working directory
    with pytest.raises(ConfigError, match="train.epochz"):
        load_suite(path, ["train.epochz=1"])
    cfg = method_config(suite := load_suite(path, ["methods.0.overrides=[train.epochs=7]"]), suite.methods[0], ds,
                        tmp_path / "suite")
    assert cfg.train.epochs == 7                                    # an entry's own list, set from the command line


# ----------------------------------------------------------------------------- scl-eval
def test_eval_builds_only_the_test_split_and_refuses_model_overrides(trained, monkeypatch, capsys):
    run = str(trained / "run")
    assert eval_main([run, "model.name=resnet12"]) == 2
    assert "model.name cannot change in scl-eval" in one_line_error(capsys)

    def no_training_data(*a, **k):
        raise AssertionError("scl-eval built the train/validation splits")
    monkeypatch.setattr(pipeline, "build_fewshot", no_training_data)
    assert eval_main([run, "data.test_episodes=4", "eval.C=0.5"]) == 0
    assert "| ce" in capsys.readouterr().out
    assert eval_main([run, "data.ways=25"]) == 2
    err = one_line_error(capsys)
    assert "test split" in err and "has 20" in err


# ----------------------------------------------------------------------------- one-line errors
def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    assert train_main(tiny(tmp_path, "run", "model.name=resnet1234")) == 2
    assert "resnet1234" in one_line_error(capsys)
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert train_main(tiny(tmp_path, "afile/run")) == 2
    assert "run_dir" in one_line_error(capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ce\ntrain:\n  epochs: [1,\n  lr: 2\n")
    assert train_main([str(bad)]) == 2
    assert f"{bad}:5:1: invalid YAML" in one_line_error(capsys)
    assert train_main(tiny(tmp_path, "run", "train.lr_decay_epochs=5")) == 2
    err = one_line_error(capsys)
    assert "train.lr_decay_epochs" in err and "[60,80]" in err and "AnyNode" not in err
    assert train_main(tiny(tmp_path, "run", "data.dataset=omniglot-small", "data.root=rel/nowhere")) == 2
    assert os.path.abspath("rel/nowhere") in one_line_error(capsys)          # the absolute path it tried
    assert train_main(tiny(tmp_path, "run", "data.queries=0")) == 2
    assert "data.queries" in one_line_error(capsys)
    assert train_main([str(CONFIGS / "scl.yaml"), "--print-config", "train.epochs=3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 3


def test_spatial_loss_needs_a_2x2_map_and_sizes_are_checked():
    shape = SimpleNamespace(num_classes=5, channels=1, image_size=28)
    cfg = load_config(CONFIGS / "scl.yaml", ["model.kwargs.depth=4"])
    with pytest.raises(ConfigError, match=r"gives 1x1 on 28px.*data.image_size or model.kwargs.depth=3"):
        pipeline.build_method(cfg, shape)
    assert pipeline.build_method(load_config(CONFIGS / "scl.yaml"), shape).backbone.spatial_shape == (3, 3)
    assert pipeline.build_method(load_config(CONFIGS / "ce.yaml", ["model.kwargs.depth=4"]), shape)  # no SC: fine
    cfg = load_config(CONFIGS / "ce.yaml", ["model.name=convnext_atto", "model.kwargs={}"])
    with pytest.raises(ConfigError, match=r"convnext_atto.*28x28.*smallest size that works is 32"):
        pipeline.build_method(cfg, shape)


def test_shipped_scl_rows_are_the_scl_recipe(tmp_path):
    """A suite row named "scl" is configs/scl.yaml's recipe (CE + SC, no GC; weights may be the
    paper's per-dataset ones); CE + GC + SC rows carry another name."""
    scl = load_config(CONFIGS / "scl.yaml")
    assert scl.loss.lambda_spatial > 0 and scl.loss.lambda_global == 0
    for path in sorted((CONFIGS / "suites").glob("*.yaml")):
        suite = load_suite(path)
        for spec in (m for m in suite.methods if m.name == "scl"):
            cfg = method_config(suite, spec, suite.datasets[0], tmp_path)
            if spec.name == "scl":
                assert cfg.method == "scl" and cfg.loss.lambda_global == 0 < cfg.loss.lambda_spatial, path.name
                assert cfg.loss.lambda_spatial / cfg.loss.lambda_ce == scl.loss.lambda_spatial / scl.loss.lambda_ce


def test_files_get_the_users_umask(tmp_path):
    from scl_plugin.utils import atomic_write_text
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_multi_gpu_launch_without_gpus_is_detected():
    from scl_plugin.distributed import check_launch
    with pytest.raises(ConfigError, match="ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2"):
        check_launch(1, {"WORLD_SIZE": "2"})
    check_launch(2, {"WORLD_SIZE": "2"})
    check_launch(1, {})


# ----------------------------------------------------------------------------- plain API
def test_plain_api():
    from scl_plugin.algorithms import SCL, Distiller, MAMLMethod, ProtoNet
    from scl_plugin.backbones import Backbone, create_backbone
    backbone = create_backbone("conv4", in_chans=1, image_size=28, depth=3, hidden=16)
    assert backbone.spatial_shape == (3, 3) and backbone.in_chans == 1
    with pytest.raises(ValueError, match="1 input channel.*in_chans=3"):
        backbone(torch.zeros(2, 3, 28, 28))
    scl = SCL(backbone, 5, lambda_spatial=1.0)
    assert scl.cfg.lambda_spatial == 1.0 and scl.attention is not None
    with pytest.raises(TypeError, match="lamda_spatial"):
        SCL(backbone, 5, lamda_spatial=1.0)
    xs, ys = torch.randn(6, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(TypeError):
        scl.adapt(xs, ys, c=0.001)
    assert scl.adapt(xs, ys, C=0.5)(xs).shape == (6, 3)
    with pytest.raises(ValueError, match="0..K-1"):
        scl.adapt(xs, torch.tensor([3, 3, 7, 7, 9, 9]))
    proto = ProtoNet(backbone, ways=3, shots=2, queries=0).train()
    assert proto.adapt(xs, ys)(xs).shape == (6, 3) and proto.training and backbone.training
    with pytest.raises(ValueError, match="0..K-1"):
        proto.adapt(xs, ys + 1)
    for obj in (SCL, ProtoNet, MAMLMethod, Distiller, Backbone, create_backbone):
        assert "Example" in (obj.__doc__ or "") or "::" in (obj.__doc__ or ""), obj


def test_a_killed_training_still_counts_its_time(tmp_path):
    """SIGTERM (kill, a scheduler's limit) ends training like Ctrl-C: exit 130, checkpoints kept,
    and the call's training time recorded (before, the run's total silently missed the call)."""
    import signal
    import subprocess
    import sys
    import time
    args = tiny(tmp_path, "run", "train.epochs=200", "train.steps_per_epoch=50", "train.save_every=1")
    proc = subprocess.Popen([sys.executable, "-m", "scl_plugin.cli", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    train = tmp_path / "run" / "train"
    deadline = time.time() + 120
    while not list(train.glob("step-*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and not (train / "final.pt").exists()
    timing = json.loads((tmp_path / "run" / "train_time.json").read_text())
    assert timing["calls"] == 1 and timing["seconds"] > 0


def test_every_episodic_method_is_fingerprinted_as_episodic():
    """Episodic methods train with episodic.* settings only: changing the flat-training lr must
    not refuse their runs, changing the meta learning rate must (and the reverse for CE)."""
    from scl_plugin.runs import weight_settings
    # every method trained by the episodic loop (written out here, not taken from the package)
    for method in ("protonet", "maml", "fomaml", "scl_protonet", "anil", "metasgd", "metaoptnet",
                   "r2d2", "meta_baseline", "matchingnet"):
        cfg = load_config(str(CONFIGS / "protonet.yaml"), [f"method={method}"])
        keys = weight_settings(cfg)
        assert "episodic.meta_lr" in keys and "train.lr" not in keys and "loss.lambda_spatial" not in keys, method
    keys = weight_settings(load_config(str(CONFIGS / "ce.yaml")))
    assert "train.lr" in keys and not any(k.startswith("episodic.") for k in keys)


def test_a_run_being_trained_elsewhere_is_refused_in_one_line(tmp_path, capsys):
    """Two processes training one run_dir would interleave checkpoints: the second stops at
    once (exit 2, one line naming the other process); once the first is done it can go on."""
    from scl_plugin import runs
    args = tiny(tmp_path)
    run_dir = tmp_path / "run"
    with runs.training_lock(run_dir):      # "another process" (flock is per open file)
        assert train_main(args) == 2
        err = one_line_error(capsys)
        assert "being trained by another process" in err and str(os.getpid()) in err
    assert not list((run_dir / "train").glob("*.pt"))
    assert train_main(args) == 0 and (run_dir / "train" / "final.pt").exists()
