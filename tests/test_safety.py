"""No file runs code, no result is served for data or parents it was not computed from, and a
failed command leaves nothing behind (issue 23)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from scl_plugin import pipeline
from scl_plugin.bench import load_suite, run_suite, SuiteFailed
from scl_plugin.cli import bench_main, eval_main, train_main
from scl_plugin.config import load_config
from scl_plugin.training import load_checkpoint
from scl_plugin.training.checkpoint import UnsafeCheckpointError

from test_trust import TINY, copy_run, one_line_error, tiny, trained  # noqa: F401  (fixture)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


class Evil:
    """A pickle that runs a shell command when loaded (what a shared file could hold)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path) -> Path:
    """Replace ``path`` by a checkpoint-looking file whose unpickling would create ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Evil(marker), "meta": {}, "config": {}}, path)
    return path


def refused(capsys, marker: Path) -> str:
    err = one_line_error(capsys)
    assert not marker.exists(), "the pickled command ran"
    assert "would run code" in err and "system" in err and "weights_only=False" not in err, err
    return err


# ----------------------------------------------------------------------------- weights_only everywhere
def test_checkpoints_are_plain_data():
    """What the trainer writes loads with weights_only=True (numpy's RNG state made a tensor)."""
    import numpy as np
    from scl_plugin.utils import rng_state, set_rng_state
    np.random.seed(3)
    state = rng_state()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"rng-{os.getpid()}.pt"
    torch.save(state, path)
    loaded = torch.load(path, weights_only=True)
    path.unlink()
    want = np.random.rand(3)
    set_rng_state(loaded)
    assert np.array_equal(np.random.rand(3), want)


def test_load_checkpoint_refuses_code(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(UnsafeCheckpointError, match=r"would run code \(posix\.system\)"):
        load_checkpoint(plant(tmp_path / "x.pt", marker))
    assert not marker.exists()


def test_scl_eval_on_a_shared_run_runs_no_code(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    marker = tmp_path / "ran"
    plant(run / "train" / "final.pt", marker)
    assert eval_main([str(run), "data.test_episodes=2"]) == 2
    refused(capsys, marker)


def test_init_from_and_teacher_files_run_no_code(trained, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = plant(tmp_path / "evil.pt", marker)
    over = [*TINY[1:], f"data.cache_dir={tmp_path / 'cache'}", "data.queries=2", "episodic.meta_iterations=2",
            "episodic.meta_batch_size=1"]
    assert train_main([str(CONFIGS / "protonet.yaml"), *over, f"episodic.init_from={evil}",
                       f"run_dir={tmp_path / 'p'}"]) == 2
    refused(capsys, marker)
    assert not (tmp_path / "p").exists()                     # nothing left of a call that never trained
    teacher = copy_run(trained, tmp_path)
    plant(teacher / "train" / "final.pt", marker)
    assert train_main([str(CONFIGS / "scl_distill.yaml"), *over, "data.dataset=synthetic",
                       f"distill.teacher={teacher}", f"run_dir={tmp_path / 'd'}"]) == 2
    refused(capsys, marker)


def test_resume_and_suite_run_no_code(trained, tmp_path, capsys):
    marker = tmp_path / "ran"
    args = tiny(tmp_path, "r", "train.epochs=2", "train.max_steps=2", "train.save_every=1")
    assert train_main(args) == 0                             # paused mid-run: resumes from step-2.pt
    plant(tmp_path / "r" / "train" / "step-2.pt", marker)
    capsys.readouterr()
    assert train_main(args[:-2] + ["train.save_every=1"]) == 2
    refused(capsys, marker)
    # a suite whose finished run was replaced: that method fails, nothing runs
    suite = {"name": "s", "run_dir": str(tmp_path / "suite"), "overrides": TINY + [f"data.cache_dir={tmp_path / 'c'}"],
             "datasets": [{"name": "synthetic"}], "settings": [[5, 1]], "queries": 2, "test_episodes": 2,
             "methods": [{"name": "ce", "config": str(CONFIGS / "ce.yaml")}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    run_suite(load_suite(tmp_path / "s.yaml"))
    plant(tmp_path / "suite" / "synthetic" / "ce" / "train" / "final.pt", marker)
    with pytest.raises(SuiteFailed, match="would run code"):
        run_suite(load_suite(tmp_path / "s.yaml"))
    assert not marker.exists()


# ----------------------------------------------------------------------------- inputs are part of a run
def omniglot_roots(tmp_path):
    """Two roots with the real Omniglot zips: ``a`` as shipped, ``b`` with small1 / small2 swapped."""
    if not (OMNIGLOT / "images_background_small1.zip").is_file():
        pytest.skip("no ../shared/data/omniglot here")
    a, b = tmp_path / "a", tmp_path / "b"
    for root, (one, two) in ((a, ("1", "2")), (b, ("2", "1"))):
        root.mkdir()
        shutil.copy(OMNIGLOT / f"images_background_small{one}.zip", root / "images_background_small1.zip")
        shutil.copy(OMNIGLOT / f"images_background_small{two}.zip", root / "images_background_small2.zip")
    return a, b


def test_changed_data_is_a_changed_run(tmp_path, capsys):
    a, b = omniglot_roots(tmp_path)
    over = ["model.name=conv4", "model.kwargs.depth=2", "model.kwargs.hidden=8", "data.image_size=28",
            "data.augment=none", "train.epochs=1", "train.steps_per_epoch=2", "train.lr_decay_epochs=[1]",
            "train.validate=false", f"data.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}"]
    assert train_main([str(CONFIGS / "ce.yaml"), *over, f"data.root={a}"]) == 0
    final = tmp_path / "run" / "train" / "final.pt"
    stamp = final.stat().st_mtime_ns
    capsys.readouterr()
    assert train_main([str(CONFIGS / "ce.yaml"), *over, f"data.root={b}"]) == 2
    err = one_line_error(capsys)
    assert "other images" in err and f"data.root={b}" in err and "--restart" in err
    # the same files elsewhere (copied: new dates) are the same data: reused, not retrained
    c = tmp_path / "c"
    shutil.copytree(a, c)
    assert train_main([str(CONFIGS / "ce.yaml"), *over, f"data.root={c}"]) == 0
    assert "reused" in capsys.readouterr().out and final.stat().st_mtime_ns == stamp


def test_a_retrained_parent_makes_its_children_stale(tmp_path, capsys):
    suite = {"name": "p", "run_dir": str(tmp_path / "suite"),
             "overrides": TINY + [f"data.cache_dir={tmp_path / 'c'}", "data.queries=2",
                                  "episodic.meta_iterations=2", "episodic.meta_batch_size=1"],
             "datasets": [{"name": "synthetic"}], "settings": [[5, 1]], "queries": 2, "test_episodes": 4,
             "methods": [{"name": "ce", "config": str(CONFIGS / "ce.yaml")},
                         {"name": "child", "config": str(CONFIGS / "scl_protonet.yaml"), "init_from_method": "ce"}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite))
    run_suite(load_suite(path))
    child = tmp_path / "suite" / "synthetic" / "child"
    stamp = (child / "train" / "final.pt").stat().st_mtime_ns
    suite["methods"][0]["overrides"] = ["train.lr=0.01"]           # the parent changes
    path.write_text(yaml.safe_dump(suite))
    with pytest.raises(SuiteFailed) as e:
        run_suite(load_suite(path))
    msg = str(e.value)
    assert "ce: " in msg and "train.lr" in msg                     # the parent itself: other settings
    run_suite(load_suite(path), restart=True)                      # parent retrained, then the child
    assert (child / "train" / "final.pt").stat().st_mtime_ns != stamp
    # the parent's weights replaced outside the suite (same settings): the child is refused,
    # naming its parent, never reused; --restart retrains it from the new parent
    final = tmp_path / "suite" / "synthetic" / "ce" / "train" / "final.pt"
    state = torch.load(final, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] * 0.5
    torch.save(state, final)
    stamp = (child / "train" / "final.pt").stat().st_mtime_ns
    with pytest.raises(SuiteFailed) as e:
        run_suite(load_suite(path))
    msg = str(e.value)
    assert msg.count("child: ") == 1 and "starts from its parent episodic.init_from=" in msg and "ce: " not in msg
    assert (child / "train" / "final.pt").stat().st_mtime_ns == stamp
    run_suite(load_suite(path), restart=True)
    assert (child / "train" / "final.pt").stat().st_mtime_ns != stamp
    assert run_suite(load_suite(path))                              # consistent again: reused


# ----------------------------------------------------------------------------- leftovers, messages, logs
def test_a_failed_call_leaves_nothing_behind(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(tiny(tmp_path, "run", "model.kwargs.bogus=1")) == 2      # fails after the stamp
    one_line_error(capsys)
    assert not run.exists()
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert train_main(tiny(tmp_path, "run", "data.dataset=mini-imagenet", f"data.root={tmp_path / 'none'}")) == 2
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]             # only what was there


def test_unfinished_and_corrupt_runs_name_the_right_fix(trained, tmp_path, capsys):
    args = tiny(tmp_path, "u", "train.epochs=2", "train.max_steps=2")
    assert train_main(args) == 0
    capsys.readouterr()
    assert eval_main([str(tmp_path / "u")]) == 1
    err = one_line_error(capsys)
    assert "has not finished training" in err and "scl-train" in err and "resume" in err
    assert "delete" not in err and "--restart" not in err
    run = copy_run(trained, tmp_path)
    final = run / "train" / "final.pt"
    final.write_bytes(final.read_bytes()[:200])
    assert eval_main([str(run)]) == 1
    err = one_line_error(capsys)
    assert err.count("truncated or corrupt") == 1 and "does not fit" not in err


def test_resume_logs_the_same_rows_with_the_same_numbers(tmp_path):
    steps = ["train.epochs=2", "train.steps_per_epoch=5", "train.log_every=2", "train.save_every=1"]
    pipeline.train(load_config(*_split(tiny(tmp_path, "whole", *steps))))
    pipeline.train(load_config(*_split(tiny(tmp_path, "parts", *steps, "train.max_steps=3"))))  # mid-window
    pipeline.train(load_config(*_split(tiny(tmp_path, "parts", *steps))))
    rows = [(tmp_path / r / "train" / "metrics.jsonl").read_text().splitlines() for r in ("whole", "parts")]
    assert len(rows[0]) == 7 and rows[0] == rows[1]          # 5 step rows + 2 epoch rows, bit for bit


def _split(args):
    return args[0], args[1:]


def test_a_killed_call_counts_up_to_its_last_checkpoint(tmp_path):
    args = tiny(tmp_path, "run", "train.epochs=400", "train.steps_per_epoch=50", "train.save_every=5")
    proc = subprocess.Popen([sys.executable, "-m", "scl_plugin.cli", "train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    train = tmp_path / "run" / "train"
    deadline = time.time() + 120
    while len(list(train.glob("step-*.pt"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)                        # no handler runs
    proc.wait(timeout=60)
    timing = json.loads((tmp_path / "run" / "train_time.json").read_text())
    assert timing["calls"] == 1 and timing["seconds"] > 0.5


def test_progress_lines_without_a_terminal(tmp_path, capsys):
    assert train_main(tiny(tmp_path, "run", "train.progress_every_s=0")) == 0
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("[ce] step")]
    assert len(lines) >= 4 and "steps/s" in lines[1] and "ETA" in lines[1] and "loss" in lines[1]
    logged = (tmp_path / "run" / "train" / "train.log").read_text().splitlines()
    assert len(logged) == len(lines) and logged[-1].endswith("(finished)")


def test_a_planted_data_cache_runs_no_code(tmp_path):
    """Omniglot-small's decoded-zip cache is a torch file too: a planted one is never unpickled
    into code; it is rebuilt from the zips, giving the same images."""
    from scl_plugin.data import load_splits
    from scl_plugin.data.registry import clear_cache
    if not (OMNIGLOT / "images_background_small1.zip").is_file():
        pytest.skip("no ../shared/data/omniglot here")
    first = load_splits("omniglot-small", OMNIGLOT, image_size=28, cache_dir=tmp_path / "cache")
    marker = tmp_path / "ran"
    planted = list((tmp_path / "cache").rglob("*.pt"))
    assert planted
    for p in planted:
        plant(p, marker)
    clear_cache()
    again = load_splits("omniglot-small", OMNIGLOT, image_size=28, cache_dir=tmp_path / "cache")
    clear_cache()
    assert not marker.exists()
    assert torch.equal(again["train"].source.base.images if hasattr(again["train"].source, "base")
                       else again["train"].source.images,
                       first["train"].source.base.images if hasattr(first["train"].source, "base")
                       else first["train"].source.images)
