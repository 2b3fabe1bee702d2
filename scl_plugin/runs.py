"""What a run directory holds, and whether what is in it belongs to the current settings.

A run records, next to its checkpoints, the *weight settings* it was trained with
(``settings.json``): every config key that changes the trained weights, and nothing that
only changes evaluation (``eval.*``, test episodes, test data, logging, the run's own path).
Next to them it records the run's *inputs*: the content fingerprint of the training images
(:func:`scl_plugin.data.identity.split_identity`, whatever ``data.root`` they are read from)
and the content hash of every parent run's final checkpoint (``episodic.init_from``,
``distill.teacher``; for a teacher that is a released RFS / SCL checkpoint file, the sha256 of
that file). Resuming or reusing a run whose weight settings or inputs differ is
refused with one line naming the keys or the parent (a suite's ``--restart`` retrains it), so
a result is never silently served for settings, data or parents it was not trained with::

    from scl_plugin.config import load_config
    from scl_plugin.runs import stamp_run
    cfg = load_config("my_config.yaml", ["run_dir=runs/old"])
    stamp_run(cfg)     # mark a run trained by an older version with these (known) settings

Evaluation caches are keyed by :func:`eval_key`: the whole ``eval`` section, the episode
shape and seed, the test data (its content fingerprint included), the resolved classifier and
the content hash of the checkpoint files, so a cache is never served for other settings, other
test images or retrained weights.
Training time is summed over every call that trained (:class:`TrainClock`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from .config import TEST_TIME_KEYS, Config, ConfigError, get_setting
from .registry import get_method
from .utils import RunDirError, atomic_write_json, expand, make_run_dir


class RunInputError(ConfigError):
    """A parent run that is not there (not trained yet, or not a run)."""

__all__ = ["weight_settings", "settings_fingerprint", "input_identity", "stamp_run", "check_run", "has_artifacts",
           "SettingsMismatch", "RunBusyError", "training_lock", "TrainClock", "train_seconds", "eval_key",
           "checkpoint_identity", "final_checkpoints", "parent_checkpoints", "parents"]

SETTINGS_FILE = "settings.json"
TIME_FILE = "train_time.json"

# Keys that never change the trained weights (evaluation, bookkeeping, where files are).
# Validation (val_episodes, episode_seed, train.validate) only picks best.pt, never final.pt.
_NOT_WEIGHTS = {
    "run_dir", "eval", "data.root", "data.test_dataset", "data.test_root", "data.test_episodes",
    "data.val_episodes", "data.episode_seed", "data.cache_dir", "data.download", "train.log_every", "train.progress_every_s",
    "train.keep_last", "train.save_every", "train.validate", *TEST_TIME_KEYS,
    "train.max_steps",      # a step budget only pauses a run: final.pt exists once the full schedule ran
    "train.log_with",       # where the metrics are also sent (experiment trackers)
}
# Episodic methods train with Adam at episodic.meta_lr for episodic.meta_iterations steps.
_NOT_EPISODIC = {"loss", "distill", "data.batch_size", "train.epochs", "train.lr", "train.momentum",
                 "train.weight_decay", "train.optimizer", "train.schedule", "train.lr_decay_epochs",
                 "train.lr_decay_rate"}
# Flat pretraining ignores the episode shape and the meta-learning section.
_NOT_FLAT = {"episodic", "data.ways", "data.shots", "data.queries", "data.train_episodes"}


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not (key == "model.kwargs"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _excluded(key: str, skip: set) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in skip for i in range(1, len(parts) + 1))


def weight_settings(cfg: Config) -> Dict[str, Any]:
    """The flat ``{dotted key: value}`` of every setting that changes ``cfg``'s trained weights."""
    method = get_method(cfg.method)
    skip = set(_NOT_WEIGHTS) | (_NOT_EPISODIC if method.episodic else _NOT_FLAT)
    if not method.episodic and cfg.distill.generations == 0:
        skip.add("distill")
    if method.distills and cfg.distill.teacher:       # pretraining comes from the teacher
        # a released checkpoint file is built as this config's method: its loss settings count
        skip |= {"train.epochs", "train.lr"} | (set() if _released(cfg.distill.teacher) else {"loss"})
    flat = _flatten(dataclasses.asdict(cfg))
    for key in ("episodic.init_from", "distill.teacher"):     # the same run however it is spelled
        if flat.get(key):
            flat[key] = str(expand(flat[key]).resolve())
    return {k: v for k, v in sorted(flat.items()) if not _excluded(k, skip)}


