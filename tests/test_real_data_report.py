"""RESULTS.md's seed aggregation (benchmarks/real_data.py) on synthetic per-episode arrays."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location(
    "real_data", Path(__file__).resolve().parents[1] / "benchmarks" / "real_data.py")
real_data = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(real_data)


def runs(shift_sc, shift_gcsc, n=50, seed=0):
    """Per-episode accuracies of CE, CE+SC, CE+GC+SC for seeds 0-2 on the same n episodes:
    a shared episode difficulty, a per-seed offset and per-run noise."""
    g = np.random.default_rng(seed)
    base = g.uniform(0.4, 0.8, n)
    by = {}
    for k, suffix in enumerate(["", "_seed1", "_seed2"]):
        for name, shift in (("ce", 0.0), ("ce_sc", shift_sc), ("ce_gc_sc", shift_gcsc)):
            by[name + suffix] = np.clip(base + shift + 0.01 * k + g.normal(0, 0.01, n), 0, 1)
    return by


def test_seed_members_and_summary_by_hand():
    by = {"ce": [0.5, 0.7], "ce_seed2": [0.9, 0.9], "ce_seed1": [0.6, 0.6], "ce_sc": [1.0, 1.0],
          "ce_seedling": [0.0, 0.0]}
    assert real_data.seed_members(by, "ce") == ["ce", "ce_seed1", "ce_seed2"]
    s = real_data.seed_summary(by, "ce")            # seed means 0.6, 0.6, 0.9
    assert s["seeds"] == 3 and s["mean"] == pytest.approx(0.7)
    assert (s["min"], s["max"]) == pytest.approx((0.6, 0.9))
    assert s["std"] == pytest.approx(np.std([0.6, 0.6, 0.9], ddof=1))


def test_seed_paired_by_hand():
    by = {"ce": [0.5, 0.6, 0.7], "ce_seed1": [0.4, 0.6, 0.8],
          "ce_sc": [0.6, 0.6, 0.8], "ce_sc_seed1": [0.4, 0.9, 0.8]}
    p = real_data.seed_paired(by, "ce_sc")
    assert p["seeds"] == 2
    (d0, c0), (d1, c1) = p["per_seed"]
    assert d0 == pytest.approx(np.mean([0.1, 0.0, 0.1])) and d1 == pytest.approx(0.1)
    assert c0 == pytest.approx(1.96 * np.std([0.1, 0.0, 0.1], ddof=1) / np.sqrt(3))
    # over seeds: episode-wise averages first, differences [0.05, 0.15, 0.05]
    d, c = p["over_seeds"]
    assert d == pytest.approx(np.mean([0.05, 0.15, 0.05]))
    assert c == pytest.approx(1.96 * np.std([0.05, 0.15, 0.05], ddof=1) / np.sqrt(3))


@pytest.mark.parametrize("shift,word", [(0.05, "SC helps on Omniglot-small in every setting"),
                                        (-0.05, "SC does not help"), (0.0, "SC does not help")])
def test_verdict_and_table(shift, word):
    per_episode = {"omniglot-small|5|1": runs(shift, 0.02), "omniglot-small|5|5": runs(shift, 0.02, seed=1)}
    verdict = "\n".join(real_data.sc_verdict(per_episode))
    assert word in verdict
    assert verdict.count("* omniglot-small") == 2
    table = real_data.seed_lines(per_episode)
    assert len(table) == 4 and table[2].startswith("| omniglot-small | 5 | 1 | 3 |")
    d, _ = real_data.seed_paired(per_episode["omniglot-small|5|1"], "ce_sc")["over_seeds"]
    assert f"{100 * d:+.2f}" in table[2]
    assert abs(d - shift) < 0.01
    # rows without all three methods are skipped
    assert len(real_data.seed_lines({"x|5|1": {"ce": [0.5]}})) == 2
