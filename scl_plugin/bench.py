"""The side-by-side benchmark harness: methods x datasets x (ways, shots) on paired episodes.

A *suite* YAML names a base config, the datasets, the evaluated (ways, shots) settings and
the methods (each a config file plus overrides). For every dataset the harness

1. trains each method into ``<run_dir>/<dataset>/<method>`` (or reuses ``final.pt`` when
   it is already there, or resumes from the newest checkpoint when it was interrupted), never
   for other weight settings than the run's (:mod:`scl_plugin.runs`);
2. evaluates every method on the *same* seeded test episodes for each setting (results are
   cached in ``<run>/eval/<test set>/``, keyed by every evaluation setting and the checkpoint
   files, so a rerun only computes what is missing and never serves a stale number);
3. writes ``results.{md,csv,json}``, ``paired.{md,csv,json}`` (differences against the
   reference method, per-episode, with 95% CIs) and ``results.png`` into ``<run_dir>``.

Results are replaced only by complete results: a suite in which a method failed, that stopped
at ``--max-methods`` or that was interrupted writes what it has as ``results.partial.*`` (and
``paired.partial.*``) and leaves the last complete table as it was; ``paired.*`` always belongs
to the ``results.*`` beside it. Everything about a suite that can be known before training
(config files and keys, method references, data roots) is checked before the first method
trains. A method that fails for any reason (a damaged data file, a truncated checkpoint, a bug)
is listed once and the others run.

Data is built at most once per invocation (memo keyed by the data config) and only when a
method must be trained or an evaluation is not cached: a fully cached rerun reads no image.

Under ``accelerate launch`` training runs data-parallel and evaluation episodes are split
across processes, then gathered in episode order.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from . import pipeline, runs
from .config import (DEFAULT_METHOD, Config, ConfigError, load_config, load_structured, resolve_override_paths,
                     with_settings)
from .data import build_fewshot, build_test_tasks, load_omniglot_challenge
from .data.fewshot import build_val_tasks, test_identity, val_identity
from .evaluation import mean_ci, paired_difference, plot_results, write_results
from .evaluation.sanity import sanity_block
from .registry import get_method
from .selection import Selection, select
from .utils import atomic_write_json, atomic_write_text, expand


@dataclass
class MethodSpec:
    name: str = DEFAULT_METHOD
    config: str = f"../{DEFAULT_METHOD}.yaml"          # relative to the suite file
    overrides: List[str] = field(default_factory=list)
    # Start from another method of the suite, by the method's registered parent key: a teacher
    # method distils it (distill.teacher), any other initialises its backbone from it
    # (episodic.init_from).
    init_from_method: Optional[str] = None
    # Train nothing: score the finished run of an earlier method of the suite with this row's
    # config (e.g. SimpleShot = a pretrained run evaluated with eval.classifier=simpleshot).
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


class SuiteFailed(RuntimeError):
    """Some methods of a suite could not be trained or evaluated (the others were); ``rows``
    holds the results of the others (also written to ``results.partial.*``)."""

    def __init__(self, message: str, rows: Optional[List[Dict[str, Any]]] = None):
        super().__init__(message)
        self.rows = rows or []


def load_suite(path: Any, overrides: Sequence[str] = ()) -> SuiteConfig:
    """Load a suite file. ``overrides`` naming a suite key (``test_episodes=100``) change the
    suite; any other (``data.root=...``, ``train.epochs=2``) applies to every run of the suite
    and wins over the dataset entries, the method entries and the suite's own ``overrides``."""
    path = Path(path)
    suite_keys = {f.name for f in dataclasses.fields(SuiteConfig)}
    mine = [o for o in overrides if o.split("=", 1)[0].split(".")[0] in suite_keys]
    every_run = [o for o in overrides if o not in mine]
    suite = load_structured(SuiteConfig, path, mine, what="suite")
    if not suite.methods:
        raise ConfigError(f"suite {path}: 'methods' is empty")
    names = [m.name for m in suite.methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"suite {path}: method names must be unique, got {names}")
    for s in suite.settings:
        if len(s) != 2 or min(s) < 1:
            raise ConfigError(f"suite key 'settings': each entry is [ways, shots] >= 1, got {s}")
    for i, m in enumerate(suite.methods):
        for key in ("run_of", "init_from_method"):
            ref = getattr(m, key)
            if ref is not None and ref not in names[:i]:
                raise ConfigError(f"suite {path}: method {m.name!r}: {key}={ref!r} must name an earlier "
                                  f"method of the suite, one of {names[:i]}")
    if suite.queries < 1:
        raise ConfigError(f"suite key 'queries': must be >= 1, got {suite.queries}")
    if suite.reference is not None and suite.reference not in names:
        raise ConfigError(f"suite key 'reference': {suite.reference!r} is not one of {names}")
    here = path.resolve().parent        # input paths written in the suite file: relative to it
    suite.overrides = resolve_override_paths(suite.overrides, here)
    for entry in [*suite.datasets, *suite.methods]:
        entry.overrides = resolve_override_paths(entry.overrides, here)
    suite._path = path  # type: ignore[attr-defined]
    suite._every_run = every_run  # type: ignore[attr-defined]
    if every_run:                       # validate now: a typo fails before any training
        load_config(None, every_run)
    return suite


