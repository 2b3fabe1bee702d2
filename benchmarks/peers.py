"""Peer implementations as references: our ProtoNet, Matching Networks and MAML against other
people's code, trained on OUR episodes with OUR budgets and scored on the SAME test episodes.

    python benchmarks/peers.py                      # ~25 min on 2 CPU cores; checkpoints make reruns cheap
    python benchmarks/peers.py --methods maml --suite configs/suites/omniglot-real.yaml
    python benchmarks/peers.py --tiny               # a few iterations, 2 episodes, temporary run dir (tests)

Peers (used only as installed packages; nothing of scl_plugin.algorithms is used for them):

* ``protonet``: easyfsl's ``PrototypicalNetworks(backbone)``, trained with cross-entropy on its
  output scores (as easyfsl's episodic-training notebook does);
* ``matchingnet``: easyfsl's ``MatchingNetworks(backbone, feature_dimension=d)`` (its full-context
  embeddings are always on), trained with NLLLoss on its output (log-probabilities);
* ``maml``: ``learn2learn.algorithms.MAML`` in the plain loop of learn2learn's
  ``examples/vision/maml_omniglot.py`` (second order, per-task ``backward``, gradients divided by
  the meta-batch size, Adam). As in that example the model never goes to eval mode: BatchNorm
  uses the statistics of the current batch, also at test time.

What is ours and shared by both sides: the backbone (``create_backbone(cfg.model)``, fresh init
after ``seed_everything(cfg.seed)``), the training episode stream (``build_fewshot(cfg.data,
seed=cfg.seed).train_tasks``), the budget (``episodic.meta_iterations`` steps of
``meta_batch_size`` tasks, Adam at ``episodic.meta_lr``; MAML's inner lr and steps) and the seeded
test episodes of the suite. Our per-episode accuracies are read from the suite's evaluation caches
(``<run_root>/<dataset>/<method>/eval/<label>/``), written by ``python benchmarks/real_data.py``.

Outputs: ``<out-dir>/peers.json`` (everything) and ``<out-dir>/peers.md`` (the section
:func:`peers_section` returns); the last stdout line is a one-line JSON summary. Peer checkpoints:
``<run_root>/peers/<method>.pt`` (+ ``.json``: the budget they were trained with, their time), so a
rerun with the same budget only evaluates; training progress goes to stdout and
``<run_root>/peers/train.log``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SUITE = ROOT / "configs" / "suites" / "omniglot-real.yaml"
DEFAULT_JSON = "benchmarks/results/peers.json"
METHODS = ("protonet", "matchingnet", "maml")
PEERS = {
    "protonet": "easyfsl PrototypicalNetworks",
    "matchingnet": "easyfsl MatchingNetworks",
    "maml": "learn2learn MAML (maml_omniglot.py loop)",
}
LOG_EVERY_S = 30.0
# --tiny: a few iterations and 2 test episodes per setting (tests; well under a minute)
TINY_ITERATIONS = 3
TINY_EPISODES = 2


# ----------------------------------------------------------------------------- logging
class Log:
    """Lines to stdout and, once opened, to ``train.log`` (appended)."""

    def __init__(self):
        self.file = None

    def open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a")

    def __call__(self, msg: str) -> None:
        line = f"[peers] {msg}"
        print(line, flush=True)
        if self.file is not None:
            self.file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            self.file.flush()


# ----------------------------------------------------------------------------- models
def _backbone(cfg):
    from scl_plugin.backbones import create_backbone
    from scl_plugin.data import channels_for
    from scl_plugin.utils import seed_everything
    seed_everything(cfg.seed)                   # the same fresh initialisation as our run's backbone
    return create_backbone(cfg.model, in_chans=channels_for(cfg.data.dataset), image_size=cfg.data.image_size)


def _maml_model(backbone, ways: int):
    """Backbone + a linear head of ``ways`` outputs on its pooled features (MAML's classifier)."""
    from torch import nn
    return nn.Sequential(backbone, nn.Linear(backbone.feature_dim, ways))


def build_peer(name: str, cfg):
    """The peer model of method ``name`` (for MAML: the ``l2l.algorithms.MAML`` wrapper)."""
    backbone = _backbone(cfg)
    if name == "protonet":
        from easyfsl.methods import PrototypicalNetworks
        return PrototypicalNetworks(backbone)
    if name == "matchingnet":
        from easyfsl.methods import MatchingNetworks
        return MatchingNetworks(backbone, feature_dimension=backbone.feature_dim)
    if name == "maml":
        import learn2learn as l2l
        return l2l.algorithms.MAML(_maml_model(backbone, cfg.data.ways), lr=cfg.episodic.inner_lr,
                                   first_order=False)
    raise ValueError(f"no peer for method {name!r}; peers exist for {', '.join(METHODS)}")


def budget(name: str, cfg) -> Dict[str, Any]:
    """What a peer's training is a function of (a checkpoint is reused only when this matches)."""
    e, d = cfg.episodic, cfg.data
    b = {"peer": PEERS[name], "meta_iterations": e.meta_iterations, "meta_batch_size": e.meta_batch_size,
         "optimizer": "adam", "meta_lr": e.meta_lr, "ways": d.ways, "shots": d.shots, "queries": d.queries,
         "augment": d.augment, "seed": cfg.seed, "model": {"name": cfg.model.name, "kwargs": dict(cfg.model.kwargs)},
         "image_size": d.image_size, "dataset": d.dataset}
    if name == "maml":
        b.update(inner_lr=e.inner_lr, inner_steps=e.inner_steps, first_order=False)
    return b


# ----------------------------------------------------------------------------- training
def _task_loss(name: str, model, task, cfg):
    """The query loss of one training task, the peer's way."""
    import torch.nn.functional as F
    from scl_plugin.data import split_support_query
    d = cfg.data
    xs, ys, xq, yq = split_support_query(*task, d.ways, d.shots, d.queries)
    if name == "maml":                          # maml_omniglot.py's fast_adapt
        learner = model.clone()
        for _ in range(cfg.episodic.inner_steps):
            learner.adapt(F.cross_entropy(learner(xs), ys))
        return F.cross_entropy(learner(xq), yq)
    model.process_support_set(xs, ys)           # easyfsl: support set first, then the queries
    out = model(xq)
    # PrototypicalNetworks returns scores (-distance): cross-entropy; MatchingNetworks returns
    # log-probabilities: NLL (its docstring)
    return F.cross_entropy(out, yq) if name == "protonet" else F.nll_loss(out, yq)


def train_peer(name: str, model, cfg, tasks, log: Log) -> Dict[str, Any]:
    """``episodic.meta_iterations`` steps of ``meta_batch_size`` tasks from ``tasks`` (Adam at
    ``episodic.meta_lr``); every task's query loss is backpropagated on its own, then the
    accumulated gradients are divided by the meta-batch size (maml_omniglot.py's loop; for the
    easyfsl peers the same as backpropagating the mean loss of the meta-batch)."""
    import torch
    e = cfg.episodic
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=e.meta_lr)
    model.train()                               # and never eval() for MAML (the example's BN mode)
    t0 = last = time.time()
    window: List[float] = []
    for it in range(1, e.meta_iterations + 1):
        opt.zero_grad()
        total = 0.0
        for _ in range(e.meta_batch_size):
            loss = _task_loss(name, model, tasks.sample(), cfg)
            loss.backward()
            total += loss.item()
        for p in params:
            if p.grad is not None:
                p.grad.data.mul_(1.0 / e.meta_batch_size)
        opt.step()
        window.append(total / e.meta_batch_size)
        now = time.time()
        if now - last >= LOG_EVERY_S or it == e.meta_iterations or it == 1:
            log(f"{name}: iteration {it}/{e.meta_iterations} loss {sum(window) / len(window):.4f} "
                f"({now - t0:.0f} s)")
            last, window = now, []
    return {"train_s": time.time() - t0, "iterations": e.meta_iterations}


