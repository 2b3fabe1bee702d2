"""Glue from a :class:`~scl_plugin.config.Config` to a trained, evaluated method.

``train(cfg)`` builds data, backbone and method, runs the shared training loop (resuming
from ``cfg.run_dir`` when checkpoints exist, skipping entirely when ``final.pt`` does) and
returns the trained module. ``evaluate(module, method, tasks, cfg)`` scores it on episodes.
Every method goes through these two functions, and nothing here knows a method: what differs
between methods is read from the method registry (:mod:`scl_plugin.registry`): the class that
builds it, its batches (episodes, flat or P x K), its default classifier, whether its backbone
starts from a parent run, and whether a distillation stage follows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from .algorithms import Distiller
from .backbones import create_backbone
from .config import Config, ConfigError, load_config, to_dict, to_yaml
from . import runs
from .data import FewShotData, build_fewshot
from .data.transforms import ImageSet, stats_for
from .distributed import broadcast_buffers, check_launch
from .evaluation import SupportAugment
from .evaluation import evaluate as evaluate_episodes
from .evaluation.simpleshot import base_mean as simpleshot_base_mean
from .evaluation.stats import mean_ci
from .registry import get_method, method_names
from . import training
from .training import CheckpointError, EpisodeBatches, FlatBatches, PKBatches, Trainer, load_checkpoint
from .utils import atomic_write_text, expand, make_run_dir, seed_everything

# The method tables of earlier versions, now read from the registry when asked for.
_TABLES = {
    "EPISODIC": lambda: method_names(batches="episodes"),
    "DEFAULT_CLASSIFIER": lambda: {m: get_method(m).classifier for m in method_names()},
    "NEEDS_INIT": lambda: {m: get_method(m).needs_init for m in method_names() if get_method(m).needs_init},
}


def __getattr__(name: str) -> Any:
    if name in _TABLES:
        return _TABLES[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def classifier_for(cfg: Config) -> str:
    return get_method(cfg.method).classifier if cfg.eval.classifier == "auto" else cfg.eval.classifier


def protocol_for(cfg: Config) -> str:
    """``eval.protocol`` where it applies (logistic-regression probes of an embedding); a
    method's own rule (prototypes, fine-tuning) keeps ``"pooled"``."""
    probe = cfg.eval.protocol != "pooled" and classifier_for(cfg) in ("logreg", "logreg_sklearn")
    return cfg.eval.protocol if probe else "pooled"


def support_augment_for(cfg: Config, tasks: Any = None) -> Optional[SupportAugment]:
    """The augmented protocol's support augmentation for ``cfg`` (``eval.support_augment``; None when
    it does not apply).

    The images' kind and normalisation come from the episodes' own ImageSet when ``tasks`` is
    a task set built by :func:`build_fewshot`; otherwise (e.g. the Omniglot challenge runs,
    normalised like omniglot-small) from the test dataset's name.
    """
    if protocol_for(cfg) == "pooled" or cfg.eval.support_augment <= 0:
        return None
    images = getattr(getattr(tasks, "dataset", None), "dataset", None)
    if isinstance(images, ImageSet):
        kind, size, mean, std = images.kind, images.image_size, images.mean.flatten(), images.std.flatten()
    else:
        name = cfg.data.test_dataset or cfg.data.dataset
        kind = "gray" if name.startswith("omniglot") else "rgb"
        size = cfg.data.image_size
        mean, std = stats_for(kind, 1 if kind == "gray" else 3)
    return SupportAugment.standard(kind, size, mean, std, copies=cfg.eval.support_augment,
                                   seed=cfg.data.episode_seed)


def make_accelerator(cfg: Config) -> Accelerator:
    acc = training.make_accelerator(cfg.train)
    check_launch(acc.num_processes)
    return acc


# ----------------------------------------------------------------------------- building
def build_method(cfg: Config, data: FewShotData, *, gather: bool = False, init: bool = True) -> nn.Module:
    """The method module of ``cfg`` (its registry entry builds it on a fresh backbone); ``data``
    gives the input shape and classes. A backbone that starts from a parent run
    (``episodic.init_from``) is loaded from it unless ``init=False`` (when the weights are about
    to be loaded from this run's own checkpoint anyway)."""
    entry = get_method(cfg.method)
    backbone = make_backbone(cfg, data.channels, data.image_size)
    if entry.parent_key == "episodic.init_from":
        source = cfg.episodic.init_from
        if entry.needs_init and not source:
            raise ConfigError(f"method {cfg.method} needs episodic.init_from=<{entry.needs_init} run dir or checkpoint>")
        if init and source:
            init_backbone(backbone, source)
    return entry.build(cfg, backbone, data, gather=gather)


