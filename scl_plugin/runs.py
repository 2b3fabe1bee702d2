"""What a run directory holds, and whether what is in it belongs to the current settings.

A run records, next to its checkpoints, the *weight settings* it was trained with
(``settings.json``): every config key that changes the trained weights, and nothing that
only changes evaluation (``eval.*``, test episodes, test data, logging, the run's own path).
Resuming or reusing a run whose weight settings differ is refused with one line naming the
keys, so a result is never silently served for settings it was not trained with::

    from scl_plugin.config import load_config
    from scl_plugin.runs import stamp_run
    cfg = load_config("configs/scl.yaml", ["run_dir=runs/scl"])
    stamp_run(cfg)     # mark a run trained by an older version with these (known) settings

Evaluation caches are keyed by :func:`eval_key`: the whole ``eval`` section, the episode
shape and seed, the test data, the resolved classifier and the identity (size, mtime) of the
checkpoint files, so a cache is never served for other settings or retrained weights.
Training time is summed over every call that trained (:func:`add_train_seconds`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from .config import EPISODIC_METHODS, Config, ConfigError
from .utils import RunDirError, atomic_write_json, expand, make_run_dir

__all__ = ["weight_settings", "settings_fingerprint", "stamp_run", "check_run", "has_artifacts",
           "SettingsMismatch", "RunBusyError", "training_lock", "add_train_seconds", "train_seconds", "eval_key", "checkpoint_identity"]

SETTINGS_FILE = "settings.json"
TIME_FILE = "train_time.json"
EPISODIC = EPISODIC_METHODS      # every method trained by the episodic loop

# Keys that never change the trained weights (evaluation, bookkeeping, where files are).
# Validation (val_episodes, episode_seed, train.validate) only picks best.pt, never final.pt.
_NOT_WEIGHTS = {
    "run_dir", "eval", "data.root", "data.test_dataset", "data.test_root", "data.test_episodes",
    "data.val_episodes", "data.episode_seed", "data.cache_dir", "data.download", "train.log_every",
    "train.keep_last", "train.save_every", "train.validate", "episodic.eval_inner_steps",
    "train.max_steps",      # a step budget only pauses a run: final.pt exists once the full schedule ran
}
# Episodic methods train with Adam at episodic.meta_lr for episodic.meta_iterations steps.
_NOT_EPISODIC = {"loss", "distill", "data.batch_size", "train.epochs", "train.lr", "train.momentum",
                 "train.weight_decay", "train.optimizer", "train.schedule", "train.lr_decay_epochs",
                 "train.lr_decay_rate"}
# Flat pretraining (CE/SCL) ignores the episode shape and the meta-learning section.
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
    skip = set(_NOT_WEIGHTS) | (_NOT_EPISODIC if cfg.method in EPISODIC else _NOT_FLAT)
    if cfg.method not in EPISODIC and cfg.distill.generations == 0:
        skip.add("distill")
    if cfg.method in ("ce", "scl") and cfg.distill.teacher:       # pretraining comes from the teacher
        skip |= {"loss", "train.epochs", "train.lr"}
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

        stamp_run(load_config("configs/scl.yaml", ["run_dir=runs/old"]))
    """
    path = expand(run_dir if run_dir is not None else cfg.run_dir) / SETTINGS_FILE
    atomic_write_json(path, {"fingerprint": settings_fingerprint(cfg), "settings": weight_settings(cfg)})
    return path


class SettingsMismatch(ConfigError):
    """A run directory holds weights trained with other settings."""


def has_artifacts(run_dir: Path) -> bool:
    """True when ``run_dir`` holds any checkpoint (finished or not)."""
    return any(run_dir.glob("train/*.pt")) or any(run_dir.glob("distill-*/*.pt"))


def _show(v: Any) -> str:
    return json.dumps(v, default=str)


def check_run(cfg: Config, restart_hint: str = "--restart") -> None:
    """Refuse, in one line, to resume or reuse ``cfg.run_dir`` if its weights belong to other settings."""
    run_dir = expand(cfg.run_dir)
    if not has_artifacts(run_dir):
        return
    path = run_dir / SETTINGS_FILE
    if not path.exists():
        raise SettingsMismatch(
            f"{run_dir} holds checkpoints with no record of their settings (trained by an older "
            f"version): if they were trained with exactly this config, record it with "
            f"`python -c \"from scl_plugin.config import load_config; from scl_plugin.runs import stamp_run; "
            f"stamp_run(load_config('<config.yaml>', ['run_dir={run_dir}']))\"`; otherwise use another run_dir "
            f"or {restart_hint} to retrain")
    have = json.loads(path.read_text()).get("settings", {})
    want = weight_settings(cfg)
    # a key added to the config after the run was trained: fine while it has its default value
    defaults = _flatten(dataclasses.asdict(Config()))
    diff = [k for k in sorted(want) if (have[k] != want[k] if k in have else want[k] != defaults.get(k))]
    if diff:
        shown = ", ".join(f"{k}: {_show(have.get(k, '<unset>'))} there, {_show(want.get(k, '<unset>'))} now"
                          for k in diff[:6])
        more = f" (+{len(diff) - 6} more)" if len(diff) > 6 else ""
        raise SettingsMismatch(
            f"{run_dir} was trained with other settings ({shown}{more}): rerun with the settings it was "
            f"trained with, or use another run_dir or {restart_hint} to retrain")


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


def add_train_seconds(run_dir: Any, seconds: float) -> None:
    """Add one call's training time to the run's total (every call that trained counts)."""
    path = expand(run_dir) / TIME_FILE
    old = json.loads(path.read_text()) if path.exists() else {}
    atomic_write_json(path, {"seconds": round(float(old.get("seconds", 0.0)) + seconds, 1),
                             "calls": int(old.get("calls", 0)) + 1})


def reset_train_seconds(run_dir: Any) -> None:
    (expand(run_dir) / TIME_FILE).unlink(missing_ok=True)


def train_seconds(run_dir: Any) -> Optional[float]:
    """Training wall time summed over every call that trained this run (None if unknown)."""
    path = expand(run_dir) / TIME_FILE
    return json.loads(path.read_text())["seconds"] if path.exists() else None


# ----------------------------------------------------------------------------- evaluation caches
def checkpoint_identity(files: Sequence[Path]) -> List[List[Any]]:
    """``[name, size, mtime_ns]`` of each checkpoint: changes whenever a method is retrained."""
    out = []
    for f in files:
        st = Path(f).stat()
        out.append([str(Path(f).parent.name + "/" + Path(f).name), st.st_size, st.st_mtime_ns])
    return out


def eval_key(cfg: Config, *, classifier: str, checkpoints: Sequence[Path], **episode: Any) -> Dict[str, Any]:
    """Everything that changes an evaluation's numbers: the whole ``eval`` section (so new
    options are covered automatically), the test data, the episode shape and seed given in
    ``episode`` (ways, shots, queries, episodes, episode_seed...), the resolved classifier and
    the checkpoint files' identity."""
    d = cfg.data
    return {"eval": dataclasses.asdict(cfg.eval), "classifier": classifier,
            "test_data": {"dataset": d.test_dataset or d.dataset, "root": str(d.test_root or d.root),
                          "image_size": d.image_size, "cub_split": d.cub_split},
            "episode": episode, "eval_inner_steps": cfg.episodic.eval_inner_steps,
            "checkpoints": checkpoint_identity(checkpoints)}


def key_hash(key: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