# ----------------------------------------------------------------------------- evaluation
def _widened_head(d: int, ways: int):
    """The head of a test task with another number of classes than meta-training (20-way after
    5-way training): a NEW zero-initialised ``nn.Linear(d, ways)``, adapted on the support set
    together with the backbone. The trained head's rows belong to arbitrary training labels and
    are dropped; zero rows start every class alike, so nothing depends on the order of the test
    classes. (Our MAML instead starts every row from the mean of the trained rows.)"""
    import torch
    from torch import nn
    head = nn.Linear(d, ways)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    return head


def episode_accuracy(name: str, model, x, y, ways: int, shots: int, queries: int,
                     steps: int = 1, lr_scale: float = 1.0) -> float:
    """Query accuracy of the peer on one test episode (support / query split as ours)."""
    import torch
    import torch.nn.functional as F
    from scl_plugin.data import split_support_query
    xs, ys, xq, yq = split_support_query(x, y, ways, shots, queries)
    if name == "maml":
        # model stays in train mode (BatchNorm on batch statistics, as in maml_omniglot.py).
        # first_order=True only skips building the second-order graph: the adapted weights are
        # the same numbers (no meta-gradient is taken at test time).
        learner = model.clone(first_order=True)
        if ways != learner.module[1].out_features:
            learner.module[1] = _widened_head(learner.module[1].in_features, ways)
        learner.lr = learner.lr * lr_scale
        with torch.enable_grad():
            for _ in range(steps):
                learner.adapt(F.cross_entropy(learner(xs), ys))
        with torch.no_grad():
            pred = learner(xq).argmax(-1)
        return (pred == yq).sum().item() / len(yq)
    from easyfsl.utils import evaluate_on_one_task
    model.eval()                                # easyfsl's evaluate(): eval mode, no gradient
    with torch.no_grad():
        correct, total = evaluate_on_one_task(model, xs, ys, xq, yq)
    return correct / total