def make_backbone(cfg: Config, channels: int, image_size: int) -> nn.Module:
    """``create_backbone`` with its failures (unknown name, bad kwargs, size) as one-line config errors."""
    try:
        return create_backbone(cfg.model, in_chans=channels, image_size=image_size)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config key 'model.name' ({cfg.model.name}, model.kwargs={cfg.model.kwargs}): "
                          f"{' '.join(str(e).split())}") from None


def _final_checkpoint(path: Any) -> Path:
    """A checkpoint file as is; for a run dir, its last stage (last distillation generation)."""
    try:
        return runs.parent_checkpoints(path)[-1]
    except runs.RunInputError as e:
        raise CheckpointError(str(e)) from None


def _load_weights(module: nn.Module, path: Path, expect: Optional[Dict[str, Any]] = None) -> None:
    state = load_checkpoint(path, expect=expect)["model"]      # its own one-line errors
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit this config ({str(e).splitlines()[0][:150]}): "
                              f"delete it or retrain with --restart, or use another run_dir") from None


def backbone_prefix(state: Dict[str, Any]) -> Optional[str]:
    """Where a method's state dict keeps its backbone: the shortest key prefix ending in a
    ``backbone`` module (``backbone.``, a distilled student's ``student.backbone.``, a learn2learn
    wrapper's ``<wrapper>.module.backbone.``; an EMA copy such as ``key_backbone.`` is another module).
    None: no backbone."""
    prefixes = set()
    for key in state:
        parts = key.split(".")
        if "backbone" in parts[:-1]:
            prefixes.add(".".join(parts[:parts.index("backbone") + 1]) + ".")
    return min(prefixes, key=lambda p: (p.count("."), p)) if prefixes else None