def check_suite(suite: SuiteConfig) -> None:
    """Everything that can be known before training, for every dataset x method: the config file
    exists and loads with its overrides, and the data roots hold a known layout (and the
    challenge's ``all_runs.zip`` when asked). Raises one ConfigError / DataError naming the entry."""
    from .data.registry import check_layout
    run_root = expand(suite.run_dir)
    seen = set()
    for ds in suite.datasets:
        for spec in suite.methods:
            where = f"suite {suite._path}: {ds.label or ds.name} / {spec.name}"  # type: ignore[attr-defined]
            config = suite._path.parent / spec.config  # type: ignore[attr-defined]
            if not config.is_file():
                raise ConfigError(f"{where}: config file {config} does not exist")
            try:
                cfg = method_config(suite, spec, ds, run_root)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            d = cfg.data
            roots = [(d.dataset, d.root, getattr(d, "format", "auto"))]
            if d.test_dataset:
                roots.append((d.test_dataset, d.test_root or d.root, "auto"))
            for name, root, fmt in roots:
                if not d.download and (name, str(root), fmt) not in seen:
                    seen.add((name, str(root), fmt))
                    check_layout(name, root, fmt)
            if suite.challenge and ds.name.startswith("omniglot") and ("challenge", str(d.root)) not in seen:
                seen.add(("challenge", str(d.root)))
                from .data.formats.omniglot import find_omniglot_dir
                find_omniglot_dir(d.root, "all_runs.zip")


def method_config(suite: SuiteConfig, spec: MethodSpec, dataset: DatasetSpec, run_root: Path) -> Config:
    """The config of one method on one dataset entry. Precedence, lowest first: the suite's
    ``overrides``, the method entry, the dataset entry, the command line."""
    base = suite._path.parent  # type: ignore[attr-defined]
    overrides = [*suite.overrides, *spec.overrides, f"data.dataset={dataset.name}", *dataset.overrides,
                 *getattr(suite, "_every_run", []), f"run_dir={run_root / dataset.name / spec.name}"]
    if spec.init_from_method:
        source = run_root / dataset.name / spec.init_from_method
        cfg = load_config(base / spec.config, overrides)
        overrides = overrides + [f"{get_method(cfg.method).parent_key}={source}"]
    return load_config(base / spec.config, overrides)