# ----------------------------------------------------------------------------- our caches
def our_cache(cfg, label: str, ways: int, shots: int, queries: int, episodes: int,
              episode_seed: int) -> Optional[Path]:
    """The newest evaluation cache of our run for this setting (None: not evaluated yet):
    ``<run_dir>/eval/<label>/{ways}w{shots}s-{episodes}ep-seed{seed}-<hash>.json`` whose key's
    episode shape matches and which holds ``episodes`` accuracies."""
    from scl_plugin.bench import _safe
    from scl_plugin.utils import expand
    folder = expand(cfg.run_dir) / "eval" / _safe(label)
    want = {"ways": ways, "shots": shots, "queries": queries, "episodes": episodes, "episode_seed": episode_seed}
    found = []
    for f in folder.glob(f"{ways}w{shots}s-{episodes}ep-seed{episode_seed}-*.json"):
        try:
            stored = json.loads(f.read_text())
            ep = stored["key"]["episode"]
            ok = all(ep.get(k) == v for k, v in want.items()) and len(stored["accuracies"]) == episodes
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if ok:
            found.append((f.stat().st_mtime, f))
    return max(found)[1] if found else None


def maml_test_time(cache: Optional[Path], cfg) -> Dict[str, Any]:
    """Inner steps and lr scale of OUR MAML run at test time for one setting: those stored in its
    evaluation cache's key (``test_time``), else the config's."""
    steps, scale = cfg.episodic.eval_inner_steps, cfg.episodic.eval_lr_scale
    source = "config"
    if cache is not None:
        tt = json.loads(cache.read_text())["key"].get("test_time", {})
        steps = int(tt.get("episodic.eval_inner_steps", steps))
        scale = float(tt.get("episodic.eval_lr_scale", scale))
        source = str(cache)
    return {"eval_inner_steps": steps, "eval_lr_scale": scale, "from": source}


# ----------------------------------------------------------------------------- numbers
def _num(v: Optional[float]) -> Optional[float]:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def compare(ours, theirs, ci: str = "normal") -> Dict[str, Any]:
    """Ours and theirs (per-episode accuracies, same episodes) as mean ± CI and the paired
    difference ours − theirs; ``ours_below`` when the whole CI of the difference is below 0."""
    from scl_plugin.evaluation import mean_ci, paired_difference
    t_mean, t_ci = mean_ci(theirs, ci=ci)
    out = {"theirs": {"mean": t_mean, "ci": _num(t_ci)}, "ours": None, "diff": None, "ours_below": None}
    if ours is not None:
        o_mean, o_ci = mean_ci(ours, ci=ci)
        d, d_ci = paired_difference(ours, theirs, ci=ci)
        out.update(ours={"mean": o_mean, "ci": _num(o_ci)}, diff={"mean": d, "ci": _num(d_ci)},
                   ours_below=bool(d_ci == d_ci and d + d_ci < 0))
    return out


