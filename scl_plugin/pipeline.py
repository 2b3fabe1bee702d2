"""Glue from a :class:`~scl_plugin.config.Config` to a trained, evaluated method.

``train(cfg)`` builds data, backbone and method, runs the shared training loop (resuming
from ``cfg.run_dir`` when checkpoints exist, skipping entirely when ``final.pt`` does) and
returns the trained module. ``evaluate(module, method, tasks, cfg)`` scores it on episodes.
Every method goes through these two functions; nothing here is method-specific beyond
choosing the loss module, the batch source and the few-shot classifier.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from .algorithms import (ANIL, BYOL, R2D2, SCL, Distiller, MAMLMethod, MatchingNetwork, MetaBaseline,
                         MetaOptNet, MetaSGDMethod, MetricLearning, MoCo, ProtoNet, SimCLR)
from .backbones import create_backbone
from .config import EMBEDDING_METHODS, EPISODIC_METHODS, Config, ConfigError, load_config, to_dict, to_yaml
from .data import FewShotData, build_fewshot
from .evaluation import evaluate as evaluate_episodes
from .evaluation.simpleshot import base_mean as simpleshot_base_mean
from . import training
from .training import CheckpointError, EpisodeBatches, FlatBatches, PKBatches, Trainer, load_checkpoint
from .utils import atomic_write_json, atomic_write_text, expand, seed_everything

EPISODIC = EPISODIC_METHODS + ("matchingnet",)
DEFAULT_CLASSIFIER = {"ce": "logreg", "scl": "logreg", "protonet": "proto_euclidean",
                      "scl_protonet": "proto_euclidean", "maml": "native", "fomaml": "native",
                      "anil": "native", "metasgd": "native", "metaoptnet": "native", "r2d2": "native",
                      "meta_baseline": "native"}
# Issue 19's embedding methods: linear probe on frozen features, Matching Networks its own attention.
DEFAULT_CLASSIFIER.update({m: "logreg" for m in EMBEDDING_METHODS}, matchingnet="native")
# Methods that only fine-tune a pretrained backbone: they need episodic.init_from.
NEEDS_INIT = {"scl_protonet": "SCL", "meta_baseline": "CE or SCL"}

# Episodic methods built from (backbone, cfg): one line each.
EPISODIC_BUILDERS: Dict[str, Callable[[nn.Module, Config], nn.Module]] = {
    "anil": lambda b, c: ANIL(b, c.data.ways, c.data.shots, c.data.queries, c.episodic.inner_lr,
                              c.episodic.inner_steps, c.episodic.eval_inner_steps, c.episodic.first_order),
    "metasgd": lambda b, c: MetaSGDMethod(b, c.data.ways, c.data.shots, c.data.queries, c.episodic.inner_lr,
                                          c.episodic.inner_steps, c.episodic.eval_inner_steps,
                                          c.episodic.first_order),
    "metaoptnet": lambda b, c: MetaOptNet(b, c.data.ways, c.data.shots, c.data.queries, c.episodic.svm_C,
                                          c.episodic.svm_iters, c.episodic.scale_init),
    "r2d2": lambda b, c: R2D2(b, c.data.ways, c.data.shots, c.data.queries, c.episodic.ridge_lambda,
                              c.episodic.scale_init),
    "meta_baseline": lambda b, c: MetaBaseline(b, c.data.ways, c.data.shots, c.data.queries, c.episodic.scale_init),
}


def classifier_for(cfg: Config) -> str:
    return DEFAULT_CLASSIFIER[cfg.method] if cfg.eval.classifier == "auto" else cfg.eval.classifier


def make_accelerator(cfg: Config) -> Accelerator:
    return training.make_accelerator(cfg.train)


# ----------------------------------------------------------------------------- building
def build_method(cfg: Config, data: FewShotData, *, gather: bool = False, init: bool = True) -> nn.Module:
    """The method module of ``cfg``; ``init=False`` skips ``episodic.init_from`` (when the
    weights are about to be loaded from this run's own checkpoint anyway)."""
    backbone = create_backbone(cfg.model, in_chans=data.channels, image_size=data.image_size)
    d, e = cfg.data, cfg.episodic
    if cfg.method in ("ce", "scl"):
        loss = cfg.loss if cfg.method == "scl" else dataclasses.replace(cfg.loss, lambda_global=0.0, lambda_spatial=0.0)
        return SCL(backbone, data.num_classes, loss, gather=gather)
    if cfg.method in NEEDS_INIT and not e.init_from:
        raise ConfigError(f"method {cfg.method} needs episodic.init_from=<{NEEDS_INIT[cfg.method]} run dir or checkpoint>")
    if init and e.init_from:
        init_backbone(backbone, e.init_from)
    if cfg.method in EPISODIC_BUILDERS:
        return EPISODIC_BUILDERS[cfg.method](backbone, cfg)
    if cfg.method in EMBEDDING_METHODS:
        return build_embedding_method(cfg, backbone, gather=gather)
    if cfg.method in ("protonet", "scl_protonet"):
        return ProtoNet(backbone, d.ways, d.shots, d.queries, e.distance)
    return MAMLMethod(backbone, d.ways, d.shots, d.queries, e.inner_lr, e.inner_steps, e.eval_inner_steps,
                      first_order=cfg.method == "fomaml")


def build_embedding_method(cfg: Config, backbone: nn.Module, *, gather: bool = False) -> nn.Module:
    """SimCLR / MoCo v2 / BYOL / triplet / N-pair / Matching Networks from ``cfg.embed``."""
    m, d = cfg.embed, cfg.data
    if cfg.method == "simclr":
        return SimCLR(backbone, m.proj_dim, m.temperature, gather=gather)
    if cfg.method == "moco":
        return MoCo(backbone, m.proj_dim, m.queue_size, m.momentum, m.temperature, gather=gather)
    if cfg.method == "byol":
        return BYOL(backbone, m.proj_dim, m.hidden_dim, m.momentum)
    if cfg.method in ("triplet", "npair"):
        return MetricLearning(backbone, cfg.method, m.proj_dim, m.margin, m.npair_l2)
    return MatchingNetwork(backbone, d.ways, d.shots, d.queries, fce=m.fce, fce_steps=m.fce_steps)


def _final_checkpoint(path: Any) -> Path:
    """A checkpoint file as is; for a run dir, its last stage (last distillation generation)."""
    path = expand(path)
    if path.is_dir():
        if not (path / "config.yaml").exists():
            raise CheckpointError(f"{path} is not a run directory (no config.yaml): train that run first")
        final = final_checkpoints(load_config(path / "config.yaml"))[-1]
        if not final.exists():
            raise CheckpointError(f"{path} has not finished training ({final} missing): train that run first")
        return final
    return path


def _load_weights(module: nn.Module, path: Path, expect: Optional[Dict[str, Any]] = None) -> None:
    try:
        module.load_state_dict(load_checkpoint(path, expect=expect)["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this config ({str(e).splitlines()[0]}); "
                              f"use the config it was trained with or another run_dir") from None


def init_backbone(backbone: nn.Module, source: Any) -> None:
    """Copy backbone weights from an SCL/CE/ProtoNet checkpoint (file or run dir)."""
    state = load_checkpoint(_final_checkpoint(source))["model"]
    prefix = next((p for p in ("backbone.", "student.backbone.", "maml.module.backbone.")
                   if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        raise CheckpointError(f"{source}: checkpoint has no backbone weights")
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    # strict=False only for BatchNorm running buffers, which MAML's BN policy removes
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    bad = [k for k in missing + unexpected if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    if bad:
        raise CheckpointError(f"{source}: backbone weights do not fit model.name (mismatch in {bad[:3]}...)")


def _validator(cfg: Config, data: FewShotData) -> Optional[Callable[[nn.Module], float]]:
    if not cfg.train.validate or data.val_tasks is None or cfg.data.val_episodes <= 0:
        return None
    episodes = [data.val_tasks[i] for i in range(min(cfg.data.val_episodes, len(data.val_tasks)))]

    def validate(module: nn.Module) -> float:
        accs = evaluate_episodes(module.backbone, episodes, cfg.data.ways, cfg.data.shots, cfg.data.queries,
                                 classifier="proto_cosine", progress=False)
        return float(np.mean(accs))
    return validate


# ----------------------------------------------------------------------------- training
def train(cfg: Config, data: Optional[FewShotData] = None, accelerator: Optional[Accelerator] = None,
          resume: bool = True) -> nn.Module:
    """Train ``cfg.method`` into ``cfg.run_dir`` (resumable; a finished run is just loaded).

    The wall time of the call that finishes training is kept in ``run_dir/train_time.json``.
    """
    t0 = time.time()
    done = is_done(cfg) and resume
    method = _train(cfg, data, accelerator, resume)
    run_dir = expand(cfg.run_dir)
    if not done and is_done(cfg) and (accelerator is None or accelerator.is_main_process):
        atomic_write_json(run_dir / "train_time.json", {"seconds": round(time.time() - t0, 1)})
    return method


def train_seconds(cfg: Config) -> Optional[float]:
    path = expand(cfg.run_dir) / "train_time.json"
    return json.loads(path.read_text())["seconds"] if path.exists() else None


def _train(cfg: Config, data: Optional[FewShotData], accelerator: Optional[Accelerator],
           resume: bool) -> nn.Module:
    seed_everything(cfg.seed, cfg.train.deterministic)
    acc = accelerator or make_accelerator(cfg)
    data = data or build_fewshot(cfg.data, seed=cfg.seed)
    run_dir = expand(cfg.run_dir)
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    if cfg.method in ("ce", "scl") and cfg.distill.teacher:
        teacher, _ = load_trained(cfg.distill.teacher, data)
        return _distill(cfg, data, teacher, acc, _validator(cfg, data), resume)
    final = run_dir / "train" / "final.pt"
    method = build_method(cfg, data, gather=acc.num_processes > 1, init=not (final.exists() and resume))
    meta = {"method": cfg.method, "backbone": cfg.model.name, "num_classes": data.num_classes}
    validate = _validator(cfg, data)
    if final.exists() and resume:
        _load_weights(method, final, meta)
    elif cfg.method in EPISODIC:
        e = cfg.episodic
        steps = min(100, e.meta_iterations)
        budget = e.meta_iterations if cfg.train.max_steps < 0 else min(e.meta_iterations, cfg.train.max_steps)
        tcfg = dataclasses.replace(cfg.train, optimizer="adam", lr=e.meta_lr, weight_decay=0.0,
                                   schedule="constant", max_steps=budget)
        epochs = math.ceil(e.meta_iterations / steps)
        trainer = Trainer(method, tcfg, run_dir / "train", epochs=epochs, accelerator=acc, validate=validate,
                          meta=meta, config=to_dict(cfg), desc=cfg.method)
        result = trainer.fit(EpisodeBatches(data.train_tasks, e.meta_batch_size, steps), steps, resume=resume)
        if not result.finished and result.steps >= e.meta_iterations:   # budget reached mid-epoch
            trainer.finalize()
    else:
        if getattr(method, "pk_batches", False):
            batches = PKBatches(data.pretrain_set(), cfg.embed.pk_classes, cfg.embed.pk_images, cfg.seed,
                                cfg.data.num_workers)
        else:
            batches = FlatBatches(data.pretrain_set(two_view=method.needs_two_views), cfg.data.batch_size,
                                  cfg.seed, cfg.data.num_workers)
        if hasattr(method, "total_steps"):      # schedules over the whole run (BYOL's EMA rate)
            per_epoch = batches.steps_per_epoch if cfg.train.steps_per_epoch < 1 else \
                min(batches.steps_per_epoch, cfg.train.steps_per_epoch)
            total = cfg.train.epochs * per_epoch
            method.total_steps = total if cfg.train.max_steps < 1 else min(total, cfg.train.max_steps)
        trainer = Trainer(method, cfg.train, run_dir / "train", epochs=cfg.train.epochs, accelerator=acc,
                          validate=validate, meta=meta, config=to_dict(cfg), desc=cfg.method)
        if not trainer.fit(batches, batches.steps_per_epoch, resume=resume).finished:
            return method          # stopped early (train.max_steps): never distil an unfinished teacher
    if cfg.method in ("ce", "scl"):
        method = _distill(cfg, data, method, acc, validate, resume)
    return method


def final_checkpoints(cfg: Config) -> list:
    """The files whose presence means ``cfg``'s training is complete."""
    run_dir = expand(cfg.run_dir)
    files = [] if (cfg.method in ("ce", "scl") and cfg.distill.teacher) else [run_dir / "train" / "final.pt"]
    if cfg.method in ("ce", "scl"):
        files += [run_dir / f"distill-{g}" / "final.pt" for g in range(1, cfg.distill.generations + 1)]
    return files


def is_done(cfg: Config) -> bool:
    return all(p.exists() for p in final_checkpoints(cfg))


def _distill(cfg: Config, data: FewShotData, teacher: SCL, acc: Accelerator, validate, resume: bool) -> nn.Module:
    run_dir, d = expand(cfg.run_dir), cfg.distill
    for g in range(1, d.generations + 1):
        module = Distiller.from_teacher(teacher, d)
        tcfg = dataclasses.replace(cfg.train, epochs=d.epochs, lr=d.lr)
        ckpt_dir = run_dir / f"distill-{g}"
        meta = {"method": f"{cfg.method}-distill", "backbone": cfg.model.name, "num_classes": data.num_classes}
        final = ckpt_dir / "final.pt"
        if final.exists() and resume:
            _load_weights(module, final, meta)
        else:
            batches = FlatBatches(data.pretrain_set(two_view=teacher.needs_two_views), cfg.data.batch_size,
                                  cfg.seed + g, cfg.data.num_workers)
            trainer = Trainer(module, tcfg, ckpt_dir, epochs=d.epochs, accelerator=acc, validate=validate,
                              meta=meta, config=to_dict(cfg), desc=f"distill g{g}",
                              parameters=module.student.parameters())
            trainer.fit(batches, batches.steps_per_epoch, resume=resume)
        teacher = module.student
    return teacher


def load_trained(run_dir: Any, data: Optional[FewShotData] = None) -> Tuple[nn.Module, Config]:
    """Rebuild a trained method from its run directory (``config.yaml`` + final checkpoints)."""
    run_dir = expand(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    data = data or build_fewshot(cfg.data, seed=cfg.seed)
    if cfg.method in ("ce", "scl") and cfg.distill.teacher:
        method, _ = load_trained(cfg.distill.teacher, data)
    else:
        method = build_method(cfg, data, init=False)
        _load_weights(method, run_dir / "train" / "final.pt")
    if cfg.method in ("ce", "scl"):
        for g in range(1, cfg.distill.generations + 1):
            module = Distiller.from_teacher(method, cfg.distill)
            _load_weights(module, run_dir / f"distill-{g}" / "final.pt")
            method = module.student
    return method, cfg


# ----------------------------------------------------------------------------- evaluation
def evaluate(method: nn.Module, cfg: Config, tasks: Any, ways: int, shots: int, queries: int,
             indices: Optional[np.ndarray] = None, progress: bool = True) -> np.ndarray:
    """Per-episode accuracies of ``method`` on ``tasks`` with the configured classifier."""
    clf = classifier_for(cfg)
    method.eval()
    if clf == "native":
        return evaluate_episodes(method.adapt, tasks, ways, shots, queries, classifier="native",
                                 indices=indices, progress=progress)
    return evaluate_episodes(method.backbone, tasks, ways, shots, queries, classifier=clf, flip=cfg.eval.flip,
                             batch_episodes=cfg.eval.batch_episodes, C=cfg.eval.C, max_iter=cfg.eval.max_iter,
                             tol=cfg.eval.tol, indices=indices,
                             progress=progress, **classifier_kwargs(method, cfg))


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
