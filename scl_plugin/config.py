"""Typed configuration: YAML files in ``configs/`` validated against dataclasses.

Every config file is merged onto the dataclass schema below with OmegaConf's structured
configs, so an unknown key or a wrong type is an error that names the key. Fields with a
closed set of values declare it in ``metadata["choices"]`` and are checked after the merge.

A YAML file may extend another one with ``_base_: other.yaml`` (path relative to the file,
applied recursively); command-line ``key=value`` overrides (dotted keys, e.g.
``train.epochs=3``) are merged last.

The methods are not listed here: ``method`` takes any name of the method registry
(:mod:`scl_plugin.registry`, filled by each method's own module), asked at validation time, and
each method checks the settings it cannot train with (``check_config``). ``METHODS``,
``EPISODIC_METHODS`` and ``EMBEDDING_METHODS`` are read from the registry when asked for.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .registry import get_method, method_names

__all__ = [
    "ConfigError", "DataConfig", "ModelConfig", "SCLLossConfig", "DistillConfig",
    "TrainConfig", "EpisodicConfig", "EvalConfig", "EmbedConfig", "Config", "load_config", "to_yaml",
    "METHODS", "EPISODIC_METHODS", "EMBEDDING_METHODS", "DATASETS", "DEFAULT_METHOD",
]

DATASETS = (
    "omniglot-small",   # ../shared/data: background small1 (train) / small2 (test)
    "omniglot",         # learn2learn FullOmniglot (download path)
    "mini-imagenet", "tiered-imagenet", "cifarfs", "fc100",
    "cub", "folder",     # cross-domain test sets
    "synthetic",         # generated separable images, for tests and smoke runs
)
DEFAULT_METHOD = "scl"       # the package's own method: what a config without `method:` trains

# The method tables, from the registry when asked for (``from scl_plugin.config import METHODS``).
_METHOD_TABLES = {
    "METHODS": lambda: method_names(),
    # meta-trained on tasks by the episodic loop
    "EPISODIC_METHODS": lambda: method_names(batches="episodes"),
    # other ways of pretraining an embedding, probed like SCL (no distillation stage)
    "EMBEDDING_METHODS": lambda: tuple(m for m in method_names(distills=False) if not get_method(m).episodic),
}


def __getattr__(name: str) -> Any:
    if name in _METHOD_TABLES:
        return _METHOD_TABLES[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ConfigError(ValueError):
    """A config problem, reported in one line naming the key and what is allowed."""


def choices(*values: str, default: str) -> Any:
    return field(default=default, metadata={"choices": tuple(values)})


@dataclass
class DataConfig:
    dataset: str = choices(*DATASETS, default="omniglot-small")
    root: str = "../shared/data"
    # On-disk layout of `root` ("auto": detected from the files present; see the README table).
    format: str = "auto"
    # Cross-domain: pretrain/meta-train on `dataset`, test episodes on `test_dataset`.
    test_dataset: Optional[str] = None
    test_root: Optional[str] = None
    # CUB novel split: "closerlook" (50 classes, class index % 4 == 3; used by SCL and the
    # mini->CUB literature) or "metadataset" (learn2learn's default 30 test classes).
    cub_split: str = choices("closerlook", "metadataset", default="closerlook")
    image_size: int = 28
    ways: int = 5
    shots: int = 1
    queries: int = 15
    train_episodes: int = -1     # learn2learn num_tasks for meta-training (-1: infinite)
    val_episodes: int = 100
    test_episodes: int = 600
    episode_seed: int = 0        # test/val episodes are a function of this seed only
    augment: str = choices("none", "standard", "simclr", default="standard")
    # Augmentation of the second view of two-view (contrastive) batches; "same" = `augment`.
    # The authors' pretraining: first view standard, second view simclr (their aug_type).
    augment_second_view: str = choices("same", "none", "standard", "simclr", default="same")
    batch_size: int = 64         # flat pretraining batch (per process)
    num_workers: int = -1        # DataLoader workers; -1: min(8, cores) with CUDA, 0 without
    cache_dir: str = "~/.cache/scl_plugin"   # writable; data roots may be read-only
    download: bool = False


@dataclass
class ModelConfig:
    name: str = "conv4"          # any timm model name; resnet12 / conv4 are registered
    pretrained: bool = False
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SCLLossConfig:
    """Loss weights and hyper-parameters (defaults: SCL paper Sec. 4.1 / authors' code)."""
    lambda_ce: float = 1.0
    lambda_global: float = 0.0
    lambda_spatial: float = 0.0
    global_mode: str = choices("supervised", "selfsup", default="supervised")
    spatial_mode: str = choices("supervised", "selfsup", default="supervised")
    tau_global: float = 0.1      # temperature (the code uses inverse temperature 10)
    tau_spatial: float = 0.1
    proj_dim: int = 80           # projection size d' of both heads
    chunk_size: int = 0          # SC loss anchor chunk; 0 = automatic
    # Spatial similarity aggregation over positions of the summed directional cosines
    # (authors' models/attention.py): mean, sum, max, or logsum = (1/lambda_lse) log sum exp(lambda_lse x).
    aggregation: str = choices("mean", "sum", "max", "logsum", default="mean")
    lambda_lse: float = 6.0


@dataclass
class DistillConfig:
    generations: int = 0         # 0 = no distillation; each generation's student teaches the next
    # None: as long as the teacher trained (its train.epochs; a released checkpoint: this config's
    # train.epochs), with the same lr decay epochs: the SCL authors' and RFS's recipes
    epochs: Optional[int] = None
    lr: float = 0.01
    lambda_kd: float = 1.0
    lambda_cd: float = 10.0
    lambda_ce: float = 0.0
    kd_temperature: float = 4.0
    # what to distill (skips pretraining): the run dir of a trained CE/SCL run, or a released RFS /
    # SCL ResNet-12 checkpoint file (.pth; model.name=resnet12), built as this config's method
    teacher: Optional[str] = None
    # Defaults = the authors' train_distillation.py: L_CD on the L2-normalised pooled backbone
    # features (the projection head gets no gradient), one augmented view per image, and a
    # student freshly built with the backbone's own initialisation. Earlier behaviour of this
    # package: cd_features=projection double_transform=true student_init=reset.
    cd_features: str = choices("pooled", "projection", default="pooled")
    double_transform: bool = False   # two views when the teacher was trained with contrastive losses
    student_init: str = choices("backbone", "reset", default="backbone")


@dataclass
class TrainConfig:
    epochs: int = 90
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    optimizer: str = choices("sgd", "adam", default="sgd")
    schedule: str = choices("step", "cosine", "constant", default="step")
    lr_decay_epochs: List[int] = field(default_factory=lambda: [60, 80])
    lr_decay_rate: float = 0.1
    mixed_precision: str = choices("no", "fp16", "bf16", default="no")
    grad_accum: int = 1
    max_steps: int = -1          # stop after this many optimizer steps (-1: no limit)
    steps_per_epoch: int = -1    # cap on steps per epoch (-1: a full pass)
    keep_last: int = 2           # checkpoints kept besides the best one
    save_every: int = 0          # also checkpoint every N optimizer steps (0: epoch ends only)
    validate: bool = True        # nearest-prototype accuracy on validation episodes each epoch
    log_every: int = 10          # metrics are read from the device (a sync) once per this many steps
    progress_every_s: float = 30.0   # a progress line (train/train.log; stderr without a terminal) this often
    deterministic: bool = False
    channels_last: bool = False  # NHWC activations (faster convolutions on tensor-core GPUs)
    compile: bool = False        # torch.compile the backbone (not for maml/fomaml)
    # Experiment trackers (Accelerate's): "tensorboard", "wandb", "mlflow", ... or several, comma-separated
    # ("tensorboard,wandb"); None: none. They get the rows of train/metrics.jsonl and the run's settings as
    # hyper-parameters; each tracker's package comes with the pip extra of its name (scl_plugin[tensorboard]).
    log_with: Optional[str] = None

    def trackers(self) -> List[str]:
        """The tracker names of :attr:`log_with`, in order, without repeats ([] for none)."""
        names = [n.strip() for n in (self.log_with or "").split(",")]
        return list(dict.fromkeys(n for n in names if n and n.lower() != "none"))


@dataclass
class EpisodicConfig:
    """Meta-training of the episodic methods (MAML, ProtoNet, ANIL, Meta-SGD, MetaOptNet, R2-D2,
    Meta-Baseline)."""
    meta_iterations: int = 1000
    meta_batch_size: int = 4
    meta_lr: float = 1e-3
    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_inner_steps: int = 3         # test time: inner steps on the support set (MAML, FO-MAML, ANIL, Meta-SGD)
    eval_lr_scale: float = 1.0        # test time: the inner learning rate(s) times this (Meta-SGD: its learned rates)
    distance: str = choices("euclidean", "cosine", default="euclidean")
    init_from: Optional[str] = None   # checkpoint to initialise the backbone (SCL -> ProtoNet, Meta-Baseline)
    first_order: bool = False         # ANIL / Meta-SGD: first-order meta-gradient
    scale_init: float = 10.0          # learnable logit scale: Meta-Baseline 10, MetaOptNet / R2-D2 1
    svm_C: float = 0.1                # MetaOptNet: SVM regularisation C
    svm_iters: int = 3                # MetaOptNet: QP solver iterations (train and test)
    ridge_lambda: float = 1.0         # R2-D2: initial ridge penalty (learned)
    # The meta-optimiser: part of a method's recipe, set in its config (default: Adam at meta_lr,
    # constant). lr_decay_at: fractions of meta_iterations where the lr is multiplied by
    # lr_decay_rate (MetaOptNet / R2-D2: SGD, their step decays scaled to the budget).
    optimizer: str = choices("adam", "sgd", default="adam")
    momentum: float = 0.9             # SGD only
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_decay_at: List[float] = field(default_factory=list)
    lr_decay_rate: float = 0.1


@dataclass
class EmbedConfig:
    """SimCLR, MoCo v2, BYOL, triplet, N-pair and Matching Networks (defaults: their papers,
    queue and batch sizes scaled to few-shot data)."""
    proj_dim: int = 128           # projection size (SimCLR / MoCo / BYOL / triplet / N-pair)
    hidden_dim: int = 0           # MLP hidden size of BYOL's projector and predictor (0: feature dim)
    temperature: float = 0.2      # NT-Xent (SimCLR) and InfoNCE (MoCo v2) temperature
    momentum: float = 0.999       # MoCo: key encoder EMA; BYOL: base tau (cosine-annealed to 1)
    queue_size: int = 4096        # MoCo negatives queue (a multiple of the global batch size)
    margin: float = 0.2           # triplet margin on squared distances of unit embeddings
    npair_l2: float = 0.002       # N-pair embedding L2 regulariser (Sohn 2016)
    pk_classes: int = 16          # P classes x K images per batch (triplet / N-pair)
    pk_images: int = 4
    fce: bool = False             # Matching Networks: full-context embeddings (LSTMs)
    fce_steps: int = 1            # attention-LSTM steps for the query embedding
    # Matching Networks' attention logits: matching_scale * cos(query, support), the scale learned
    # (initialised at 10 as Meta-Baseline's / cosine classifiers' learnable scale). The paper's raw
    # cosines (matching_scale=1, matching_learn_scale=false) lie in [0, 1] on ReLU features: the
    # attention stays nearly uniform. matching_normalize_query=false: easyfsl's / the original code's
    # dot product of the raw query with unit support vectors (then a scale of 1 is usual).
    matching_scale: float = 10.0
    matching_learn_scale: bool = True
    matching_normalize_query: bool = True


@dataclass
class EvalConfig:
    # auto: logistic regression for pretrained embeddings (CE/SCL/distilled, the paper's
    # protocol), the method's own rule for ProtoNet (prototypes) and MAML (fine-tuning).
    # simpleshot: nearest centroid on CL2N features (base-class mean removed, L2-normalised).
    classifier: str = choices("auto", "logreg", "logreg_sklearn", "proto_cosine", "proto_euclidean",
                              "native", "simpleshot", default="auto")
    C: float = 1.0               # inverse L2 strength, as scikit-learn's LogisticRegression
    max_iter: int = 1000
    tol: float = 1e-4
    flip: bool = False           # average features of the image and its horizontal flip
    batch_episodes: int = 100
    # pooled: one probe on the pooled features (RFS). scl: the SCL authors' eval/meta_eval.py,
    # used for the logistic-regression classifiers (CE/SCL/distilled embeddings): each support
    # image replaced by `support_augment` copies through the dataset's standard training
    # augmentation, one probe on pooled and one on AdaptiveMaxPool2d(2) spatial features,
    # class probabilities combined by `combine` (sum or element-wise max).
    protocol: str = choices("pooled", "scl", default="pooled")
    combine: str = choices("sum", "max", default="sum")
    support_augment: int = 0     # augmented copies per support image (protocol scl); 0 = none
    ci: str = choices("normal", "t", default="normal")   # 95% CI: 1.96 or Student's t (n-1 dof)
    # Test-time settings chosen on validation episodes, never test ones (scl_plugin.selection):
    # {key: [candidates]} over eval.* and TEST_TIME_KEYS, e.g. {episodic.eval_inner_steps: [1, 3, 5, 10]};
    # the best mean validation accuracy per (ways, shots) wins (ties: the first candidate).
    select: Dict[str, List[Any]] = field(default_factory=dict)


# Settings outside the eval section that are read only at test time (never change trained
# weights): what a method may list in ``test_time_keys`` and eval.select may choose.
TEST_TIME_KEYS = ("episodic.eval_inner_steps", "episodic.eval_lr_scale")


@dataclass
class Config:
    method: str = field(default=DEFAULT_METHOD, metadata={"choices": method_names})   # the registry's names
    seed: int = 0
    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: SCLLossConfig = field(default_factory=SCLLossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    episodic: EpisodicConfig = field(default_factory=EpisodicConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- loading
def _read_yaml(path: Path, seen: tuple = ()) -> Dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular _base_ chain")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    _resolve_paths(data, path.parent)
    base = data.pop("_base_", None)
    if base is None:
        return data
    parent = _read_yaml(path.parent / base, seen + (path,))
    name = (data.get("model") or {}).get("name") if isinstance(data.get("model"), dict) else None
    if name is not None and name != (parent.get("model") or {}).get("name", ModelConfig.name):
        (parent.get("model") or {}).pop("kwargs", None)     # another backbone: its own kwargs only
    merged = OmegaConf.merge(parent, data)
    return OmegaConf.to_container(merged)


# Paths that name inputs: relative ones in a config file are relative to that file's folder
# (on the command line: to the working directory). run_dir and cache_dir are outputs and stay
# relative to the working directory.
PATH_KEYS = ("data.root", "data.test_root")


def _resolve_paths(data: Dict[str, Any], folder: Path) -> None:
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = (data.get(section) or {}).get(name) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value and not value.startswith(("~", "$", "/")):
            data[section][name] = os.path.normpath(str(folder / value))


def resolve_override_paths(overrides: Sequence[str], folder: Path) -> List[str]:
    """``key=value`` items written in a file (e.g. a suite's overrides): relative input paths
    are made relative to that file's folder, like the same keys in a config file."""
    out = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key in PATH_KEYS and value and not value.startswith(("~", "$", "/")):
            item = f"{key}={os.path.normpath(str(folder / value))}"
        out.append(item)
    return out


def _error_text(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or getattr(e, "key", None)
    msg = str(e).splitlines()[0]
    if "ListConfig" in msg or "list" in msg.lower() and "Value" in msg:
        return f"config key '{key}': expected a list, e.g. {key}=[60,80]"
    if "not in" in msg or "Key '" in msg and "not" in msg:
        return f"unknown config key '{key}'"
    return f"config key '{key}': {msg}"


def _check_choices(obj: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        allowed = f.metadata.get("choices")
        allowed = allowed() if callable(allowed) else allowed
        if allowed and value not in allowed:
            raise ConfigError(f"config key '{key}': got {value!r}, allowed: {', '.join(allowed)}")
        if dataclasses.is_dataclass(value):
            _check_choices(value, key + ".")


def _check_values(cfg: Config) -> None:
    d = cfg.data
    for key, v in (("data.ways", d.ways), ("data.shots", d.shots), ("data.image_size", d.image_size),
                   ("data.batch_size", d.batch_size), ("train.grad_accum", cfg.train.grad_accum)):
        if v < 1:
            raise ConfigError(f"config key '{key}': must be >= 1, got {v}")
    for key, v in (("episodic.meta_iterations", cfg.episodic.meta_iterations),
                   ("episodic.meta_batch_size", cfg.episodic.meta_batch_size), ("train.epochs", cfg.train.epochs),
                   ("distill.epochs", cfg.distill.epochs or 1), ("train.keep_last", cfg.train.keep_last)):
        if v < 1:
            raise ConfigError(f"config key '{key}': must be >= 1, got {v}")
    for key, v in (("train.lr", cfg.train.lr), ("distill.lr", cfg.distill.lr), ("episodic.meta_lr", cfg.episodic.meta_lr),
                   ("distill.kd_temperature", cfg.distill.kd_temperature), ("eval.C", cfg.eval.C),
                   ("episodic.scale_init", cfg.episodic.scale_init), ("episodic.svm_C", cfg.episodic.svm_C),
                   ("episodic.svm_iters", cfg.episodic.svm_iters),
                   ("episodic.ridge_lambda", cfg.episodic.ridge_lambda)):
        if v <= 0:
            raise ConfigError(f"config key '{key}': must be > 0, got {v}")
    if d.num_workers < -1:
        raise ConfigError(f"config key 'data.num_workers': must be >= 0 (or -1: automatic), got {d.num_workers}")
    _check_embed(cfg)
    _check_trackers(cfg.train)
    if d.queries < 1:
        raise ConfigError(f"config key 'data.queries': must be >= 1, got {d.queries}")
    if cfg.distill.teacher and cfg.distill.generations < 1:
        raise ConfigError("config key 'distill.teacher' needs distill.generations >= 1 (a teacher with no "
                          "student generation trains nothing)")
    get_method(cfg.method).check(cfg)          # the method's own refusals (e.g. train.compile)
    for key in ("tau_global", "tau_spatial"):
        if getattr(cfg.loss, key) <= 0:
            raise ConfigError(f"config key 'loss.{key}': must be > 0")
    if cfg.eval.support_augment < 0:
        raise ConfigError(f"config key 'eval.support_augment': must be >= 0, got {cfg.eval.support_augment}")
    if cfg.eval.protocol == "scl" and cfg.eval.flip:
        raise ConfigError("config key 'eval.flip': flip averaging is not part of the SCL protocol; "
                          "set eval.flip=false or eval.protocol=pooled")
    if cfg.eval.support_augment > 0 and cfg.eval.protocol != "scl":
        raise ConfigError("config key 'eval.support_augment': support augmentation belongs to the SCL "
                          "protocol; set eval.protocol=scl or eval.support_augment=0")
    _check_select(cfg)
    if d.test_dataset is not None and d.test_dataset not in DATASETS:
        raise ConfigError(f"config key 'data.test_dataset': got {d.test_dataset!r}, "
                          f"allowed: {', '.join(DATASETS)}")


def _check_select(cfg: Config) -> None:
    """eval.select: test-time keys only (never one that changes trained weights), each with a
    non-empty list of candidates of the key's type, read by this method at test time."""
    reads = getattr(get_method(cfg.method).cls, "test_time_keys", ())
    for key, values in cfg.eval.select.items():
        where = f"config key 'eval.select.{key}'"
        if not (key in TEST_TIME_KEYS or (key.startswith("eval.") and key != "eval.select")):
            raise ConfigError(f"{where}: only test-time settings can be chosen on validation (eval.* or "
                              f"{', '.join(TEST_TIME_KEYS)}); {key} is not one")
        if key in TEST_TIME_KEYS and key not in reads:
            raise ConfigError(f"{where}: method {cfg.method} does not read {key} at test time"
                              + (f" (it reads {', '.join(reads)})" if reads else ""))
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where}: needs a non-empty list of candidates, got {values!r}")
        *path, name = key.split(".")
        node = OmegaConf.structured(cfg)       # typed: assigning a candidate checks its type
        for part in path:
            node = node[part]
        for value in values:
            try:
                node[name] = value
            except OmegaConfBaseException as e:
                raise ConfigError(f"{where}: candidate {value!r}: {_error_text(e)}") from None


def tracker_choices() -> List[str]:
    """The experiment trackers of the installed Accelerate (its ``LoggerType``, without "all")."""
    from accelerate.utils import LoggerType
    return [t.value for t in LoggerType if t.value != "all"]


def _check_trackers(train: TrainConfig) -> None:
    names = train.trackers()
    if not names:
        return
    allowed = tracker_choices()
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ConfigError(f"config key 'train.log_with': got {unknown[0]!r}, allowed: {', '.join(allowed)} "
                          f"(several: comma-separated, e.g. train.log_with=tensorboard,wandb)")


def _check_embed(cfg: Config) -> None:
    e = cfg.embed
    for key in ("proj_dim", "queue_size", "fce_steps"):
        if getattr(e, key) < 1:
            raise ConfigError(f"config key 'embed.{key}': must be >= 1, got {getattr(e, key)}")
    if e.pk_classes < 2 or e.pk_images < 2:
        raise ConfigError(f"config key 'embed.pk_classes' / 'embed.pk_images': need >= 2 classes of >= 2 images "
                          f"for positives and negatives, got {e.pk_classes} x {e.pk_images}")
    if not 0.0 <= e.momentum < 1.0:
        raise ConfigError(f"config key 'embed.momentum': must be in [0, 1), got {e.momentum}")
    if e.matching_scale <= 0:
        raise ConfigError(f"config key 'embed.matching_scale': must be > 0, got {e.matching_scale}")
    if e.temperature <= 0 or e.margin < 0 or e.npair_l2 < 0 or e.hidden_dim < 0:
        raise ConfigError("config key 'embed.temperature' must be > 0; embed.margin, embed.npair_l2 and "
                          "embed.hidden_dim must be >= 0")


def load_structured(schema_cls: type, path: Optional[os.PathLike] = None, overrides: Sequence[str] = (),
                    what: str = "config") -> Any:
    """Merge a YAML file (with ``_base_``) and ``key=value`` overrides onto a dataclass schema."""
    schema = OmegaConf.structured(schema_cls)
    try:
        if path is not None:
            schema = OmegaConf.merge(schema, _read_yaml(Path(path)))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
        # model.name first: changing the backbone resets model.kwargs (kwargs belong to a backbone),
        # so kwargs given on the same line apply to the new one wherever they stand
        overrides = sorted(overrides, key=lambda item: item.partition("=")[0] != "model.name")
        has_model = "model" in schema
        for item in overrides:
            key, _, value = item.partition("=")
            if has_model and key == "model.name" and value != schema.model.name:
                schema.model.kwargs = {}
            if has_model and key == "model.kwargs":              # a whole mapping replaces, {} clears
                schema.model.kwargs = OmegaConf.from_dotlist([f"v={value}"]).v
            elif any(part.isdigit() for part in key.split(".")):    # into a list entry: datasets.0.overrides=[...]
                OmegaConf.update(schema, key, OmegaConf.from_dotlist([f"v={value}"]).v, merge=False)
            else:
                try:
                    schema = OmegaConf.merge(schema, OmegaConf.from_dotlist([item]))
                except yaml.YAMLError as e:
                    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                    raise ConfigError(f"override {item!r}: its value is not valid YAML ({problem}; a mapping "
                                      f"needs a space after each colon: {key}={{a.b: [1, 2]}})") from None
        return OmegaConf.to_object(schema)
    except OmegaConfBaseException as e:
        msg = _error_text(e)
        raise ConfigError(msg if what == "config" else f"{what} {msg}") from None


def load_config(path: Optional[os.PathLike] = None, overrides: Sequence[str] = ()) -> Config:
    """Build a validated :class:`Config` from a YAML file and ``key=value`` overrides."""
    cfg = load_structured(Config, path, overrides)
    for key in PATH_KEYS:         # left relative by the command line: the working directory's (shown absolute in errors)
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if isinstance(value, str) and value and not value.startswith(("~", "$")):
            setattr(getattr(cfg, section), name, os.path.abspath(value))
    _check_choices(cfg)
    _check_values(cfg)
    return cfg


def config_from_dict(data: Dict[str, Any]) -> Config:
    """Validate a plain dict (e.g. a config stored in a checkpoint)."""
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), data))
    except OmegaConfBaseException as e:
        raise ConfigError(_error_text(e)) from None
    _check_choices(cfg)
    _check_values(cfg)
    return cfg


def get_setting(cfg: Config, key: str) -> Any:
    """The value of a dotted key (``episodic.eval_inner_steps``) of ``cfg``."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def with_settings(cfg: Config, settings: Dict[str, Any]) -> Config:
    """A validated copy of ``cfg`` with the dotted ``{key: value}`` settings applied (an unknown
    key or a wrong type is an error naming the key)."""
    if not settings:
        return cfg
    nested: Dict[str, Any] = {}
    for key, value in settings.items():
        *path, name = key.split(".")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[name] = value
    try:
        base = OmegaConf.structured(cfg)
        base.eval.select = {}          # a Dict[str, List[Any]] field: merged as a whole below
        merged = OmegaConf.merge(base, nested)
        merged.eval.select = OmegaConf.create(dict(cfg.eval.select))
        out = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_error_text(e)) from None
    _check_choices(out)
    _check_values(out)
    return out


def to_dict(cfg: Config) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