def training_config(cfg: Config) -> Config:
    """``cfg`` as trained: the test set of a cross-domain entry is not part of the training
    run (one run serves every test set; its config.yaml names none of them)."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test_dataset=None, test_root=None))


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label.replace("->", "-to-")).strip("-") or "test"


def _read_stored(cache: Path, key: Dict[str, Any], acc=None) -> Optional[Dict[str, Any]]:
    """The cached record for ``key`` (None: compute it). Under several processes rank 0
    reads and every rank gets its answer, so all take the same branch (a rank reading a cache
    that rank 0 is writing, or a node that does not see rank 0's files, would otherwise skip an
    evaluation the others wait in)."""
    if acc is not None and acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        found = _read_stored(cache, key) if acc.is_main_process else None
        return broadcast_object_list([found])[0]
    if not cache.exists():
        return None
    stored = json.loads(cache.read_text())
    if stored.get("key") != json.loads(json.dumps(key, default=str)):
        return None
    return stored


def _read_cache(cache: Path, key: Dict[str, Any], acc=None) -> Optional[np.ndarray]:
    """The cached accuracies for ``key`` (None: compute them); see :func:`_read_stored`."""
    stored = _read_stored(cache, key, acc)
    return None if stored is None else np.asarray(stored["accuracies"])


def _evaluate(method, cfg: Config, tasks, ways: int, shots: int, queries: int, acc) -> np.ndarray:
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
        return accs
    return np.asarray(part, dtype=float)


def challenge_accuracies(method, cfg: Config) -> np.ndarray:
    """Per-run accuracy on the 20 runs of the Omniglot one-shot challenge (answer key order)."""
    trials = load_omniglot_challenge(cfg.data.root, cfg.data.image_size, cfg.data.cache_dir)
    episodes = [(torch.cat([r.support_x, r.query_x]), torch.cat([r.support_y, r.query_y])) for r in trials]
    n_support = trials[0].support_x.shape[0]

    def split(x, y, ways, shots, queries):   # support = the 20 training images, query = the 20 test items
        return x[:n_support], y[:n_support], x[n_support:], y[n_support:]
    return pipeline.evaluate(method, cfg, episodes, n_support, 1, None, progress=False, split=split)


def _challenge_digest(cfg: Config) -> str:
    """Content hash of the challenge's ``all_runs.zip`` (part of its evaluation cache key)."""
    from .data.formats.omniglot import find_omniglot_dir
    from .data.identity import file_digest
    return file_digest(find_omniglot_dir(cfg.data.root, "all_runs.zip") / "all_runs.zip")[:16]


def classifier_label(cfg: Config) -> str:
    """The classifier column of the table: the classifier, and the augmented protocol's options."""
    clf = pipeline.classifier_for(cfg)
    protocol = pipeline.protocol_for(cfg)
    if protocol == "pooled":
        return clf
    return f"{clf} {protocol}-aug{cfg.eval.support_augment}-{cfg.eval.combine}"


class _Memo:
    """Data built at most once per invocation and only when needed, keyed by the data config."""

    def __init__(self):
        self.built: Dict[str, Any] = {}

    def get(self, kind: str, key: Any, build):
        k = kind + json.dumps(key, sort_keys=True, default=str)
        if k not in self.built:
            self.built[k] = build()
        return self.built[k]

    def fewshot(self, cfg: Config):
        return self.get("fewshot", [dataclasses.asdict(cfg.data), cfg.seed],
                        lambda: build_fewshot(cfg.data, seed=cfg.seed))

    def val_tasks(self, data_cfg):
        return self.get("val", data_cfg, lambda: build_val_tasks(data_cfg))

    def test_tasks(self, data_cfg):
        return self.get("test", dataclasses.asdict(data_cfg), lambda: build_test_tasks(data_cfg))


def _known_errors():
    from .data import DataError
    from .training import CheckpointError, TrainingError
    from .utils import RunDirError
    return (ConfigError, DataError, CheckpointError, TrainingError, RunDirError)


def _describe(e: BaseException) -> str:
    """One line for a failed method: our errors as they are, anything else with its type."""
    text = " ".join(str(e).split())
    return text if isinstance(e, _known_errors()) else f"{type(e).__name__}: {text}"


