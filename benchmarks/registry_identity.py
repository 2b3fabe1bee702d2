"""Bit-identity check of the method redesign (issue 25): a tiny suite of every method, same table.

Trains and evaluates every method of the package (the names ``scl_plugin.config.METHODS`` listed
before the method registry existed, plus a distillation stage and the two-stage methods started
from their parents) on the seeded synthetic data with a narrow Conv-4, through
:func:`scl_plugin.bench.run_suite`, and writes, per method, its per-episode accuracies (5-way
1-shot and 5-way 5-shot, 20 episodes each) and the sha256 of its trained weights::

    .venv/bin/python benchmarks/registry_identity.py --out benchmarks/results/registry_identity_after.json \
        --check benchmarks/results/registry_identity_before.json

``--check FILE`` compares with a result written before (bit for bit: the accuracies as stored
floats, the weights' hash) and exits 1 naming every difference. The method configs are spelled
out here (not read from ``configs/``), so the comparison measures the code alone. About 4 minutes
on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

# Every method with its own settings (what its configs/<name>.yaml sets besides the shared data).
METHODS = {
    "ce": {"method": "ce"},
    "scl": {"method": "scl", "loss": {"lambda_global": 1.0, "lambda_spatial": 1.0}},
    "protonet": {"method": "protonet"},
    "maml": {"method": "maml", "episodic": {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3}},
    "fomaml": {"method": "fomaml", "episodic": {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3}},
    "scl_protonet": {"method": "scl_protonet", "episodic": {"meta_lr": 0.0005}},
    "anil": {"method": "anil", "episodic": {"inner_lr": 0.1, "inner_steps": 2, "eval_inner_steps": 3}},
    "metasgd": {"method": "metasgd", "episodic": {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 1}},
    "metaoptnet": {"method": "metaoptnet", "episodic": {"svm_C": 0.1, "svm_iters": 3, "scale_init": 1.0}},
    "r2d2": {"method": "r2d2", "episodic": {"ridge_lambda": 1.0, "scale_init": 1.0}},
    "meta_baseline": {"method": "meta_baseline", "episodic": {"meta_lr": 0.0005, "scale_init": 10.0}},
    "matchingnet": {"method": "matchingnet", "embed": {"fce": True}},
    "simclr": {"method": "simclr", "embed": {"proj_dim": 32, "temperature": 0.5}, "train": {"lr": 0.02}},
    "moco": {"method": "moco", "embed": {"proj_dim": 32, "queue_size": 256, "momentum": 0.99}},
    "byol": {"method": "byol", "embed": {"proj_dim": 32, "hidden_dim": 32, "momentum": 0.99}},
    "triplet": {"method": "triplet", "embed": {"proj_dim": 32, "margin": 0.2, "pk_classes": 8, "pk_images": 4}},
    "npair": {"method": "npair", "embed": {"proj_dim": 32, "npair_l2": 0.002, "pk_classes": 8, "pk_images": 4}},
    # stages and evaluation rules: a distilled CE/SCL student, SimpleShot on the CE run
    "scl_distill": {"method": "scl", "loss": {"lambda_global": 1.0},
                    "distill": {"generations": 1, "lambda_kd": 1.0, "lambda_cd": 10.0}},
    "ce_simpleshot": {"method": "ce", "eval": {"classifier": "simpleshot"}},
    "protonet_logreg": {"method": "protonet", "eval": {"classifier": "logreg"}},
}
PARENTS = {"scl_protonet": ("init_from_method", "scl"), "meta_baseline": ("init_from_method", "ce"),
           "scl_distill": ("init_from_method", "scl"), "ce_simpleshot": ("run_of", "ce"),
           "protonet_logreg": ("run_of", "protonet")}
SHARED = [
    "data.image_size=16", "data.augment=none", "data.batch_size=32", "data.val_episodes=5", "data.queries=5",
    "model.name=conv4", "model.kwargs.depth=2", "model.kwargs.hidden=16", "train.epochs=2",
    "train.lr_decay_epochs=[1]", "train.steps_per_epoch=8", "distill.epochs=1", "episodic.meta_iterations=12",
    "episodic.meta_batch_size=2", "train.log_every=4", "data.num_workers=0",
]


def weights_digest(path: Path) -> str:
    """sha256 over the trained tensors (names, dtypes, shapes, bytes), independent of the file's pickling."""
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k]
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)};".encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def run(work: Path) -> dict:
    from scl_plugin.bench import load_suite, run_suite
    methods = []
    for name, settings in METHODS.items():
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"seed": 0, "data": {"dataset": "synthetic"}, **settings}))
        spec = {"name": name, "config": str(path)}
        if name in PARENTS:
            key, parent = PARENTS[name]
            spec[key] = parent
        methods.append(spec)
    suite = {"name": "identity", "run_dir": str(work / "suite"),
             "overrides": SHARED + [f"data.cache_dir={work / 'cache'}"],
             "datasets": [{"name": "synthetic"}], "settings": [[5, 1], [5, 5]], "queries": 5,
             "test_episodes": 20, "reference": "protonet", "methods": methods}
    (work / "suite.yaml").write_text(yaml.safe_dump(suite))
    per_episode: dict = {}
    torch.manual_seed(0)
    rows = run_suite(load_suite(work / "suite.yaml"), log=lambda *a: None, per_episode=per_episode)
    out = {"accuracies": {key: {m: [float(a) for a in accs] for m, accs in sorted(by.items())}
                          for key, by in sorted(per_episode.items())},
           "means": {f"{r['method']}|{r['ways']}|{r['shots']}": r["acc"] for r in rows},
           "weights": {}}
    for name in METHODS:
        if name in PARENTS and PARENTS[name][0] == "run_of":
            continue
        run_dir = work / "suite" / "synthetic" / name
        for final in sorted(run_dir.glob("*/final.pt")):
            out["weights"][f"{name}/{final.parent.name}"] = weights_digest(final)
    return out


def compare(now: dict, before: dict) -> list:
    problems = []
    for section in ("accuracies", "weights", "means"):
        a, b = before.get(section, {}), now.get(section, {})
        for key in sorted(set(a) | set(b)):
            if key not in b:
                problems.append(f"{section}: {key} missing now")
            elif key not in a:
                problems.append(f"{section}: {key} new (not in the reference)")
            elif a[key] != b[key]:
                problems.append(f"{section}: {key} differs")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="where to write this run's JSON")
    p.add_argument("--check", type=Path, help="a JSON written before: exit 1 unless this run equals it bit for bit")
    args = p.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out} ({len(result['weights'])} trained stages, {time.time() - t0:.0f} s)")
    if args.check is None:
        return 0
    problems = compare(result, json.loads(args.check.read_text()))
    for line in problems:
        print("DIFFERS:", line)
    print("bit-identical to", args.check if not problems else f"{len(problems)} difference(s) from {args.check}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