def init_backbone(backbone: nn.Module, source: Any) -> None:
    """Copy backbone weights from a finished run's checkpoint (file or run dir), whatever the method."""
    state = load_checkpoint(_final_checkpoint(source))["model"]
    prefix = backbone_prefix(state)
    if prefix is None:
        raise CheckpointError(f"{source}: checkpoint has no backbone weights")
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    # strict=False only for BatchNorm running buffers, which a BN policy of batch statistics removes
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    bad = [k for k in missing + unexpected if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    if bad:
        raise CheckpointError(f"{source}: backbone weights do not fit model.name (mismatch in {bad[:3]}...)")


def _validator(cfg: Config, data: FewShotData) -> Optional[Callable[[nn.Module], float]]:
    if not cfg.train.validate or data.val_tasks is None or cfg.data.val_episodes <= 0:
        return None
    episodes = [data.val_tasks[i] for i in range(min(cfg.data.val_episodes, len(data.val_tasks)))]

    def validate(module: nn.Module) -> Dict[str, float]:
        accs = evaluate_episodes(module.backbone, episodes, cfg.data.ways, cfg.data.shots, cfg.data.queries,
                                 classifier="proto_cosine", progress=False)
        mean, ci = mean_ci(accs)           # the CI tells a converged curve from noise (analysis.convergence)
        return {"val_acc": mean, "val_ci95": ci}
    return validate


# ----------------------------------------------------------------------------- training
def train(cfg: Config, data: Optional[FewShotData] = None, accelerator: Optional[Accelerator] = None,
          resume: bool = True) -> nn.Module:
    """Train ``cfg.method`` into ``cfg.run_dir`` (resumable; a finished run is just loaded).

    A run records its weight settings (:mod:`scl_plugin.runs`); resuming or reusing a run
    trained with other settings raises :class:`~scl_plugin.runs.SettingsMismatch`. The wall
    time of every call that trained is summed in ``run_dir/train_time.json``. ``data`` may be
    a FewShotData or a zero-argument callable returning one (built only if training is needed).
    """
    if resume:
        runs.check_run(cfg)
    if resume and is_done(cfg):
        method, _ = load_trained(cfg.run_dir, data=data, cfg=cfg)
        if accelerator is not None:
            method.to(accelerator.device)
        return method
    training.trainer.check_trackers(cfg.train)   # a tracker's missing package fails here, before any data is read
    main = accelerator is None or accelerator.is_main_process
    run_dir = expand(cfg.run_dir)
    before = _bookkeeping(run_dir)
    with runs.training_lock(cfg.run_dir) if main else contextlib.nullcontext():
        try:
            data = data() if callable(data) else data
            if not resume and main:
                runs.reset_train_seconds(cfg.run_dir)
            clock = runs.TrainClock(cfg.run_dir) if main else None
            try:
                with _sigterm_as_interrupt():
                    method = _train(cfg, data, accelerator, resume, clock)
                broadcast_buffers(method)   # every rank holds exactly the saved model (rank 0's BN statistics)
                return method
            finally:
                if main and runs.has_artifacts(run_dir):
                    clock.stop()
        except BaseException:
            if main and not runs.has_artifacts(run_dir):
                _remove_new_bookkeeping(run_dir, before)
            raise


_BOOKKEEPING = ("config.yaml", runs.SETTINGS_FILE, runs.TIME_FILE, ".train.lock", "train/metrics.jsonl",
                "train/train.log")


def _bookkeeping(run_dir: Path) -> Dict[str, bool]:
    return {"dir": run_dir.exists(), **{name: (run_dir / name).exists() for name in _BOOKKEEPING}}


def _remove_new_bookkeeping(run_dir: Path, before: Dict[str, bool]) -> None:
    """A call that failed before writing any checkpoint leaves nothing behind: the files it
    created (config, settings, time, lock, logs) go, and so does the run folder if it made it."""
    for name in _BOOKKEEPING:
        if not before[name]:
            (run_dir / name).unlink(missing_ok=True)
    if not before["dir"]:
        for folder in sorted((p for p in run_dir.rglob("*") if p.is_dir()), reverse=True) + [run_dir]:
            with contextlib.suppress(OSError):
                folder.rmdir()          # only if empty


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While training, SIGTERM (``kill``, a scheduler's time limit) raises KeyboardInterrupt
    like Ctrl-C, so the ``finally`` blocks run: the call's training time is recorded (the
    default SIGTERM action ends the process without them, and the run's total would silently
    miss that call). Main thread only (signals cannot be set elsewhere); restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def train_seconds(cfg: Config) -> Optional[float]:
    """Training wall time of ``cfg``'s run, summed over every call that trained it."""
    return runs.train_seconds(cfg.run_dir)


def _train(cfg: Config, data: Optional[FewShotData], accelerator: Optional[Accelerator],
           resume: bool, clock: Optional[runs.TrainClock] = None) -> nn.Module:
    seed_everything(cfg.seed, cfg.train.deterministic)
    acc = accelerator or make_accelerator(cfg)
    data = data or build_fewshot(cfg.data, seed=cfg.seed)
    run_dir = expand(cfg.run_dir)
    if acc.is_main_process and (not resume or not runs.has_artifacts(run_dir)):
        # config.yaml and settings.json describe the weights: written when a training starts
        # from scratch, never rewritten by a resume (only a matching one gets this far)
        make_run_dir(run_dir)
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
        runs.stamp_run(cfg, run_dir)
    entry = get_method(cfg.method)
    if entry.distills and cfg.distill.teacher:
        teacher = load_teacher(cfg, data)
        return _distill(cfg, data, teacher, acc, _validator(cfg, data), resume, clock)
    final = run_dir / "train" / "final.pt"
    method = build_method(cfg, data, gather=acc.num_processes > 1, init=not (final.exists() and resume))
    meta = {"method": cfg.method, "backbone": cfg.model.name, "num_classes": data.num_classes,
            "channels": data.channels}
    validate = _validator(cfg, data)
    if final.exists() and resume:
        _load_weights(method, final, meta)
    elif entry.episodic:
        e = cfg.episodic
        steps = min(100, e.meta_iterations)
        budget = e.meta_iterations if cfg.train.max_steps < 0 else min(e.meta_iterations, cfg.train.max_steps)
        epochs = math.ceil(e.meta_iterations / steps)
        # the method's own recipe (episodic.optimizer ...; its config), in "epochs" of `steps` tasks
        tcfg = dataclasses.replace(cfg.train, optimizer=e.optimizer, lr=e.meta_lr, weight_decay=e.weight_decay,
                                   momentum=e.momentum, nesterov=e.nesterov, max_steps=budget,
                                   schedule="step" if e.lr_decay_at else "constant",
                                   lr_decay_epochs=[max(1, round(f * e.meta_iterations / steps)) for f in e.lr_decay_at],
                                   lr_decay_rate=e.lr_decay_rate)
        trainer = Trainer(method, tcfg, run_dir / "train", epochs=epochs, accelerator=acc, validate=validate,
                          meta=meta, config=to_dict(cfg), desc=cfg.method, on_checkpoint=clock and clock.tick)
        result = trainer.fit(EpisodeBatches(data.train_tasks, e.meta_batch_size, steps, cfg.data.num_workers), steps,
                             resume=resume)
        if not result.finished and result.steps >= e.meta_iterations:   # budget reached mid-epoch
            trainer.finalize()
    else:
        if entry.batches == "pk":
            batches = PKBatches(data.pretrain_set(), cfg.embed.pk_classes, cfg.embed.pk_images, cfg.seed,
                                cfg.data.num_workers)
        else:
            two = method.needs_two_views
            batches = FlatBatches(_pretrain_set(cfg, data, two), cfg.data.batch_size, cfg.seed,
                                  cfg.data.num_workers)
        if hasattr(method, "total_steps"):      # schedules over the whole run (an EMA rate)
            per_epoch = batches.steps_per_epoch if cfg.train.steps_per_epoch < 1 else \
                min(batches.steps_per_epoch, cfg.train.steps_per_epoch)
            total = cfg.train.epochs * per_epoch
            method.total_steps = total   # over the full schedule: train.max_steps only pauses a run
        trainer = Trainer(method, cfg.train, run_dir / "train", epochs=cfg.train.epochs, accelerator=acc,
                          validate=validate, meta=meta, config=to_dict(cfg), desc=cfg.method,
                          on_checkpoint=clock and clock.tick)
        if not trainer.fit(batches, batches.steps_per_epoch, resume=resume).finished:
            return method          # stopped early (train.max_steps): never distil an unfinished teacher
    if entry.distills:
        method = _distill(cfg, data, method, acc, validate, resume, clock)
    return method


def final_checkpoints(cfg: Config) -> list:
    """The files whose presence means ``cfg``'s training is complete."""
    return runs.final_checkpoints(cfg)


def is_done(cfg: Config) -> bool:
    return all(p.exists() for p in final_checkpoints(cfg))


def _backbone_factory(cfg: Config, data: FewShotData) -> Callable[[], nn.Module]:
    """Builds a fresh backbone of ``cfg.model`` (a distillation student's)."""
    return lambda: create_backbone(cfg.model, in_chans=data.channels, image_size=data.image_size)


def _pretrain_set(cfg: Config, data: FewShotData, two_view: bool):
    """Flat training set; the second view uses ``data.augment_second_view`` when set."""
    second = cfg.data.augment_second_view
    if two_view and second != "same":
        return data.pretrain_set(two_view=True, second_augment=second)
    return data.pretrain_set(two_view=two_view)


def distill_epochs(cfg: Config) -> int:
    """Epochs of each distillation generation: ``distill.epochs``, or (None) as many as the
    teacher trained: a teacher run's ``train.epochs`` (its ``config.yaml``), else this config's."""
    if cfg.distill.epochs is not None:
        return cfg.distill.epochs
    teacher = cfg.distill.teacher
    if teacher and expand(teacher).is_dir() and (expand(teacher) / "config.yaml").is_file():
        return load_config(expand(teacher) / "config.yaml").train.epochs
    return cfg.train.epochs


def _distill(cfg: Config, data: FewShotData, teacher: nn.Module, acc: Accelerator, validate, resume: bool,
             clock: Optional[runs.TrainClock] = None) -> nn.Module:
    run_dir, d = expand(cfg.run_dir), cfg.distill
    epochs = distill_epochs(cfg)
    for g in range(1, d.generations + 1):
        module = Distiller.from_teacher(teacher, d, new_backbone=_backbone_factory(cfg, data))
        tcfg = dataclasses.replace(cfg.train, epochs=epochs, lr=d.lr)
        ckpt_dir = run_dir / f"distill-{g}"
        meta = {"method": f"{cfg.method}-distill", "backbone": cfg.model.name, "num_classes": data.num_classes,
                "channels": data.channels}
        final = ckpt_dir / "final.pt"
        if final.exists() and resume:
            _load_weights(module, final, meta)
        else:
            two = teacher.needs_two_views and d.double_transform
            batches = FlatBatches(_pretrain_set(cfg, data, two), cfg.data.batch_size,
                                  cfg.seed + g, cfg.data.num_workers)
            trainer = Trainer(module, tcfg, ckpt_dir, epochs=epochs, accelerator=acc, validate=validate,
                              meta=meta, config=to_dict(cfg), desc=f"distill g{g}",
                              parameters=module.student.parameters(), on_checkpoint=clock and clock.tick)
            trainer.fit(batches, batches.steps_per_epoch, resume=resume)
        teacher = module.student
    return teacher


def _model_shape(cfg: Config, data: Any) -> Any:
    """What building the model needs from the data (classes, channels, size): from the
    checkpoint's meta, so that loading a finished run reads no image; else from ``data`` (a
    FewShotData or a callable returning one) or a fresh build (checkpoints of older versions)."""
    files = final_checkpoints(cfg)
    meta = load_checkpoint(files[0]).get("meta", {}) if files and files[0].exists() else {}
    if "num_classes" in meta and "channels" in meta:
        return SimpleNamespace(num_classes=meta["num_classes"], channels=meta["channels"],
                               image_size=cfg.data.image_size)
    if data is not None:
        return data() if callable(data) else data
    return build_fewshot(cfg.data, seed=cfg.seed)


def load_trained(run_dir: Any, data: Any = None, cfg: Optional[Config] = None) -> Tuple[nn.Module, Config]:
    """Rebuild a trained method from its run directory (``config.yaml`` + final checkpoints).

    ``cfg`` (default: the run's ``config.yaml``) must have the run's weight settings.
    """
    run_dir = expand(run_dir)
    if cfg is None:
        if not (run_dir / "config.yaml").exists():
            raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml): train that run first")
        cfg = load_config(run_dir / "config.yaml")
    missing = [f for f in final_checkpoints(cfg) if not f.exists()]
    if missing:
        raise CheckpointError(f"{run_dir} has not finished training ({missing[0]} missing): "
                              f"resume it with `scl-train {run_dir / 'config.yaml'}` (it continues from its newest "
                              f"checkpoint), then evaluate")
    entry = get_method(cfg.method)
    if entry.distills and cfg.distill.teacher:
        method = load_teacher(cfg, data)
    else:
        method = build_method(cfg, _model_shape(cfg, data), init=False)
        _load_weights(method, run_dir / "train" / "final.pt")
    if entry.distills:
        for g in range(1, cfg.distill.generations + 1):
            # the student's input shape: from the checkpoint's meta (no image read) or the data
            module = Distiller.from_teacher(method, cfg.distill,
                                            new_backbone=_backbone_factory(cfg, _model_shape(cfg, data)))
            _load_weights(module, run_dir / f"distill-{g}" / "final.pt")
            method = module.student
    return method, cfg


