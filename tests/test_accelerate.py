"""Two CPU processes with DDP (issue 8).

The loss/gradient equality of the gathered contrastive losses is tested at the loss level in
test_distributed_losses.py; here the whole program runs in 2 gloo processes: DDP training of
SCL (gathered GC + SC) and of ProtoNet completes, and sharded evaluation gives exactly the
per-episode accuracies of one process on the same checkpoint.

Launched with ``torchrun`` + ``ACCELERATE_USE_CPU=1`` (what ``accelerate launch --multi_gpu``
does on GPUs): on a CPU-only machine ``accelerate launch --cpu --num_processes 2`` starts a
single non-distributed process, which would test nothing.
"""
import json
import os
import subprocess
import sys

import yaml

from scl_plugin.bench import load_suite, run_suite

from test_bench import CONFIGS, TINY


def launch(args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "scl_plugin.cli", *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_process_training_and_sharded_evaluation(tmp_path):
    suite = {
        "name": "ddp", "run_dir": str(tmp_path / "suite"),
        "overrides": [o.format(cache=tmp_path / "cache") for o in TINY],
        "datasets": [{"name": "synthetic"}],
        "settings": [[5, 1]], "queries": 5, "test_episodes": 21,      # odd: shards of 11 and 10
        "methods": [{"name": "scl", "config": str(CONFIGS / "ablations/ce_gc_sc.yaml")},
                    {"name": "protonet", "config": str(CONFIGS / "protonet.yaml"), "overrides": ["data.queries=5"]}],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))

    # 1) train with DDP on 2 processes (contrastive losses gather across both) and evaluate sharded
    proc = launch(["bench", str(path)], tmp_path)
    assert proc.stdout.count("[suite] synthetic / scl: training") == 1          # main process logs once
    run = tmp_path / "suite" / "synthetic" / "scl"
    assert (run / "train" / "final.pt").exists()
    assert (tmp_path / "suite" / "synthetic" / "protonet" / "train" / "final.pt").exists()
    cache = next(run.glob("eval/synthetic/*.json"))
    two = json.loads(cache.read_text())["accuracies"]
    assert len(two) == 21

    # 2) same checkpoint, same episodes, one process
    cache.unlink()
    rows = run_suite(load_suite(path))
    one = json.loads(cache.read_text())["accuracies"]
    assert one == two
    assert rows[0]["acc"] > 0.4
