"""The side-by-side benchmark harness: methods x datasets x (ways, shots) on paired episodes.

A *suite* YAML names a base config, the datasets, the evaluated (ways, shots) settings and
the methods (each a config file plus overrides). For every dataset the harness

1. trains each method into ``<run_dir>/<dataset>/<method>`` (or reuses ``final.pt`` when
   it is already there, or resumes from the newest checkpoint when it was interrupted);
2. evaluates every method on the *same* seeded test episodes for each setting (results are
   cached per method and setting, so a rerun only computes what is missing);
3. writes ``results.{md,csv,json}``, ``paired.{md,csv,json}`` (differences against the
   reference method, per-episode, with 95% CIs) and ``results.png`` into ``<run_dir>``.

Under ``accelerate launch`` training runs data-parallel and evaluation episodes are split
across processes, then gathered in episode order.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from . import pipeline
from .config import Config, ConfigError, load_config, load_structured
from .data import build_fewshot, load_omniglot_challenge
from .evaluation import mean_ci, paired_difference, plot_results, write_results
from .utils import atomic_write_json, expand


@dataclass
class MethodSpec:
    name: str = "scl"
    config: str = "../scl.yaml"          # relative to the suite file
    overrides: List[str] = field(default_factory=list)
    # Start from another method of the suite: ProtoNet/MAML initialise their backbone from it
    # (episodic.init_from), CE/SCL distil it as teacher (distill.teacher).
    init_from_method: Optional[str] = None
    # Train nothing: score the finished run of an earlier method of the suite with this row's
    # config (e.g. SimpleShot = the CE run evaluated with eval.classifier=simpleshot).
    run_of: Optional[str] = None


@dataclass
class DatasetSpec:
    name: str = "omniglot-small"      # the training dataset (data.dataset); also the run sub-folder
    overrides: List[str] = field(default_factory=list)
    # Name shown in the table, for entries sharing a training set but testing elsewhere
    # (cross-domain: mini-imagenet -> cub / cars / ...); methods are trained once per name.
    label: Optional[str] = None


@dataclass
class SuiteConfig:
    name: str = "suite"
    run_dir: str = "runs/suite"
    overrides: List[str] = field(default_factory=list)      # applied to every method
    datasets: List[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()])
    settings: List[List[int]] = field(default_factory=lambda: [[5, 1], [5, 5]])
    queries: int = 15
    test_episodes: int = 600
    episode_seed: int = 0
    reference: Optional[str] = None                          # method for paired differences
    # Also score Lake et al.'s 20-run one-shot challenge (datasets named omniglot*): error rate
    # of 20-way 1-shot classification with the answer key, reported as dataset "omniglot-challenge".
    challenge: bool = False
    methods: List[MethodSpec] = field(default_factory=list)


def load_suite(path: Any, overrides: Sequence[str] = ()) -> SuiteConfig:
    path = Path(path)
    suite = load_structured(SuiteConfig, path, overrides, what="suite")
    if not suite.methods:
        raise ConfigError(f"suite {path}: 'methods' is empty")
    names = [m.name for m in suite.methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"suite {path}: method names must be unique, got {names}")
    for s in suite.settings:
        if len(s) != 2 or min(s) < 1:
            raise ConfigError(f"suite key 'settings': each entry is [ways, shots] >= 1, got {s}")
    for i, m in enumerate(suite.methods):
        if m.run_of is not None and m.run_of not in names[:i]:
            raise ConfigError(f"suite {path}: method {m.name!r}: run_of={m.run_of!r} must name an earlier "
                              f"method of the suite, one of {names[:i]}")
    if suite.reference is not None and suite.reference not in names:
        raise ConfigError(f"suite key 'reference': {suite.reference!r} is not one of {names}")
    suite._path = path  # type: ignore[attr-defined]
    return suite


def method_config(suite: SuiteConfig, spec: MethodSpec, dataset: DatasetSpec, run_root: Path) -> Config:
    base = suite._path.parent  # type: ignore[attr-defined]
    overrides = [*suite.overrides, f"data.dataset={dataset.name}", *dataset.overrides, *spec.overrides,
                 f"run_dir={run_root / dataset.name / spec.name}"]
    cfg = load_config(base / spec.config, overrides)
    if spec.init_from_method:
        source = run_root / dataset.name / spec.init_from_method
        key = "episodic.init_from" if cfg.method in pipeline.EPISODIC else "distill.teacher"
        cfg = load_config(base / spec.config, overrides + [f"{key}={source}"])
    return cfg


def protocol_tag(cfg: Config) -> str:
    """Part of an evaluation cache's file name that tells the protocols apart ("" for pooled)."""
    if pipeline.protocol_for(cfg) != "scl":
        return ""
    return f"-scl-aug{cfg.eval.support_augment}-{cfg.eval.combine}"