def load_teacher(cfg: Config, data: Any = None) -> nn.Module:
    """``cfg.distill.teacher``: a finished run directory of a teacher method (:func:`load_trained`),
    or a released RFS / SCL checkpoint file, built as ``cfg``'s method on ``resnet12``
    with its weights (:func:`build_released`). For a file, ``data`` (a FewShotData) is checked
    to have the classes of the teacher's classifier."""
    source = expand(cfg.distill.teacher)
    if not source.is_file():
        return load_trained(source, data)[0]
    from .backbones.rfs import RFSCheckpointError
    d = cfg.distill
    try:
        teacher, ckpt = build_released(cfg, source)
    except RFSCheckpointError as e:     # the file is the user's input
        raise ConfigError(f"distill.teacher={cfg.distill.teacher}: {e}") from None
    logits = d.lambda_kd > 0 or d.lambda_ce > 0
    if logits and ckpt.num_classes is None:
        raise ConfigError(f"distill.teacher={source} has no linear classifier: KD needs the teacher's logits "
                          f"(and the distillation's cross-entropy its classes); set distill.lambda_kd=0 distill.lambda_ce=0 to distil features only")
    n = getattr(data, "num_classes", None)
    if logits and n is not None and ckpt.num_classes != n:
        raise ConfigError(f"distill.teacher={source} classifies {ckpt.num_classes} classes but the training split "
                          f"of data.dataset={cfg.data.dataset} has {n}: distil on the data it was trained on")
    if d.cd_features == "projection" and d.lambda_cd > 0 and not ckpt.head:
        raise ConfigError(f"distill.teacher={source} has no projection head ({ckpt.layout} layout): "
                          f"distill.cd_features=projection needs one; use distill.cd_features=pooled")
    return teacher