def settings_fingerprint(cfg: Config) -> str:
    """A short hash of :func:`weight_settings` (equal hashes = same trained weights expected)."""
    blob = json.dumps(weight_settings(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stamp_run(cfg: Config, run_dir: Any = None) -> Path:
    """Record ``cfg``'s weight settings in ``run_dir`` (default ``cfg.run_dir``).

    Use it to adopt a run trained by an older version (no ``settings.json``) when you know
    the settings it was trained with::

        stamp_run(load_config("my_config.yaml", ["run_dir=runs/old"]))
    """
    path = expand(run_dir if run_dir is not None else cfg.run_dir) / SETTINGS_FILE
    atomic_write_json(path, {"fingerprint": settings_fingerprint(cfg), "settings": weight_settings(cfg),
                             "inputs": input_identity(cfg)})
    return path


# ----------------------------------------------------------------------------- what a run is computed from
def final_checkpoints(cfg: Config) -> List[Path]:
    """The files whose presence means ``cfg``'s training is complete (its last stage last)."""
    run_dir = expand(cfg.run_dir)
    distills = get_method(cfg.method).distills
    files = [] if (distills and cfg.distill.teacher) else [run_dir / "train" / "final.pt"]
    if distills:
        files += [run_dir / f"distill-{g}" / "final.pt" for g in range(1, cfg.distill.generations + 1)]
    return files


def parents(cfg: Config) -> Dict[str, str]:
    """``{config key: path}`` of the runs (or checkpoint files) ``cfg`` starts from."""
    key = get_method(cfg.method).parent_key
    source = cfg.distill.teacher if key == "distill.teacher" else cfg.episodic.init_from
    return {key: source} if source else {}


def parent_checkpoints(source: Any) -> List[Path]:
    """The final checkpoint files of a parent: a checkpoint file as is, or a run directory's
    final checkpoints (every stage; the last one holds the weights a child starts from)."""
    from .config import load_config
    path = expand(source)
    if not path.is_dir():
        if not path.is_file():
            raise RunInputError(f"{path} does not exist: give a finished run directory or a checkpoint file")
        return [path]
    if not (path / "config.yaml").exists():
        raise RunInputError(f"{path} is not a run directory (no config.yaml): train that run first")
    files = final_checkpoints(load_config(path / "config.yaml"))
    missing = [f for f in files if not f.exists()]
    if missing:
        raise RunInputError(f"{path} has not finished training ({missing[0]} missing): train that run first")
    return files


def _digest(files: Sequence[Path]) -> str:
    from .data.identity import file_digest
    h = hashlib.sha256()
    for f in files:
        h.update(f"{Path(f).parent.name}/{Path(f).name}:{file_digest(f)};".encode())
    return h.hexdigest()[:16]


def input_identity(cfg: Config) -> Dict[str, str]:
    """What ``cfg``'s weights are computed from besides its settings: ``{"data": training images'
    fingerprint, "<parent key>": parent's final checkpoint hash}``. A distilled run's data is
    its teacher's plus its own (the same split)."""
    from .data.fewshot import train_identity
    from .data.identity import file_digest
    out = {"data": train_identity(cfg.data)}
    for key, source in parents(cfg).items():
        files = parent_checkpoints(source)
        # a released RFS / SCL teacher file: the sha256 of its bytes (as `sha256sum FILE` prints it)
        out[key] = file_digest(files[0]) if key == "distill.teacher" and _released(source) else _digest(files)
    return out


def _released(source: Any) -> bool:
    """``distill.teacher`` names a checkpoint file (a released RFS / SCL ``.pth``), not a run."""
    return expand(source).is_file()


class SettingsMismatch(ConfigError):
    """A run directory holds weights trained with other settings."""


def has_artifacts(run_dir: Path) -> bool:
    """True when ``run_dir`` holds any checkpoint (finished or not)."""
    return any(run_dir.glob("train/*.pt")) or any(run_dir.glob("distill-*/*.pt"))


def _show(v: Any) -> str:
    return json.dumps(v, default=str)


def _stamp_hint(run_dir: Path) -> str:
    """The command that adopts a run trained by an older version (records its settings and inputs)."""
    return (f"`python -c \"from scl_plugin.config import load_config; from scl_plugin.runs import stamp_run; "
            f"stamp_run(load_config('<config.yaml>', ['run_dir={run_dir}']))\"`")


# Keys whose default is not what runs trained before the key existed did: such a run is read as
# having been trained with the value here, so it is refused (retrain) rather than reused as if new.
OLDER_BEHAVIOUR: Dict[str, Any] = {
    "embed.matching_scale": 1.0,            # Matching Networks: softmax over raw cosines
    "embed.matching_learn_scale": False,
}


def check_run(cfg: Config, restart_hint: str = "--restart") -> None:
    """Refuse, in one line, to resume or reuse ``cfg.run_dir`` if its weights belong to other settings."""
    run_dir = expand(cfg.run_dir)
    if not has_artifacts(run_dir):
        return
    path = run_dir / SETTINGS_FILE
    if not path.exists():
        raise SettingsMismatch(
            f"{run_dir} holds checkpoints with no record of their settings (trained by an older "
            f"version): if they were trained with exactly this config, record it with {_stamp_hint(run_dir)}; "
            f"otherwise use another run_dir or {restart_hint} to retrain")
    record = json.loads(path.read_text())
    have = record.get("settings", {})
    want = weight_settings(cfg)
    # a key added to the config after the run was trained: fine while it has its default value,
    # unless the default is not what the code did before the key existed (OLDER_BEHAVIOUR)
    defaults = {**_flatten(dataclasses.asdict(Config())), **OLDER_BEHAVIOUR}
    diff = [k for k in sorted(want) if (have[k] != want[k] if k in have else want[k] != defaults.get(k))]
    if diff:
        def there(k: str) -> str:
            if k in have:
                return _show(have[k])
            return f"{_show(OLDER_BEHAVIOUR[k])} (trained before the key existed)" if k in OLDER_BEHAVIOUR else "<unset>"
        shown = ", ".join(f"{k}: {there(k)} there, {_show(want.get(k, '<unset>'))} now" for k in diff[:6])
        more = f" (+{len(diff) - 6} more)" if len(diff) > 6 else ""
        raise SettingsMismatch(
            f"{run_dir} was trained with other settings ({shown}{more}): rerun with the settings it was "
            f"trained with, or use another run_dir or {restart_hint} to retrain")
    _check_inputs(cfg, run_dir, record.get("inputs"), restart_hint)


def _check_inputs(cfg: Config, run_dir: Path, have: Optional[Dict[str, str]], restart_hint: str) -> None:
    if have is None:
        raise SettingsMismatch(
            f"{run_dir} has no record of the data and parent runs it was trained from (trained by an older "
            f"version): if it was trained from exactly these, record them with {_stamp_hint(run_dir)}; "
            f"otherwise {restart_hint} retrains it")
    want = input_identity(cfg)
    if want["data"] != have.get("data"):
        raise SettingsMismatch(
            f"{run_dir} was trained on other images than data.root={cfg.data.root} holds now (data "
            f"fingerprint {have.get('data')} there, {want['data']} now): point data.root at the data it was "
            f"trained on, or use another run_dir or {restart_hint} to retrain")
    for key in sorted(set(want) | set(have)):
        if key != "data" and want.get(key) != have.get(key):
            source = parents(cfg).get(key, "<none>")
            raise SettingsMismatch(
                f"{run_dir} starts from its parent {key}={source}, which was retrained (or replaced) after this "
                f"run was trained from it: {restart_hint} retrains this run from the new parent")


# ----------------------------------------------------------------------------- training time
class RunBusyError(RunDirError):
    """Another process is training the same run directory."""


@contextlib.contextmanager
def training_lock(run_dir: Any) -> Iterator[None]:
    """Hold ``run_dir/.train.lock`` while training: a second process training the same run
    (two suites sharing a run_dir, a job started twice) would interleave checkpoints and
    corrupt it, so it stops at once with one line instead. The lock is released when the
    process ends, however it ends (an advisory ``flock``: nothing stale to clean up)."""
    import fcntl
    folder = make_run_dir(run_dir)
    handle = open(folder / ".train.lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            raise RunBusyError(f"{folder} is being trained by another process (pid {owner}); wait for it "
                               f"to finish (then rerun to reuse its result) or use another run_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


class TrainClock:
    """One call's training time, kept in ``train_time.json`` as it goes: :meth:`tick` (called at
    every checkpoint) writes the total with this call counted so far, so a call killed without
    warning (``kill -9``, a lost node) still counts up to its last checkpoint; :meth:`stop`
    writes the final figure. Main process only."""

    def __init__(self, run_dir: Any):
        self.path = expand(run_dir) / TIME_FILE
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.base, self.calls = float(old.get("seconds", 0.0)), int(old.get("calls", 0))
        self.t0 = time.time()

    def tick(self) -> None:
        atomic_write_json(self.path, {"seconds": round(self.base + time.time() - self.t0, 1),
                                      "calls": self.calls + 1})

    stop = tick


def reset_train_seconds(run_dir: Any) -> None:
    (expand(run_dir) / TIME_FILE).unlink(missing_ok=True)


def train_seconds(run_dir: Any) -> Optional[float]:
    """Training wall time summed over every call that trained this run (None if unknown)."""
    path = expand(run_dir) / TIME_FILE
    return json.loads(path.read_text())["seconds"] if path.exists() else None


# ----------------------------------------------------------------------------- evaluation caches
def checkpoint_identity(files: Sequence[Path]) -> List[List[Any]]:
    """``[name, sha256]`` of each checkpoint: changes whenever a method is retrained (and only then:
    a copied or touched run keeps its caches)."""
    from .data.identity import file_digest
    return [[f"{Path(f).parent.name}/{Path(f).name}", file_digest(f)[:16]] for f in files]


def eval_key(cfg: Config, *, classifier: str, checkpoints: Sequence[Path], data_identity: str,
             **episode: Any) -> Dict[str, Any]:
    """Everything that changes an evaluation's numbers: the whole ``eval`` section (so new
    options are covered automatically), the test data and its content fingerprint
    (``data_identity``: :func:`scl_plugin.data.fewshot.test_identity`, or the hash of whatever
    else the episodes are read from), the episode shape and seed given in ``episode`` (ways,
    shots, queries, episodes, episode_seed...), the resolved classifier and the checkpoint
    files' identity."""
    d = cfg.data
    return {"eval": dataclasses.asdict(cfg.eval), "classifier": classifier,
            "test_data": {"dataset": d.test_dataset or d.dataset, "root": str(d.test_root or d.root),
                          "image_size": d.image_size, "cub_split": d.cub_split, "identity": data_identity},
            "episode": episode, "test_time": {k: get_setting(cfg, k) for k in TEST_TIME_KEYS},
            "checkpoints": checkpoint_identity(checkpoints)}


def key_hash(key: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