def _pct(stat: Optional[Dict[str, Any]], sign: bool = False) -> str:
    if stat is None:
        return "not evaluated"
    ci = "n/a" if stat["ci"] is None else f"{100 * stat['ci']:.2f}"
    return f"{100 * stat['mean']:{'+' if sign else ''}.2f} ± {ci}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def peers_section(path: Any = DEFAULT_JSON) -> List[str]:
    """The markdown lines of the "Checked against peer implementations" section, from
    ``peers.json`` (``path`` relative to the repository root unless absolute); a one-line note
    when the file is missing."""
    p = Path(path)
    if not p.is_absolute():
        p = ROOT / p
    if not p.is_file():
        return [f"(Peer comparison not run yet: `python benchmarks/peers.py` writes `{path}`.)"]
    r = json.loads(p.read_text())
    v, methods = r["versions"], r["methods"]
    ours_rule = ""
    if methods.get("protonet", {}).get("our_classifier") == "proto_euclidean":
        ours_rule = (" Our ProtoNet row is scored as the suite scores it (classifier `proto_euclidean`: nearest "
                     "prototype on L2-normalised features); easyfsl's uses its raw features.")
    shown = {"protonet": "ProtoNet", "matchingnet": "Matching Networks", "maml": "MAML"}
    what = [shown.get(n, n) for n in methods]
    described = []
    if "protonet" in methods:
        described.append(f"easyfsl {v['easyfsl']} `PrototypicalNetworks` (cross-entropy on its scores, −Euclidean "
                         "distance to the prototypes)")
    if "matchingnet" in methods:
        described.append(f"easyfsl {v['easyfsl']} `MatchingNetworks` (NLL on its log-probabilities; easyfsl always "
                         "uses full-context embeddings)")
    if "maml" in methods:
        described.append(f"learn2learn {v['learn2learn']} `MAML` in the plain loop of its `maml_omniglot.py` example "
                         "(second order; the model never in eval mode, so BatchNorm uses batch statistics at test "
                         "time too; 20-way test tasks get a new zero-initialised 20-output head, adapted with the "
                         "backbone; test-time inner steps and lr scale as our run's)")
    lines = [
        "## Checked against peer implementations",
        "",
        f"Our {', '.join(what)} against other people's code, run by `benchmarks/peers.py`: "
        f"each peer is trained on the same seeded stream of training tasks, with the same backbone ({r['backbone']}, "
        "the same fresh initialisation) and budget as our run (meta-iterations, tasks per step, Adam at the "
        "meta lr; MAML: our inner lr and inner steps), then scored on the same "
        f"{r['episodes']} seeded test episodes per setting ({r['queries']} queries per class), so every difference "
        f"is paired per episode. Peers: {'; '.join(described)}. Ours: our run's cached evaluation from the suite."
        + ours_rule + " \"Below\": the 95% CI of ours − theirs lies entirely "
        f"below 0. torch {v['torch']}, {r['threads']} torch thread(s).",
        "",
        "| method | peer | ways | shots | ours (%) | theirs (%) | ours − theirs (paired, %) | ours below? |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, m in methods.items():
        for s in m["settings"]:
            below = "—" if s["ours_below"] is None else ("**yes**" if s["ours_below"] else "no")
            lines.append(f"| {name} | {m['peer']} | {s['ways']} | {s['shots']} | {_pct(s['ours'])} | "
                         f"{_pct(s['theirs'])} | {_pct(s['diff'], sign=True)} | {below} |")
    lines.append("")
    times = ", ".join(f"{n} {_duration(m['train_s'])} ({m['budget']['meta_iterations']} iterations)"
                      for n, m in methods.items())
    lines.append(f"Peer training wall time: {times}.")
    if "maml" in methods:
        tt = [f"{s['ways']}-way {s['shots']}-shot {s['maml_test_time']['eval_inner_steps']} steps"
              f" x lr scale {s['maml_test_time']['eval_lr_scale']:g}" for s in methods["maml"]["settings"]]
        lines.append(f"MAML test-time adaptation (both sides): {', '.join(tt)}.")
    missing = [n for n, m in methods.items() if not m["ours_available"]]
    if missing:
        lines.append(f"Ours not evaluated yet for {', '.join(missing)}: run `python benchmarks/real_data.py` first.")
    return lines


# ----------------------------------------------------------------------------- main
def _versions() -> Dict[str, str]:
    import easyfsl
    import learn2learn
    import torch
    return {"easyfsl": easyfsl.__version__, "learn2learn": learn2learn.__version__, "torch": torch.__version__}


def run(args, log: Log) -> Dict[str, Any]:
    import torch
    from scl_plugin import pipeline
    from scl_plugin.bench import load_suite, method_config
    from scl_plugin.data import build_fewshot, build_test_tasks
    from scl_plugin.utils import atomic_write_json, atomic_write_text, expand

    overrides = []
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    if args.tiny:
        overrides += [f"test_episodes={TINY_EPISODES}", f"episodic.meta_iterations={TINY_ITERATIONS}"]
    suite = load_suite(args.suite, overrides)
    run_root = expand(suite.run_dir)
    peers_dir = run_root / "peers"
    log.open(peers_dir / "train.log")
    ds = suite.datasets[0]
    label = ds.label or ds.name
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    by = {m.name: m for m in suite.methods}
    unknown = [n for n in names if n not in METHODS or n not in by]
    if unknown:
        raise SystemExit(f"--methods: {unknown} not available (peers: {', '.join(METHODS)}; "
                         f"suite methods: {', '.join(by)})")
    log(f"suite {suite.name} ({args.suite}), run root {run_root}, dataset {label}, {torch.get_num_threads()} "
        f"torch threads, methods {', '.join(names)}")
    result: Dict[str, Any] = {
        "suite": str(args.suite), "suite_name": suite.name, "run_root": str(run_root), "dataset": label,
        "settings": suite.settings, "episodes": suite.test_episodes, "queries": suite.queries,
        "episode_seed": suite.episode_seed, "threads": torch.get_num_threads(), "versions": _versions(),
        "tiny": bool(args.tiny), "methods": {},
    }
    settings = [tuple(w_s) for w_s in suite.settings]
    if args.settings:
        import re
        parsed = [re.fullmatch(r"(\d+)w(\d+)s", item.strip()) for item in args.settings.split(",") if item.strip()]
        if not all(parsed):
            raise SystemExit(f"--settings: write each setting as <ways>w<shots>s (5w1s), got {args.settings!r}")
        wanted = [(int(m.group(1)), int(m.group(2))) for m in parsed]
        unknown = [w_s for w_s in wanted if w_s not in settings]
        if unknown:
            raise SystemExit(f"--settings: {unknown} not among the suite's settings {settings}")
        settings = wanted
    result["settings"] = [list(w_s) for w_s in settings]
    test_memo: Dict[Any, Any] = {}
    for name in names:
        cfg = method_config(suite, by[name], ds, run_root)
        result["backbone"] = f"{cfg.model.name} {dict(cfg.model.kwargs)}, {cfg.data.image_size}x{cfg.data.image_size}"
        b = budget(name, cfg)
        ckpt, meta_file = peers_dir / f"{name}.pt", peers_dir / f"{name}.json"
        model = build_peer(name, cfg)
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() and ckpt.is_file() else None
        reused = meta is not None and meta.get("budget") == json.loads(json.dumps(b))
        if reused:
            model.load_state_dict(torch.load(ckpt, weights_only=True))
            log(f"{name}: reusing {ckpt} (trained {meta['train_s']:.0f} s with this budget)")
        else:
            if meta is not None:
                log(f"{name}: {ckpt} was trained with another budget: retraining")
            log(f"{name}: training {PEERS[name]} for {b['meta_iterations']} iterations of "
                f"{b['meta_batch_size']} tasks ({cfg.data.ways}-way {cfg.data.shots}-shot, "
                f"{cfg.data.queries} queries), Adam lr {b['meta_lr']}")
            tasks = build_fewshot(cfg.data, seed=cfg.seed).train_tasks
            meta = {"budget": b, **train_peer(name, model, cfg, tasks, log)}
            peers_dir.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), ckpt)
            atomic_write_json(meta_file, meta)
        entry = {"peer": PEERS[name], "budget": b, "train_s": meta["train_s"], "reused": reused,
                 "checkpoint": str(ckpt), "our_classifier": pipeline.classifier_for(cfg), "settings": []}
        for ways, shots in settings:
            test_cfg = dataclasses.replace(cfg.data, ways=ways, shots=shots, queries=suite.queries,
                                           test_episodes=suite.test_episodes, episode_seed=suite.episode_seed)
            key = json.dumps(dataclasses.asdict(test_cfg), sort_keys=True, default=str)
            if key not in test_memo:                # the suite's seeded test episodes, built once
                test_memo[key] = build_test_tasks(test_cfg)
            tasks = test_memo[key]
            cache = our_cache(cfg, label, ways, shots, suite.queries, suite.test_episodes, suite.episode_seed)
            tt = maml_test_time(cache, cfg) if name == "maml" else None
            t0 = time.time()
            theirs = [episode_accuracy(name, model, *tasks[i], ways, shots, suite.queries,
                                       **({} if tt is None else {"steps": tt["eval_inner_steps"],
                                                                 "lr_scale": tt["eval_lr_scale"]}))
                      for i in range(len(tasks))]
            ours = json.loads(cache.read_text())["accuracies"] if cache is not None else None
            s = {"ways": ways, "shots": shots, "episodes": len(theirs), "eval_s": time.time() - t0,
                 **compare(ours, theirs, cfg.eval.ci), "our_cache": None if cache is None else str(cache),
                 "theirs_per_episode": theirs}
            if tt is not None:
                s["maml_test_time"] = tt
            entry["settings"].append(s)
            line = f"{name} {ways}-way {shots}-shot: theirs {_pct(s['theirs'])}"
            if ours is None:
                line += ", ours not evaluated"
            else:
                line += (f", ours {_pct(s['ours'])}, ours - theirs {_pct(s['diff'], sign=True)}"
                         f"{' (ours BELOW theirs beyond the CI)' if s['ours_below'] else ''}")
            log(line + f" [{s['eval_s']:.0f} s]")
        entry["ours_available"] = all(s["ours"] is not None for s in entry["settings"])
        if not entry["ours_available"]:
            log(f"{name}: our run is not evaluated on every setting: run `python benchmarks/real_data.py` first "
                f"(only the peer's numbers are reported where ours is missing)")
        log(f"{name}: peer training wall time {meta['train_s']:.0f} s ({torch.get_num_threads()} threads)")
        result["methods"][name] = entry

    out_dir = Path(args.out_dir) if args.out_dir else (run_root / "results" if args.tiny else ROOT / "benchmarks"
                                                        / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out_dir / "peers.json").read_text()) if (out_dir / "peers.json").is_file() else None
    same = ("suite_name", "run_root", "episodes", "queries", "episode_seed", "tiny")
    if previous and all(previous.get(k) == result[k] for k in same):     # methods of earlier runs stay
        result["methods"] = {**{k: v for k, v in previous["methods"].items() if k not in result["methods"]},
                             **result["methods"]}
        result["settings"] = sorted({tuple(x) for m in result["methods"].values() for x in
                                     ((s["ways"], s["shots"]) for s in m["settings"])})
    atomic_write_json(out_dir / "peers.json", result)
    atomic_write_text(out_dir / "peers.md", "\n".join(peers_section(out_dir.resolve() / "peers.json")) + "\n")
    log(f"wrote {out_dir / 'peers.json'} and {out_dir / 'peers.md'}")
    result["_json"] = str(out_dir / "peers.json")
    return result