def eval_cache_file(suite: SuiteConfig, cfg: Config, ways: int, shots: int, label: Optional[str] = None) -> Path:
    """Where the per-episode accuracies of ``cfg`` on one suite setting are cached."""
    prefix = f"eval-{label}-" if label else "eval-"
    return expand(cfg.run_dir) / (f"{prefix}{ways}w{shots}s-{suite.test_episodes}ep-seed{suite.episode_seed}"
                                  f"{protocol_tag(cfg)}.json")


def challenge_cache_file(cfg: Config) -> Path:
    return expand(cfg.run_dir) / f"eval-challenge{protocol_tag(cfg)}.json"


def _evaluate_cached(method, cfg: Config, tasks, ways: int, shots: int, queries: int, acc, cache: Path) -> np.ndarray:
    if cache.exists():
        return np.asarray(json.loads(cache.read_text())["accuracies"])
    n = len(tasks)
    mine = np.arange(n)[acc.process_index::acc.num_processes]
    part = pipeline.evaluate(method, cfg, tasks, ways, shots, queries, indices=mine,
                             progress=acc.is_local_main_process)
    if acc.num_processes > 1:
        from accelerate.utils import gather_object
        pieces = gather_object([(int(i), float(a)) for i, a in zip(mine, part)])
        accs = np.zeros(n)
        for i, a in pieces:
            accs[i] = a
    else:
        accs = np.asarray(part, dtype=float)
    if acc.is_main_process:
        atomic_write_json(cache, {"ways": ways, "shots": shots, "episodes": n, "accuracies": accs.tolist()})
    return accs


def challenge_accuracies(method, cfg: Config) -> np.ndarray:
    """Per-run accuracy on the 20 runs of the Omniglot one-shot challenge (answer key order)."""
    runs = load_omniglot_challenge(cfg.data.root, cfg.data.image_size, cfg.data.cache_dir)
    episodes = [(torch.cat([r.support_x, r.query_x]), torch.cat([r.support_y, r.query_y])) for r in runs]
    n_support = runs[0].support_x.shape[0]

    def split(x, y, ways, shots, queries):   # support = the 20 training images, query = the 20 test items
        return x[:n_support], y[:n_support], x[n_support:], y[n_support:]
    return pipeline.evaluate(method, cfg, episodes, n_support, 1, None, progress=False, split=split)


def _classifier_label(cfg: Config) -> str:
    clf = pipeline.classifier_for(cfg)
    return clf + protocol_tag(cfg).replace("-scl", " scl", 1) if protocol_tag(cfg) else clf