def build_released(cfg: Config, path: Any) -> Tuple[nn.Module, Any]:
    """``(method, checkpoint)``: ``cfg``'s method on our ``resnet12`` with the weights of a released
    RFS / SCL checkpoint file (:mod:`scl_plugin.backbones.rfs`): what the method takes of it
    (``load_released``; the backbone always, a teacher method also the linear classifier and, from
    SCL's code, the projection head and spatial attention, its config adjusted to the file's shapes by
    ``released_config``). The model's shape comes from the file and the config, so no training
    image is read. Raises ``RFSCheckpointError`` for a file that does not fit."""
    from .backbones.rfs import read_released
    from .data.fewshot import channels_for
    if cfg.model.name != "resnet12":
        raise ConfigError(f"released RFS / SCL checkpoints are ResNet-12: set model.name=resnet12 "
                          f"(config has {cfg.model.name!r})")
    ckpt = read_released(path)
    cfg = get_method(cfg.method).cls.released_config(cfg, ckpt)
    # the classifier keeps the checkpoint's classes (few-shot evaluation does not use it)
    shape = SimpleNamespace(num_classes=ckpt.num_classes or 1, channels=channels_for(cfg.data.dataset),
                            image_size=cfg.data.image_size)
    method = build_method(cfg, shape, init=False)
    method.load_released(ckpt)
    return method, ckpt


