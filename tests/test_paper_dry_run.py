"""benchmarks/perf/paper_dry_run.py end to end on tiny data: one paper config trains, validates and
scores its protocol episodes through the pipeline, and the script prints its table and, last, the
JSON it writes (the keys a reproduction is planned with)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "perf" / "paper_dry_run.py"


def _script():
    spec = importlib.util.spec_from_file_location("paper_dry_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_dry_run_on_tiny_data(tmp_path, capsys):
    dry = _script()
    out = tmp_path / "dry.json"
    before = dry.RESULTS.stat().st_mtime_ns if dry.RESULTS.exists() else None
    dry.main(["--device", "cpu", "--configs", "paper/cifarfs", "--steps", "1", "--episodes", "1", "--tiny-data",
              "--data-dir", str(tmp_path / "data"), "--out", str(out), "--set", "data.num_workers=0",
              "--set", "model.kwargs={widths: [8, 16, 16, 32]}"])     # sizes only: a narrow ResNet-12
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])                      # the last line is the JSON ...
    assert result == json.loads(out.read_text())          # ... that was written
    assert any(line.startswith("| paper/cifarfs | CPU |") for line in printed)
    assert (dry.RESULTS.stat().st_mtime_ns if dry.RESULTS.exists() else None) == before   # tiny: not a result
    assert result["device"] == "cpu" and result["tiny_data"] and result["steps"] == 1
    (entry,) = result["configs"]
    assert entry["config"] == "paper/cifarfs" and entry["image_size"] == 32 and entry["model"] == "resnet12"
    assert entry["images"] == {"train_generated": 5 * 20, "train_real": 38_400, "test_generated": 5 * 20,
                               "test_real": 12_000}
    train = entry["train"]
    assert train["views"] == 2 and train["warmup_included"] and train["steps_timed"] == 1
    assert train["images_per_s"] > 0 and train["peak_mb"] > 0
    assert entry["validation"]["s_per_episode"] > 0 and entry["distill"] is None      # CPU default: no distill
    for shots in ("1shot", "5shot"):
        assert entry["eval"][shots]["episodes"] == 1 and entry["eval"][shots]["s_per_episode"] > 0
    recipe, hours = entry["recipe"], entry["projected_hours"]
    assert recipe["epochs"] == 90 and recipe["steps_per_epoch"] == 38_400 // 8 and recipe["test_episodes"] == 600
    expected_train = 90 * (recipe["steps_per_epoch"] * train["step_s"]
                           + recipe["val_episodes"] * entry["validation"]["s_per_episode"]) / 3600
    assert abs(hours["train"] - expected_train) < 1e-9 * expected_train
    assert hours["distill"] == 0.0 and hours["distill_per_generation"] is None
    assert abs(hours["total"] - hours["train"] - hours["eval"]) < 1e-9 * hours["total"]
