"""The method registry (issue 25): a method is one class, one decorator and a config; nothing else
in the package names it."""
import ast
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from scl_plugin.algorithms import EpisodicMethod, register_method
from scl_plugin.evaluation import prototypes

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


# ----------------------------------------------------------------------------- a new method, here only
@register_method("toy_cosine_means", batches="episodes", classifier="native")
class CosineMeans(EpisodicMethod):
    """Nearest class mean by cosine similarity, with a learned temperature."""

    def __init__(self, backbone, ways, shots, queries):
        super().__init__(backbone, ways, shots, queries)
        self.scale = nn.Parameter(torch.tensor(5.0))

    def task_logits(self, support, support_y, query, ways):
        protos = F.normalize(prototypes(support, support_y, ways), dim=-1)
        return self.scale * F.normalize(query, dim=-1) @ protos.T


TOY_CONFIG = {"method": "toy_cosine_means", "episodic": {"meta_lr": 0.002, "meta_batch_size": 2}}

TINY = ["data.image_size=16", "data.augment=none", "data.batch_size=32", "data.val_episodes=5", "data.queries=5",
        "model.name=conv4", "model.kwargs.depth=2", "model.kwargs.hidden=16", "episodic.meta_iterations=30",
        "train.log_every=5"]


def test_a_method_defined_in_a_test_trains_and_evaluates_beside_protonet(tmp_path, capsys):
    from scl_plugin.cli import bench_main
    toy = tmp_path / "toy.yaml"
    toy.write_text(yaml.safe_dump(TOY_CONFIG))
    suite = {"name": "toy", "run_dir": str(tmp_path / "suite"),
             "overrides": TINY + [f"data.cache_dir={tmp_path / 'cache'}"], "datasets": [{"name": "synthetic"}],
             "settings": [[5, 1]], "queries": 5, "test_episodes": 20, "reference": "protonet",
             "methods": [{"name": "protonet", "config": str(CONFIGS / "protonet.yaml")},
                         {"name": "toy", "config": str(toy)}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert bench_main([str(path)]) == 0                                   # scl-bench
    out = capsys.readouterr().out
    assert "| toy" in out and "| protonet" in out
    rows = json.loads((tmp_path / "suite" / "results.json").read_text())
    assert [r["method"] for r in rows] == ["protonet", "toy"]
    toy_row = rows[1]
    assert toy_row["acc"] > 0.4 and toy_row["episodes"] == 20 and toy_row["classifier"] == "native", toy_row
    run = tmp_path / "suite" / "synthetic" / "toy"
    metrics = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert any("acc" in m for m in metrics)                                # the shared meta-batch loop ran
    from scl_plugin import pipeline
    method, cfg = pipeline.load_trained(run)                               # rebuilt from its run directory
    assert isinstance(method, CosineMeans) and cfg.method == "toy_cosine_means"
    assert float(method.scale.detach()) != 5.0                                    # its own parameter was trained
    assert bench_main([str(path)]) == 0                                   # a rerun serves the cached results
    assert "toy: reusing finished checkpoint" in capsys.readouterr().out


def test_the_registry_is_the_method_list():
    from scl_plugin.config import EPISODIC_METHODS, METHODS, ConfigError, load_config
    from scl_plugin.registry import get_method, method_names
    assert METHODS == method_names() and "toy_cosine_means" in METHODS and "toy_cosine_means" in EPISODIC_METHODS
    builtin = ("ce", "scl", "protonet", "maml", "fomaml", "scl_protonet", "anil", "metasgd", "metaoptnet", "r2d2",
               "meta_baseline", "matchingnet", "simclr", "moco", "byol", "triplet", "npair")
    assert METHODS[:len(builtin)] == builtin                               # the order of the old table
    assert load_config(None, ["method=toy_cosine_means"]).method == "toy_cosine_means"
    with pytest.raises(ConfigError, match=r"'method'.*allowed: ce, scl, .*toy_cosine_means"):
        load_config(None, ["method=nope"])
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")
    with pytest.raises(ValueError, match="batches must be one of"):
        register_method("bad", batches="minibatches", classifier="native")
    with pytest.raises(TypeError, match="from_config"):
        register_method("bad", batches="flat", classifier="logreg")(object)
    from scl_plugin.config import EvalConfig
    import dataclasses
    classifiers = next(f for f in dataclasses.fields(EvalConfig) if f.name == "classifier").metadata["choices"]
    for name in method_names():
        entry = get_method(name)
        assert entry.classifier in classifiers, name
        assert entry.distills == (entry.parent_key == "distill.teacher")


def test_one_adapt_contract_restores_the_mode_and_checks_labels():
    """Every built-in method: ``adapt(xs, ys)`` alone, the module's train/eval mode as it was,
    labels other than 0..K-1 refused, ``learner(xq)`` of shape (queries, K)."""
    from scl_plugin import pipeline
    from scl_plugin.config import load_config
    from scl_plugin.registry import method_names
    from types import SimpleNamespace
    shape = SimpleNamespace(num_classes=10, channels=1, image_size=16)
    xs, ys, xq = torch.randn(6, 1, 16, 16), torch.tensor([0, 0, 1, 1, 2, 2]), torch.randn(4, 1, 16, 16)
    for name in method_names():
        cfg = load_config(None, ["model.name=conv4", "model.kwargs.depth=2", "model.kwargs.hidden=8",
                                 "data.image_size=16", f"method={name}", "episodic.init_from=/unused/parent",
                                 "embed.queue_size=64"])
        torch.manual_seed(0)
        method = pipeline.build_method(cfg, shape, init=False)
        for mode in (True, False):
            method.train(mode)
            assert method.adapt(xs, ys)(xq).shape == (4, 3), name
            assert method.training == mode and all(m.training == mode for m in method.modules()), name
        with pytest.raises(ValueError, match="0..K-1"):
            method.adapt(xs, ys + 1)
        with pytest.raises(TypeError):
            method.adapt(xs, ys, steps=3)                                  # options are fixed at construction


METHOD_NAMES_FREE = ["pipeline.py", "bench.py", "runs.py", "training/trainer.py"]


@pytest.mark.parametrize("path", METHOD_NAMES_FREE)
def test_no_method_name_outside_the_registry_and_the_methods(path):
    """No string in the code of these files (docstrings aside) is a method's name, and no word of
    their text is one: what differs between methods is asked from the registry."""
    from scl_plugin.registry import method_names
    import re
    names = set(method_names())
    text = (ROOT / "scl_plugin" / path).read_text()
    strings = [n.value for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not [s for s in strings if s in names]
    quoted = re.findall(r"[\"']([a-z_0-9]+)[\"']", text)
    assert not [q for q in quoted if q in names]


def test_the_bit_identity_record_covers_every_builtin_method():
    """benchmarks/registry_identity.py (run it with --check) trained every built-in method."""
    from scl_plugin.registry import get_method, method_names
    record = json.loads((ROOT / "benchmarks" / "results" / "registry_identity_before.json").read_text())
    trained = {key.split("/")[0] for key in record["weights"]}
    builtin = {n for n in method_names() if get_method(n).cls.__module__.startswith("scl_plugin.")}
    assert builtin <= trained, builtin - trained
    assert all(len(accs) == 20 for by in record["accuracies"].values() for accs in by.values())
