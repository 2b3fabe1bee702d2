"""A suite under fire (issue 23): one method's data damaged, one checkpoint truncated, one parent
retrained between runs, an interruption by SIGTERM and a resume. The tables hold exactly the
rows that are valid, each failure is listed once, nothing stale is served, nothing is lost."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from scl_plugin.cli import bench_main

from test_trust import TINY, one_line_error

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write_folder_dataset(root: Path, seed: int = 0) -> Path:
    """``root/{train,val,test}/<class>/<image>.png`` (the class-folder layout), separable classes."""
    rng = np.random.default_rng(seed)
    for split, classes in (("train", 8), ("val", 5), ("test", 5)):
        for c in range(classes):
            pattern = rng.integers(0, 256, size=(4, 4, 3))
            folder = root / split / f"{split}{c:02d}"
            folder.mkdir(parents=True)
            for i in range(10):
                img = np.kron(pattern, np.ones((4, 4, 1))) + rng.normal(0, 12, size=(16, 16, 3))
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def bench(suite: Path, *extra, wait_for: Path = None):
    """``scl-bench`` as a user runs it; with ``wait_for``, SIGTERM once that file exists."""
    proc = subprocess.Popen([sys.executable, "-m", "scl_plugin.cli", "bench", str(suite), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait_for is not None:
        deadline = time.time() + 300
        while not list(wait_for.parent.glob(wait_for.name)) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def rows(path: Path):
    return [r["method"] for r in json.loads(path.read_text())] if path.exists() else None


def test_fault_injected_suite(tmp_path):
    good = write_folder_dataset(tmp_path / "data")
    bad = tmp_path / "damaged"
    shutil.copytree(good, bad)
    victim = bad / "train" / "train03" / "4.png"
    victim.write_bytes(victim.read_bytes()[:40])                   # a truncated image
    spec = {"name": "faults", "run_dir": str(tmp_path / "suite"),
            "overrides": TINY[1:] + [f"data.cache_dir={tmp_path / 'cache'}", "data.queries=2", "data.num_workers=0",
                                     "episodic.meta_iterations=4", "episodic.meta_batch_size=1"],
            "datasets": [{"name": "folder"}],
            "settings": [[5, 1]], "queries": 2, "test_episodes": 6, "reference": "ce",
            "methods": [{"name": "ce", "config": str(CONFIGS / "ce.yaml")},
                        {"name": "child", "config": str(CONFIGS / "scl_protonet.yaml"), "init_from_method": "ce"},
                        {"name": "trunc", "config": str(CONFIGS / "ce.yaml"), "overrides": ["seed=1"]},
                        {"name": "damaged", "config": str(CONFIGS / "ce.yaml"), "overrides": ["seed=2"]},
                        {"name": "slow", "config": str(CONFIGS / "ce.yaml"),
                         "overrides": ["seed=3", "train.epochs=600", "train.save_every=2"]}]}
    # the damaged method reads the damaged copy, the others the good one
    for m in spec["methods"]:
        m.setdefault("overrides", []).append(f"data.root={bad if m['name'] == 'damaged' else good}")
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(spec))
    out_dir, runs = tmp_path / "suite", tmp_path / "suite" / "folder"

    # 1. interrupted by SIGTERM while `slow` trains: what ran is kept as a partial table
    code, out, err = bench(suite, wait_for=runs / "slow" / "train" / "step-*.pt")
    assert code == 130, err
    assert rows(out_dir / "results.json") is None
    assert rows(out_dir / "results.partial.json") == ["ce", "child", "trunc"]
    assert rows(out_dir / "paired.partial.json") == ["child - ce", "trunc - ce"]
    assert "damaged: FAILED" in out and str(victim) in out and "Traceback" not in out + err
    child_final = runs / "child" / "train" / "final.pt"
    child_stamp = child_final.stat().st_mtime_ns

    # 2. faults between runs: trunc's checkpoint truncated, the parent retrained (--restart, other lr)
    final = runs / "trunc" / "train" / "final.pt"
    final.write_bytes(final.read_bytes()[:300])
    spec["methods"][0]["overrides"].append("train.lr=0.02")
    suite.write_text(yaml.safe_dump(spec))
    code, out, err = bench(suite, "--restart")
    assert code == 1, err
    error = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(error) == 1 and error[0].count("trunc: ") == 1 and error[0].count("damaged: ") == 1, err
    assert "truncated or corrupt" in error[0] and str(victim) in error[0]
    assert rows(out_dir / "results.partial.json") == ["ce", "child", "slow"]      # exactly the valid rows
    assert rows(out_dir / "results.json") is None                                  # never a partial one
    assert child_final.stat().st_mtime_ns != child_stamp                          # retrained from the new parent
    assert json.loads((runs / "slow" / "train_time.json").read_text())["calls"] == 2   # resumed, not redone
    assert "| child |" in out and "| slow |" in out                                # the table it has is printed

    # 3. the faults mended as the messages say: the complete table replaces the partial one
    final.unlink()                                                 # "delete it": resumes from its step checkpoint
    shutil.copy(good / "train" / "train03" / "4.png", victim)
    partial = json.loads((out_dir / "results.partial.json").read_text())
    code, out, err = bench(suite)
    assert code == 0, err
    table = json.loads((out_dir / "results.json").read_text())
    assert [r["method"] for r in table] == ["ce", "child", "trunc", "damaged", "slow"]
    assert rows(out_dir / "paired.json") == ["child - ce", "trunc - ce", "damaged - ce", "slow - ce"]
    assert not list(out_dir.glob("*.partial.*"))
    served = {r["method"]: r["acc"] for r in table}
    assert all(served[r["method"]] == r["acc"] for r in partial)   # reused rows are the ones computed last
    assert "reusing finished checkpoint" in err or "reusing finished checkpoint" in out


def test_suite_problems_known_before_training_stop_before_it(tmp_path, capsys):
    spec = {"name": "early", "run_dir": str(tmp_path / "suite"),
            "overrides": TINY + [f"data.cache_dir={tmp_path / 'cache'}"],
            "datasets": [{"name": "synthetic"}], "settings": [[5, 1]], "queries": 2, "test_episodes": 2,
            "methods": [{"name": "ce", "config": str(CONFIGS / "ce.yaml")},
                        {"name": "typo", "config": str(CONFIGS / "protonett.yaml")}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert bench_main([str(path)]) == 2
    assert "typo" in one_line_error(capsys) and not (tmp_path / "suite").exists()
    # a data root that holds no dataset: found before the first method trains
    spec["datasets"] = [{"name": "mini-imagenet", "overrides": [f"data.root={tmp_path / 'nowhere'}"]}]
    spec["methods"][1] = {"name": "late", "config": str(CONFIGS / "ce.yaml")}
    path.write_text(yaml.safe_dump(spec))
    assert bench_main([str(path)]) == 2
    err = one_line_error(capsys)
    assert "mini-imagenet" in err and "nowhere" in err and not (tmp_path / "suite").exists()
    spec["datasets"] = [{"name": "synthetic"}]
    spec["methods"][1] = {"name": "late", "config": str(CONFIGS / "protonet.yaml"), "init_from_method": "later"}
    path.write_text(yaml.safe_dump(spec))
    assert bench_main([str(path)]) == 2
    assert "init_from_method='later'" in one_line_error(capsys)
