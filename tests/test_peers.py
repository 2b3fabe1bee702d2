"""benchmarks/peers.py: easyfsl's ProtoNet agrees with ours on the same weights, and the peer
benchmark runs end to end (--tiny) against planted evaluation caches of "our" runs."""
import copy
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scl_plugin.algorithms import ProtoNet
from scl_plugin.backbones import create_backbone
from scl_plugin.config import ModelConfig, load_config
from scl_plugin.data import build_test_tasks, split_support_query

easyfsl = pytest.importorskip("easyfsl", reason="easyfsl is the peers extra: pip install -e '.[peers]'")
from easyfsl.methods import PrototypicalNetworks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()
HAVE_DATA = (SHARED / "omniglot" / "images_background_small1.zip").is_file()
SPEC = importlib.util.spec_from_file_location("peers", ROOT / "benchmarks" / "peers.py")
peers = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(peers)


def episode(ways, shots, queries):
    """A real Omniglot-small test episode when ../shared/data is there, else a random one."""
    if HAVE_DATA:
        cfg = load_config(None, [f"data.root={SHARED}", "data.dataset=omniglot-small", "data.image_size=28",
                                 f"data.ways={ways}", f"data.shots={shots}", f"data.queries={queries}",
                                 "data.test_episodes=1"])
        return build_test_tasks(cfg.data)[0]
    g = torch.Generator().manual_seed(ways)
    return torch.randn(ways * (shots + queries), 1, 28, 28, generator=g), torch.arange(ways).repeat_interleave(
        shots + queries)


@pytest.mark.parametrize("ways,shots", [(5, 1), (20, 5)])
def test_easyfsl_protonet_equals_ours_on_same_weights(ways, shots):
    torch.manual_seed(0)
    backbone = create_backbone(ModelConfig(name="conv4", kwargs={"depth": 3}), in_chans=1, image_size=28)
    x, y = episode(ways, shots, 5)
    with torch.no_grad():                      # BatchNorm running statistics that are not the defaults
        backbone.train()
        for _ in range(3):
            backbone(x)
    backbone.eval()
    xs, ys, xq, yq = split_support_query(x, y, ways, shots, 5)
    ours = ProtoNet(copy.deepcopy(backbone), ways=ways, shots=shots, queries=5).eval()
    logits = ours.adapt(xs, ys)(xq)                       # -(squared Euclidean distance)
    theirs = PrototypicalNetworks(copy.deepcopy(backbone)).eval()
    with torch.no_grad():
        theirs.process_support_set(xs, ys)
        scores = theirs(xq)                               # -(Euclidean distance)
    assert scores.shape == logits.shape == (ways * 5, ways)
    assert torch.equal(scores.argmax(-1), logits.argmax(-1))
    torch.testing.assert_close(scores, -(-logits).clamp_min(0).sqrt(), rtol=1e-4, atol=1e-4)
    # easyfsl's own scorer on that episode: the accuracy our benchmark records for the peer
    acc = peers.episode_accuracy("protonet", theirs, x, y, ways, shots, 5)
    assert acc == pytest.approx((logits.argmax(-1) == yq).float().mean().item())


def test_peers_section_without_results(tmp_path):
    lines = peers.peers_section(tmp_path / "peers.json")
    assert len(lines) == 1 and "benchmarks/peers.py" in lines[0]


def plant_cache(run_dir, method, ways, shots, accs, episodes=2, steps=None, age=0.0, tag="a"):
    """An evaluation cache of "our" run as scl_plugin.bench writes it (key: episode + test_time)."""
    folder = run_dir / "omniglot-small" / method / "eval" / "omniglot-small"
    folder.mkdir(parents=True, exist_ok=True)
    key = {"episode": {"ways": ways, "shots": shots, "queries": 15, "episodes": episodes, "episode_seed": 0},
           "test_time": {"episodic.eval_inner_steps": steps if steps is not None else 3,
                         "episodic.eval_lr_scale": 1.0}}
    f = folder / f"{ways}w{shots}s-{episodes}ep-seed0-{tag * 12}.json"
    f.write_text(json.dumps({"key": key, "episodes": episodes, "accuracies": list(accs)}))
    t = f.stat().st_mtime - age
    os.utime(f, (t, t))
    return f


@pytest.mark.skipif(not HAVE_DATA, reason="../shared/data/omniglot is not present")
def test_tiny_end_to_end(tmp_path, capsys):
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    settings = [(5, 1), (5, 5), (20, 1), (20, 5)]
    for ways, shots in settings:
        plant_cache(run_dir, "protonet", ways, shots, [1.0, 0.9])
        plant_cache(run_dir, "protonet", ways, shots, [0.0, 0.0], age=3600, tag="b")    # older: ignored
    plant_cache(run_dir, "maml", 20, 1, [0.5, 0.5], steps=1)            # our MAML used 1 step there
    argv = ["--tiny", "--run-dir", str(run_dir), "--out-dir", str(out_dir)]
    assert peers.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert set(summary["peers"]) == {"protonet", "matchingnet", "maml"}
    assert set(summary["peers"]["protonet"]) == {"5w1s", "5w5s", "20w1s", "20w5s"}
    assert sorted(summary["missing_ours"]) == ["maml", "matchingnet"]

    result = json.loads((out_dir / "peers.json").read_text())
    assert set(result["versions"]) == {"easyfsl", "learn2learn", "torch"} and result["threads"] >= 1
    for name, m in result["methods"].items():
        assert m["budget"]["meta_iterations"] == peers.TINY_ITERATIONS and m["train_s"] > 0
        assert (run_dir / "peers" / f"{name}.pt").is_file()
        for s in m["settings"]:
            theirs = s["theirs_per_episode"]
            assert len(theirs) == 2 and all(0 <= a <= 1 for a in theirs)
            assert s["theirs"]["mean"] == pytest.approx(np.mean(theirs))
            row = summary["peers"][name][f"{s['ways']}w{s['shots']}s"]
            if name == "protonet":                          # the newest cache, paired with theirs
                assert s["ours"]["mean"] == pytest.approx(0.95)
                assert row["diff"] == pytest.approx(0.95 - np.mean(theirs))
                assert row["ci"] == pytest.approx(1.96 * np.std(np.array([1.0, 0.9]) - theirs, ddof=1) / np.sqrt(2))
                assert row["ours_below"] == (row["diff"] + row["ci"] < 0)
            elif (name, s["ways"], s["shots"]) == ("maml", 20, 1):
                assert row["diff"] == pytest.approx(0.5 - np.mean(theirs))
            else:
                assert row["diff"] is None and row["ours"] is None
    steps = {(s["ways"], s["shots"]): s["maml_test_time"]["eval_inner_steps"] for s in result["methods"]["maml"]["settings"]}
    assert steps == {(5, 1): 3, (5, 5): 3, (20, 1): 1, (20, 5): 3}

    md = (out_dir / "peers.md").read_text().splitlines()
    assert md[0] == "## Checked against peer implementations"
    assert md == peers.peers_section(out_dir / "peers.json")
    assert sum(line.startswith("| protonet |") for line in md) == 4
    assert (run_dir / "peers" / "train.log").read_text().count("iteration") >= 3

    # a rerun with the same budget reloads the checkpoint (torch.load(weights_only=True)) and scores the same
    assert peers.main(argv + ["--methods", "protonet"]) == 0
    again = json.loads((out_dir / "peers.json").read_text())["methods"]["protonet"]
    assert again["reused"] is True
    assert [s["theirs_per_episode"] for s in again["settings"]] == \
        [s["theirs_per_episode"] for s in result["methods"]["protonet"]["settings"]]