def summary(result: Dict[str, Any]) -> Dict[str, Any]:
    """The one-line JSON of the last stdout line: per method and setting, the paired difference
    ours − theirs and its CI (None where ours is not evaluated), theirs and ours."""
    out: Dict[str, Any] = {"peers": {}, "json": result.get("_json"), "missing_ours": []}
    for name, m in result["methods"].items():
        per = {}
        for s in m["settings"]:
            per[f"{s['ways']}w{s['shots']}s"] = {
                "diff": None if s["diff"] is None else s["diff"]["mean"],
                "ci": None if s["diff"] is None else s["diff"]["ci"],
                "theirs": s["theirs"]["mean"], "ours": None if s["ours"] is None else s["ours"]["mean"],
                "ours_below": s["ours_below"]}
        out["peers"][name] = per
        if not m["ours_available"]:
            out["missing_ours"].append(name)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default=str(DEFAULT_SUITE))
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of: " + ", ".join(METHODS))
    p.add_argument("--out-dir", default=None,
                   help="where peers.json / peers.md go (default benchmarks/results; with --tiny <run dir>/results)")
    p.add_argument("--run-dir", default=None, help="override the suite's run_dir (our caches and peers/ are read "
                                                   "and written under it)")
    p.add_argument("--settings", default=None, metavar="WxS,...",
                   help="only these settings, e.g. 5w1s,5w5s (default: the suite's); methods scored before "
                        "under other settings stay in peers.json (each run adds or replaces its methods)")
    p.add_argument("--tiny", action="store_true",
                   help=f"tests: {TINY_ITERATIONS} iterations, {TINY_EPISODES} test episodes, a temporary run dir "
                        f"unless --run-dir")
    args = p.parse_args(argv)
    if args.tiny and not args.run_dir:
        args.run_dir = tempfile.mkdtemp(prefix="peers-tiny-")     # kept: it holds the outputs
    log = Log()
    try:
        result = run(args, log)
    finally:
        if log.file is not None:
            log.file.close()
    print(json.dumps(summary(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