# ----------------------------------------------------------------------------- evaluation
def evaluate(method: nn.Module, cfg: Config, tasks: Any, ways: int, shots: int, queries: int,
             indices: Optional[np.ndarray] = None, progress: bool = True, split=None) -> np.ndarray:
    """Per-episode accuracies of ``method`` on ``tasks`` with the configured classifier and
    protocol (``cfg.eval``); ``split`` as in :func:`scl_plugin.evaluation.evaluate`."""
    clf = classifier_for(cfg)
    method.eval()
    if hasattr(method, "configure_eval"):      # a FewShotMethod (not a bare backbone)
        method.configure_eval(cfg)
    if clf == "native":
        return evaluate_episodes(method.adapt, tasks, ways, shots, queries, classifier="native",
                                 indices=indices, progress=progress, split=split)
    return evaluate_episodes(method.backbone, tasks, ways, shots, queries, classifier=clf, flip=cfg.eval.flip,
                             batch_episodes=cfg.eval.batch_episodes, C=cfg.eval.C, max_iter=cfg.eval.max_iter,
                             tol=cfg.eval.tol, indices=indices, progress=progress, split=split,
                             protocol=protocol_for(cfg), combine=cfg.eval.combine,
                             support_augment=support_augment_for(cfg, tasks), **classifier_kwargs(method, cfg))


def classifier_kwargs(method: nn.Module, cfg: Config) -> Dict[str, Any]:
    """Extra inputs of the configured classifier: SimpleShot's base-class mean feature, computed
    once per method on the un-augmented training split of ``cfg.data`` and kept on the module."""
    if classifier_for(cfg) != "simpleshot":
        return {}
    mean = getattr(method, "_simpleshot_mean", None)
    if mean is None:
        train_set = build_fewshot(cfg.data, seed=cfg.seed).pretrain_set(augment="none")
        mean = simpleshot_base_mean(method.backbone, train_set, flip=cfg.eval.flip)
        method._simpleshot_mean = mean
    return {"base_mean": mean}
