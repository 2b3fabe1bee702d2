"""The README's multi-process suite from an empty run directory (issue 28): every method kind
under 2 DDP processes (gloo, CPU), three fresh runs with the same table; rank 0's checkpoint
writes delayed, so a rank that read a file before it is complete would fail; --restart and a
SIGTERM-ed, resumed run; two "nodes" on this machine give the table of one node with two
processes; and no method pays DDP's find_unused_parameters unless it declares so."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_bench import ALL_METHODS, CONFIGS, TINY

# Imported at start-up by every Python process that has it on PYTHONPATH (launchers and ranks):
# rank 0's checkpoint writes take a while, as on a slow shared disk.
SLOW_SAVES = '''
import os, time
if os.environ.get("SCL_TEST_SAVE_DELAY"):
    import scl_plugin.training.trainer as _t
    _real = _t.save_checkpoint
    def _slow(path, state):
        time.sleep(float(os.environ["SCL_TEST_SAVE_DELAY"]))
        return _real(path, state)
    _t.save_checkpoint = _slow
'''

# every method kind: flat (CE: unused GC head), two-view contrastive (SimCLR: gathered), episodic,
# MAML, CE+GC+SC, its distillation and an init_from_method child
KINDS = ALL_METHODS[:1] + [{"name": "simclr", "config": str(CONFIGS / "simclr.yaml")}] + ALL_METHODS[1:]


def write_suite(tmp_path, name, methods=KINDS, extra=()):
    suite = {"name": name, "run_dir": str(tmp_path / name),
             "overrides": [o.format(cache=tmp_path / "cache") for o in TINY] + ["train.epochs=1",
                                                                             "episodic.meta_iterations=6",
                                                                             *extra],
             "datasets": [{"name": "synthetic"}], "settings": [[5, 1]], "queries": 5, "test_episodes": 9,
             "reference": "ce", "methods": methods}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def env(tmp_path, delay=None):
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SLOW_SAVES)
    e = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1",
             PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    if delay:
        e["SCL_TEST_SAVE_DELAY"] = str(delay)
    return e


def torchrun(*args, nodes=None):
    head = [sys.executable, "-m", "torch.distributed.run"]
    if nodes is None:
        return head + ["--nproc_per_node", "2", "--standalone", "-m", "scl_plugin.cli", "bench", *args]
    rank, port = nodes
    return head + ["--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1", "--master_addr",
                   "127.0.0.1", "--master_port", str(port), "-m", "scl_plugin.cli", "bench", *args]


def run(cmd, tmp_path, delay=None, timeout=300):
    proc = subprocess.run(cmd, cwd=tmp_path, env=env(tmp_path, delay), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def table(folder: Path):
    return [(r["method"], r["acc"]) for r in json.loads((folder / "results.json").read_text())]


def test_fresh_two_process_suites_agree_and_wait_for_rank_0(tmp_path):
    tables = []
    for i, delay in enumerate((1.0, None, None)):              # the first run with slow writes
        path = write_suite(tmp_path, f"fresh{i}")
        proc = run(torchrun(str(path)), tmp_path, delay)
        assert proc.stdout.count("\nresults: ") == 1                       # written (and printed) once
        assert not list((tmp_path / f"fresh{i}").glob("*.partial.*"))
        tables.append(table(tmp_path / f"fresh{i}"))
    assert [m for m, _ in tables[0]] == [k["name"] for k in KINDS]
    assert tables[0] == tables[1] == tables[2]
    # --restart with the parent changed: parent and both children retrained under DDP
    scl = tmp_path / "fresh2" / "synthetic" / "scl_protonet" / "train" / "final.pt"
    stamp = scl.stat().st_mtime_ns
    path = write_suite(tmp_path, "fresh2", methods=[dict(m, overrides=m.get("overrides", []) + ["train.lr=0.02"])
                                                  if m["name"] == "scl" else m for m in KINDS])
    run(torchrun(str(path), "--restart"), tmp_path)
    assert scl.stat().st_mtime_ns != stamp


def test_a_sigtermed_two_process_suite_resumes(tmp_path):
    methods = [KINDS[0], dict(KINDS[2], overrides=["data.queries=5", "episodic.meta_iterations=400",
                                                    "train.save_every=10"])]
    path = write_suite(tmp_path, "term", methods=methods)
    proc = subprocess.Popen(torchrun(str(path)), cwd=tmp_path, env=env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    train = tmp_path / "term" / "synthetic" / "protonet" / "train"
    deadline = time.time() + 300
    while not list(train.glob("step-*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0 and not (train / "final.pt").exists()
    run(torchrun(str(path)), tmp_path)
    assert [m for m, _ in table(tmp_path / "term")] == ["ce", "protonet"]
    assert json.loads((tmp_path / "term" / "synthetic" / "protonet" / "train_time.json").read_text())["calls"] == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_machine_give_the_one_node_table(tmp_path):
    methods = [KINDS[0], KINDS[2], KINDS[4], KINDS[6]]
    one = write_suite(tmp_path, "node1", methods=methods)
    run(torchrun(str(one)), tmp_path)
    two = write_suite(tmp_path, "node2", methods=methods)
    port = free_port()
    procs = [subprocess.Popen(torchrun(str(two), nodes=(rank, port)), cwd=tmp_path, env=env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert table(tmp_path / "node2") == table(tmp_path / "node1")


METHOD_CONFIGS = sorted(p for p in [*CONFIGS.glob("*.yaml"), *CONFIGS.glob("ablations/*.yaml")]
                        if p.name != "base.yaml")


@pytest.mark.parametrize("config", METHOD_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_find_unused_parameters_is_declared_exactly_when_needed(config, tmp_path):
    """Every shipped method config: after one loss + backward, some trainable parameter has no
    gradient (DDP fails on the second step without find_unused_parameters) iff the method
    declares find_unused_parameters; the distillation stage likewise. The 2-process suites above
    train one method of each kind under DDP with its declared setting."""
    from scl_plugin import pipeline
    from scl_plugin.algorithms import Distiller
    from scl_plugin.config import load_config
    from scl_plugin.data import build_fewshot
    from scl_plugin.training import EpisodeBatches, FlatBatches, PKBatches
    from scl_plugin.training.trainer import find_unused_parameters
    over = [o.format(cache=tmp_path / "c") for o in TINY] + [
        "data.dataset=synthetic", "data.queries=5", f"run_dir={tmp_path / 'r'}", "distill.teacher=null"]
    cfg = load_config(config, over)
    if cfg.method in pipeline.NEEDS_INIT:
        cfg = load_config(config, over + [f"episodic.init_from={tmp_path / 'unused'}"])
    data = build_fewshot(cfg.data, seed=0)
    method = pipeline.build_method(cfg, data, init=False)
    if cfg.method in pipeline.EPISODIC:
        batches = EpisodeBatches(data.train_tasks, 2, 1, 0)
    elif getattr(method, "pk_batches", False):
        batches = PKBatches(data.pretrain_set(), cfg.embed.pk_classes, cfg.embed.pk_images, 0, 0)
    else:
        batches = FlatBatches(pipeline._pretrain_set(cfg, data, method.needs_two_views), 32, 0, 0)
    def check(module, batch):
        module.train()
        loss, _ = module.loss(batch)
        loss.backward()
        unused = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
        assert find_unused_parameters(module) == bool(unused), (type(module).__name__, unused)
    check(method, next(iter(batches(0, 0))))
    if cfg.method in ("ce", "scl"):           # its distillation stage (the teacher is frozen from here)
        student = Distiller.from_teacher(method, cfg.distill, new_backbone=pipeline._backbone_factory(cfg, data))
        two = method.needs_two_views and cfg.distill.double_transform
        check(student, next(iter(FlatBatches(pipeline._pretrain_set(cfg, data, two), 32, 0, 0)(0, 0))))