def run_suite(suite: SuiteConfig, max_methods: Optional[int] = None, log=print) -> List[Dict[str, Any]]:
    """Train and evaluate every method of ``suite``; returns the result rows."""
    run_root = expand(suite.run_dir)
    acc = pipeline.make_accelerator(load_config(None))
    if not acc.is_main_process:          # one log, from the main process
        log = lambda *args, **kwargs: None  # noqa: E731
    rows: List[Dict[str, Any]] = []
    per_episode: Dict[str, Dict[str, np.ndarray]] = {}
    trained = 0
    for ds in suite.datasets:
        for spec in suite.methods:
            cfg = method_config(suite, spec, ds, run_root)
            source = dataclasses.replace(cfg, run_dir=str(run_root / ds.name / spec.run_of)) if spec.run_of else cfg
            done = pipeline.is_done(source)
            if not done and max_methods is not None and trained >= max_methods:
                log(f"[suite] stopping before {spec.name}: budget of {max_methods} trained method(s) reached")
                return rows
            label = ds.label or ds.name
            log(f"[suite] {label} / {spec.name}: " + (f"evaluating the run of {spec.run_of}" if spec.run_of else
                                                       "reusing finished checkpoint" if done else "training"))
            data = build_fewshot(cfg.data, seed=cfg.seed)
            if spec.run_of:
                method, _ = pipeline.load_trained(source.run_dir, data)   # no training of its own
                train_s = 0.0
            else:
                method = pipeline.train(cfg, data=data, accelerator=acc)
                trained += 0 if done else 1
                train_s = pipeline.train_seconds(cfg)
            for ways, shots in suite.settings:
                test_cfg = dataclasses.replace(cfg.data, ways=ways, shots=shots, queries=suite.queries,
                                               test_episodes=suite.test_episodes, episode_seed=suite.episode_seed)
                tasks = build_fewshot(test_cfg, seed=suite.episode_seed).test_tasks
                cache = eval_cache_file(suite, cfg, ways, shots, ds.label)
                accs = _evaluate_cached(method, cfg, tasks, ways, shots, suite.queries, acc, cache)
                mean, ci = mean_ci(accs, ci=cfg.eval.ci)
                key = f"{label}|{ways}|{shots}"
                per_episode.setdefault(key, {})[spec.name] = accs
                rows.append({"method": spec.name, "dataset": label, "ways": ways, "shots": shots,
                             "episodes": len(accs), "acc": mean, "ci95": ci, "train_s": train_s,
                             "classifier": _classifier_label(cfg)})
                log(f"[suite]   {ways}-way {shots}-shot: {100 * mean:.2f} +- {100 * ci:.2f}")
            if suite.challenge and ds.name.startswith("omniglot"):
                cache = challenge_cache_file(cfg)
                if cache.exists():
                    accs = np.asarray(json.loads(cache.read_text())["accuracies"])
                else:
                    accs = challenge_accuracies(method, cfg)
                    if acc.is_main_process:
                        atomic_write_json(cache, {"runs": len(accs), "accuracies": accs.tolist()})
                mean, ci = mean_ci(accs, ci=cfg.eval.ci)
                per_episode.setdefault("omniglot-challenge|20|1", {})[spec.name] = accs
                rows.append({"method": spec.name, "dataset": "omniglot-challenge", "ways": 20, "shots": 1,
                             "episodes": len(accs), "acc": mean, "ci95": ci, "train_s": train_s,
                             "classifier": _classifier_label(cfg), "error_pct": round(100 * (1 - mean), 2)})
                log(f"[suite]   one-shot challenge (20 runs): error {100 * (1 - mean):.2f}%")
    if acc.is_main_process:
        write_results(rows, run_root, name="results")
        plot_results(rows, run_root / "results.png")
        if suite.reference:
            paired = []
            for key, by_method in per_episode.items():
                dataset, ways, shots = key.split("|")
                ref = by_method.get(suite.reference)
                for name, accs in by_method.items():
                    if ref is None or name == suite.reference:
                        continue
                    diff, ci = paired_difference(accs, ref)
                    paired.append({"method": f"{name} - {suite.reference}", "dataset": dataset, "ways": int(ways),
                                   "shots": int(shots), "episodes": len(accs), "acc": diff, "ci95": ci})
            if paired:
                write_results(paired, run_root, name="paired")
    return rows
