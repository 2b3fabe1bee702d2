"""Convergence of a run (scl_plugin.analysis.convergence) and the results-table sanity flags
(scl_plugin.evaluation.sanity)."""
import json
from pathlib import Path

import pytest

from scl_plugin.analysis.convergence import check_curve, convergence, final_stage, plot_curves, read_curve
from scl_plugin.config import load_config, to_yaml
from scl_plugin.evaluation.sanity import sanity_block, sanity_warnings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write_run(root: Path, config: str, overrides, curve, stage="train", time_s=12.5):
    """A run directory: config.yaml, train_time.json and ``stage/metrics.jsonl`` with one epoch
    row per ``(step, val_acc, val_ci95)`` of ``curve`` (step rows in between, like the trainer)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(to_yaml(load_config(CONFIGS / config, overrides)))
    (root / "train_time.json").write_text(json.dumps({"seconds": time_s, "calls": 1}))
    folder = root / stage
    folder.mkdir(exist_ok=True)
    rows = []
    for epoch, (step, acc, ci) in enumerate(curve, 1):
        rows.append({"kind": "step", "step": step - 1, "epoch": epoch - 1, "lr": 0.001, "loss": 1.0})
        row = {"kind": "epoch", "epoch": epoch, "step": step, "loss": 1.0}
        if acc is not None:
            row["val_acc"] = acc
        if ci is not None:
            row["val_ci95"] = ci
        rows.append(row)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


EPISODIC = ("protonet.yaml", ["episodic.meta_iterations=1000", "episodic.meta_batch_size=4",
                              "data.ways=5", "data.shots=1", "data.queries=15"])
FLAT = ("ablations/ce.yaml", ["data.batch_size=32", "train.epochs=10"])
RISING = [(100 * e, 0.40 + 0.03 * e, 0.01) for e in range(1, 11)]          # +6 pts from step 800 to 1000
FLAT_CURVE = [(100 * e, min(0.40 + 0.1 * e, 0.80) + 0.002 * (e % 2), 0.01) for e in range(1, 11)]


def test_rising_curve_has_not_converged(tmp_path):
    run = write_run(tmp_path / "run", *EPISODIC, RISING)
    out = convergence(run, threads=2)
    assert out["converged"] is False
    assert "still improving" in out["reason"] and "800→1000" in out["reason"] and "+6.00 ± 1.41" in out["reason"]
    assert out["stage"] == "train" and out["steps"] == 1000 and out["epochs"] == 10
    assert out["val_first"] == pytest.approx(0.43) and out["val_last"] == pytest.approx(0.70)
    assert out["val_best"] == pytest.approx(0.70)
    assert out["train_s"] == 12.5 and out["threads"] == 2
    assert out["finished"] is False         # no final.pt in the synthetic run


def test_flat_curve_has_converged(tmp_path):
    run = write_run(tmp_path / "run", *EPISODIC, FLAT_CURVE)
    out = convergence(run)
    assert out["converged"] is True and "converged" in out["reason"]
    assert out["threads"] is None


def test_too_few_points_is_undecided(tmp_path):
    run = write_run(tmp_path / "run", *EPISODIC, [(100, 0.5, 0.01), (200, 0.6, 0.01)])
    out = convergence(run)
    assert out["converged"] is None and "no validation" in out["reason"]
    run = write_run(tmp_path / "noval", *EPISODIC, [(100 * e, None, None) for e in range(1, 6)])
    out = convergence(run)
    assert out["converged"] is None and out["val_best"] is None and out["steps"] == 500


def test_binomial_ci_when_val_ci95_is_missing():
    # p = 0.5, n = 100 queries: half-width 1.96 * 0.05 = 9.8 pts per point, 13.9 combined
    pts = [(100, 0.5, None), (800, 0.5, None), (1000, 0.6, None)]
    assert check_curve(pts, n=100)[0] is True
    assert check_curve(pts, n=100_000)[0] is False
    assert check_curve(pts)[0] is None          # no CI at all: undecided
    # and through convergence(): val_episodes * ways * queries queries per point
    assert check_curve([{"step": s, "val_acc": a} for s, a, _ in pts], n=10_000)[0] is False


def test_point_just_before_80_percent_is_the_reference():
    # budget 1000: 80% is step 800; the last point at or before it is 750
    pts = [(250, 0.5, 0.01), (500, 0.6, 0.01), (750, 0.7, 0.01), (1000, 0.72, 0.01)]
    converged, reason = check_curve(pts)
    assert converged is False and "750→1000" in reason


def test_images_and_tasks_seen_episodic(tmp_path):
    run = write_run(tmp_path / "run", *EPISODIC, RISING)
    out = convergence(run)
    # 1000 steps x 4 tasks; each task 5 ways x (1 shot + 15 queries) = 80 images
    assert out["tasks_seen"] == 1000 * 4
    assert out["images_seen"] == 1000 * 4 * 5 * (1 + 15) == out["images_seen_total"]
    assert "4 tasks" in out["per_step"]


def test_images_seen_flat(tmp_path):
    run = write_run(tmp_path / "run", *FLAT, RISING)
    out = convergence(run)
    assert out["tasks_seen"] is None
    assert out["images_seen"] == 1000 * 32
    assert "views not counted" in out["per_step"]


def test_distill_stage_is_final(tmp_path):
    run = write_run(tmp_path / "run", *FLAT, RISING)                                   # teacher: rising
    write_run(run, *FLAT, FLAT_CURVE[:6], stage="distill-1")
    write_run(run, *FLAT, FLAT_CURVE[:8], stage="distill-2")
    plateau = [(100 * e, 0.8, 0.01) for e in range(1, 5)]
    write_run(run, *FLAT, plateau, stage="distill-10")                                 # numeric order
    assert final_stage(run) == "distill-10"
    out = convergence(run)
    assert out["stage"] == "distill-10" and out["steps"] == 400 and out["converged"] is True
    assert out["images_seen"] == 400 * 32
    assert out["images_seen_total"] == (1000 + 600 + 800 + 400) * 32
    assert len(read_curve(run)) == 4 and len(read_curve(run, "train")) == 10
    assert convergence(run, stage="train")["converged"] is False


def test_distill_without_a_train_stage(tmp_path):
    run = write_run(tmp_path / "run", *FLAT, FLAT_CURVE, stage="distill-1")
    assert final_stage(run) == "distill-1"
    assert convergence(run)["images_seen"] == 1000 * 32


def test_missing_metrics_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics"):
        final_stage(tmp_path / "empty")
    run = write_run(tmp_path / "run", *EPISODIC, RISING)
    with pytest.raises(FileNotFoundError, match="distill-1"):
        read_curve(run, "distill-1")


def test_read_curve_skips_partial_lines_and_duplicates(tmp_path):
    run = write_run(tmp_path / "run", *EPISODIC, RISING[:3])
    path = run / "train" / "metrics.jsonl"
    with open(path, "a") as f:           # a re-logged epoch 3 (resume), then a line being written
        f.write(json.dumps({"kind": "epoch", "epoch": 3, "step": 300, "loss": 1.0, "val_acc": 0.9}) + "\n")
        f.write('{"kind": "epo')
    curve = read_curve(run)
    assert [p["epoch"] for p in curve] == [1, 2, 3]
    assert curve[-1] == {"epoch": 3, "step": 300, "val_acc": 0.9, "val_ci95": None}


def test_plot_curves_writes_a_png(tmp_path):
    run = write_run(tmp_path / "run", *EPISODIC, RISING)
    curves = {"protonet": read_curve(run),                                   # steps -> fractions
              "maml": [(0.25, 0.5), (0.5, 0.55), (1.0, 0.6)],               # already fractions
              "empty": []}
    path = plot_curves(curves, tmp_path / "plots" / "curves.png", title="validation")
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- sanity flags
def row(method, ways, shots, acc, ci, dataset="omniglot-small"):
    return {"method": method, "dataset": dataset, "ways": ways, "shots": shots, "episodes": 600,
            "acc": acc, "ci95": ci}


def test_more_shots_below_fewer_shots_beyond_ci():
    rows = [row("maml", 5, 1, 0.7317, 0.0236), row("maml", 5, 5, 0.6203, 0.0180),
            row("protonet", 5, 1, 0.90, 0.01), row("protonet", 5, 5, 0.97, 0.005)]
    out = sanity_warnings(rows)
    assert out == ["maml on omniglot-small: 5-way 5-shot (62.03 ± 1.80) below 5-way 1-shot (73.17 ± 2.36)"]
    assert sanity_block(rows) == "Sanity warnings:\n- " + out[0] + "\n"


def test_inversion_within_ci_is_not_flagged():
    # 1 pt lower, combined CI sqrt(2) * 2.36 = 3.3 pts
    assert sanity_warnings([row("maml", 5, 1, 0.73, 0.0236), row("maml", 5, 5, 0.72, 0.0236)]) == []


def test_more_ways_above_fewer_ways_beyond_ci():
    rows = [row("protonet", 5, 1, 0.80, 0.01), row("protonet", 20, 1, 0.90, 0.01),
            row("protonet", 5, 5, 0.95, 0.01), row("protonet", 20, 5, 0.90, 0.01)]
    out = sanity_warnings(rows)
    assert out == ["protonet on omniglot-small: 20-way 1-shot (90.00 ± 1.00) above 5-way 1-shot (80.00 ± 1.00)"]


def test_clean_table_has_no_warnings():
    rows = [row(m, w, s, acc, 0.01, dataset=d)
            for m in ("maml", "protonet") for d in ("omniglot-small", "mini-imagenet")
            for (w, s, acc) in ((5, 1, 0.80), (5, 5, 0.92), (20, 1, 0.60), (20, 5, 0.80))]
    rows.append({"method": "maml", "dataset": "cub", "ways": 5, "shots": 1, "acc": None, "ci95": None})
    assert sanity_warnings(rows) == [] and sanity_block(rows) == ""


def test_settings_compare_within_method_and_dataset_only():
    rows = [row("maml", 5, 1, 0.90, 0.01, dataset="a"), row("maml", 5, 5, 0.50, 0.01, dataset="b"),
            row("protonet", 5, 5, 0.10, 0.01, dataset="a")]
    assert sanity_warnings(rows) == []