def run_suite(suite: SuiteConfig, max_methods: Optional[int] = None, log=print,
              restart: bool = False, per_episode: Optional[Dict[str, Dict[str, np.ndarray]]] = None,
              only: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Train and evaluate every method of ``suite``; returns the result rows.

    The suite's files, keys, method references and data roots are checked first
    (:func:`check_suite`). A method that fails (bad checkpoint, settings that differ from its
    finished run, a damaged data file, a parent retrained since: see :mod:`scl_plugin.runs`)
    does not stop the others: the suite finishes what it can, writes the rows it has to
    ``results.partial.*`` (the last complete ``results.*`` stays), then raises
    :class:`SuiteFailed` naming each failed method once, with its fix. ``restart=True``
    retrains methods whose run was trained with other settings or inputs instead of refusing
    them. ``per_episode`` (a dict) receives the per-episode accuracies, keyed
    ``"dataset|ways|shots"`` then by method name. ``only``: the names of the methods to run
    (a suite trained in parts; their parents must be trained already); the tables are partial.
    """
    run_root = expand(suite.run_dir)
    check_suite(suite)
    unknown = sorted(set(only or ()) - {m.name for m in suite.methods})
    if unknown:
        raise ConfigError(f"--only: no method {', '.join(map(repr, unknown))} in suite {suite.name!r}; "
                          f"its methods: {', '.join(m.name for m in suite.methods)}")
    acc = pipeline.make_accelerator(load_config(None))
    if not acc.is_main_process:          # one log, from the main process
        log = lambda *args, **kwargs: None  # noqa: E731
    rows: List[Dict[str, Any]] = []
    per_episode = {} if per_episode is None else per_episode
    failed: Dict[str, str] = {}
    memo = _Memo()
    trained = 0
    complete = False
    try:
        for ds in suite.datasets:
            for spec in suite.methods:
                if only and spec.name not in only:
                    continue
                label = ds.label or ds.name
                where = f"{label} / {spec.name}"
                source_name = spec.run_of or spec.init_from_method
                if source_name and f"{label} / {source_name}" in failed:
                    failed[where] = f"skipped: it starts from {source_name}, which failed"
                    log(f"[suite] {where}: {failed[where]}")
                    continue
                try:
                    cfg = method_config(suite, spec, ds, run_root)
                    if spec.run_of:          # no training of its own: score an earlier method's run
                        source = training_config(dataclasses.replace(
                            cfg, run_dir=str(run_root / ds.name / spec.run_of)))
                        log(f"[suite] {where}: evaluating the run of {spec.run_of}")
                        method, _ = pipeline.load_trained(source.run_dir, data=lambda: memo.fewshot(source))
                        rows += _evaluate_method(suite, ds, spec, cfg, method, acc, memo, per_episode, log,
                                                 source=source)
                        continue
                    tcfg = training_config(cfg)
                    resume = True
                    if restart:
                        try:
                            runs.check_run(tcfg)
                        except runs.SettingsMismatch as e:
                            log(f"[suite] {where}: retraining (--restart): {e}")
                            resume = False
                    done = resume and pipeline.is_done(tcfg)
                    if not done and max_methods is not None and trained >= max_methods:
                        log(f"[suite] stopping before {spec.name}: budget of {max_methods} trained method(s) reached")
                        return rows
                    if resume:
                        runs.check_run(tcfg, restart_hint="scl-bench --restart")
                    log(f"[suite] {where}: " + ("reusing finished checkpoint" if done else "training"))
                    method = pipeline.train(tcfg, data=lambda: memo.fewshot(tcfg), accelerator=acc, resume=resume)
                    trained += 0 if done else 1
                    acc.wait_for_everyone()      # every checkpoint rank 0 wrote is complete before any rank reads it
                    rows += _evaluate_method(suite, ds, spec, cfg, method, acc, memo, per_episode, log)
                except Exception as e:       # one failing method never takes the suite down
                    failed[where] = _describe(e)
                    log(f"[suite] {where}: FAILED: {failed[where]}")
        complete = not failed and not only
    finally:
        if acc.is_main_process:
            _write_tables(suite, rows, per_episode, run_root, complete, log)
    if failed:
        raise SuiteFailed(f"{len(failed)} of {len(suite.datasets) * len(suite.methods)} runs failed (the others "
                          f"are in {run_root}/results.partial.md): "
                          + "; ".join(f"{k}: {v}" for k, v in failed.items()), rows)
    return rows


_TABLE_FILES = ("{}.md", "{}.csv", "{}.json")


def _write_tables(suite: SuiteConfig, rows, per_episode, run_root: Path, complete: bool, log) -> None:
    """Complete results replace ``results.*`` (and ``paired.*``, and drop any stale partial
    table); anything less goes to ``results.partial.*``, leaving the last complete table alone."""
    if not rows and not complete:
        return
    suffix = "" if complete else ".partial"
    names = {"results": f"results{suffix}", "paired": f"paired{suffix}"}
    run_root.mkdir(parents=True, exist_ok=True)
    write_results(rows, run_root, name=names["results"])
    warnings = sanity_block(rows)          # implausible orders (more shots lower...): shown, never hidden
    if warnings:
        table = run_root / f"{names['results']}.md"
        atomic_write_text(table, table.read_text() + "\n" + warnings)
        log("[suite] " + warnings.rstrip().replace("\n", "\n[suite] "))
    plot_results(rows, run_root / f"{names['results']}.png")
    paired = _write_paired(suite, per_episode, run_root, names["paired"]) if suite.reference else False
    stale = [] if paired else [f.format(names["paired"]) for f in _TABLE_FILES]
    if complete:
        stale += [f.format(n) for f in _TABLE_FILES + ("{}.png",) for n in ("results.partial", "paired.partial")]
    for name in stale:
        (run_root / name).unlink(missing_ok=True)
    if not complete:
        log(f"[suite] incomplete: {len(rows)} rows written to {run_root}/results.partial.md; "
            f"the last complete table (results.md) is unchanged")


def _evaluate_method(suite, ds, spec, cfg, method, acc, memo, per_episode, log,
                     source: Optional[Config] = None) -> List[Dict[str, Any]]:
    """Evaluate ``method`` on every setting of the suite (cached). ``source``: the run whose
    weights these are when it is another method's (``run_of``); its checkpoints key the cache."""
    rows = []
    label = ds.label or ds.name
    clf = pipeline.classifier_for(cfg)
    checkpoints = pipeline.final_checkpoints(source or training_config(cfg))
    train_s = 0.0 if source is not None else pipeline.train_seconds(cfg)
    shown = classifier_label(cfg)
    folder = expand(cfg.run_dir) / "eval" / _safe(label)
    test_images = None        # read after the first selection: choosing never touches the test split
    chosen: Dict[Any, Selection] = {}

    def settings_for(ways: int, shots: int) -> Config:
        """``cfg`` with the test-time settings chosen on validation for this setting (eval.select)."""
        if not cfg.eval.select:
            return cfg
        if (ways, shots) not in chosen:
            chosen[ways, shots] = _select(method, cfg, clf, checkpoints, ways, shots, suite.queries, folder, acc,
                                          memo, log)
        return with_settings(cfg, chosen[ways, shots].settings)

    def extra(ways: int, shots: int) -> Dict[str, Any]:
        return {"test_time": f"{chosen[ways, shots].label} (val)"} if (ways, shots) in chosen else {}

    for ways, shots in suite.settings:
        test_cfg = dataclasses.replace(cfg.data, ways=ways, shots=shots, queries=suite.queries,
                                       test_episodes=suite.test_episodes, episode_seed=suite.episode_seed)
        run_cfg = settings_for(ways, shots)
        test_images = test_images or test_identity(cfg.data)
        key = runs.eval_key(run_cfg, classifier=clf, checkpoints=checkpoints, data_identity=test_images, ways=ways,
                            shots=shots, queries=suite.queries, episodes=suite.test_episodes,
                            episode_seed=suite.episode_seed)
        cache = folder / f"{ways}w{shots}s-{suite.test_episodes}ep-seed{suite.episode_seed}-{runs.key_hash(key)}.json"
        accs = _read_cache(cache, key, acc)
        if accs is None:
            accs = _evaluate(method, run_cfg, memo.test_tasks(test_cfg), ways, shots, suite.queries, acc)
            if acc.is_main_process:
                atomic_write_json(cache, {"key": key, "episodes": len(accs), "accuracies": accs.tolist()})
        mean, ci = mean_ci(accs, ci=cfg.eval.ci)
        per_episode.setdefault(f"{label}|{ways}|{shots}", {})[spec.name] = accs
        rows.append({"method": spec.name, "dataset": label, "ways": ways, "shots": shots,
                     "episodes": len(accs), "acc": mean, "ci95": ci, "train_s": train_s, "classifier": shown,
                     **extra(ways, shots)})
        log(f"[suite]   {ways}-way {shots}-shot: {100 * mean:.2f} +- {100 * ci:.2f}")
    if suite.challenge and ds.name.startswith("omniglot"):
        run_cfg = settings_for(20, 1)
        key = runs.eval_key(run_cfg, classifier=clf, checkpoints=checkpoints, data_identity=_challenge_digest(cfg),
                            challenge="lake-20-runs")
        cache = folder / f"challenge-{runs.key_hash(key)}.json"
        accs = _read_cache(cache, key, acc)
        if accs is None:
            accs = challenge_accuracies(method, run_cfg)
            if acc.is_main_process:
                atomic_write_json(cache, {"key": key, "runs": len(accs), "accuracies": accs.tolist()})
        mean, ci = mean_ci(accs, ci=cfg.eval.ci)
        per_episode.setdefault("omniglot-challenge|20|1", {})[spec.name] = accs
        rows.append({"method": spec.name, "dataset": "omniglot-challenge", "ways": 20, "shots": 1,
                     "episodes": len(accs), "acc": mean, "ci95": ci, "train_s": train_s,
                     "classifier": shown, "error_pct": round(100 * (1 - mean), 2), **extra(20, 1)})
        log(f"[suite]   one-shot challenge (20 runs): error {100 * (1 - mean):.2f}%")
    return rows


def _select(method, cfg: Config, clf: str, checkpoints, ways: int, shots: int, queries: int, folder: Path, acc,
            memo, log) -> Selection:
    """The test-time settings of ``cfg.eval.select`` chosen on the validation episodes of the
    run's training dataset for (ways, shots); cached, with every candidate's score, in
    ``folder/select-*.json`` keyed by the evaluation key of the validation episodes."""
    val_cfg = dataclasses.replace(cfg.data, ways=ways, shots=shots, queries=queries)
    key = runs.eval_key(cfg, classifier=clf, checkpoints=checkpoints, data_identity=val_identity(cfg.data),
                        split="val", ways=ways, shots=shots, queries=queries, episodes=cfg.data.val_episodes,
                        episode_seed=cfg.data.episode_seed)
    cache = folder / f"select-{ways}w{shots}s-{runs.key_hash(key)}.json"
    stored = _read_stored(cache, key, acc)
    if stored is not None:
        return Selection(stored["chosen"], stored["candidates"])
    tasks = memo.val_tasks(val_cfg)
    choice = select(cfg, lambda c: _evaluate(method, c, tasks, ways, shots, queries, acc))
    if acc.is_main_process:
        atomic_write_json(cache, {"key": key, **choice.to_dict()})
    shown = ", ".join(f"{s['settings']}: {100 * s['acc']:.2f}" for s in choice.scores)
    log(f"[suite]   {ways}-way {shots}-shot: chose {choice.label} on {len(tasks)} validation episodes ({shown})")
    return choice


def _write_paired(suite, per_episode, run_root, name: str = "paired") -> bool:
    paired = []
    for key, by_method in per_episode.items():
        dataset, ways, shots = key.split("|")
        ref = by_method.get(suite.reference)
        for method, accs in by_method.items():
            if ref is None or method == suite.reference:
                continue
            diff, ci = paired_difference(accs, ref)
            paired.append({"method": f"{method} - {suite.reference}", "dataset": dataset, "ways": int(ways),
                           "shots": int(shots), "episodes": len(accs), "acc": diff, "ci95": ci})
    if paired:
        write_results(paired, run_root, name=name)
    return bool(paired)
