"""What every few-shot method has, written once: the base classes of :mod:`scl_plugin.algorithms`.

A method is an ``nn.Module`` with a ``backbone`` (images -> pooled features), ``loss(batch) ->
(loss, metrics)`` to train and ``adapt(support_x, support_y) -> learner`` to evaluate
(``learner(query_x) -> logits``), registered under a name with
:func:`~scl_plugin.registry.register_method` and built from a config by ``from_config``.

* :class:`FewShotMethod`: the interface and the shared pieces (frozen embedding with the
  train/eval mode restored, released-checkpoint loading, config checks).
* :class:`EpisodicMethod`: methods meta-trained on episodes. The meta-batch loop (one backbone
  forward for all tasks, support / query split, query loss and accuracy, mean over tasks) is
  :meth:`EpisodicMethod.loss`; a method supplies :meth:`~EpisodicMethod.task_logits` (query logits
  from support and query features) and, if it needs more than a frozen embedding of the support
  set at test time, its own ``adapt`` (MAML, ANIL, Meta-SGD fine-tune).
* :class:`EmbeddingMethod`: methods that pretrain an embedding (SCL, SimCLR, ...): evaluated with
  a classifier fitted on frozen, L2-normalised features
  (:class:`~scl_plugin.algorithms.learners.FeatureLearner`).

Support labels are checked once, in ``adapt`` (:func:`~scl_plugin.algorithms.learners.check_labels`):
``0..K-1`` with every class present.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError
from ..data import split_support_query
from ..evaluation.features import eval_mode, model_device
from .learners import FeatureLearner, check_labels

__all__ = ["FewShotMethod", "EpisodicMethod", "EmbeddingMethod", "EpisodeLearner"]


class FewShotMethod(nn.Module):
    """Base of every method: a ``backbone``, ``loss(batch)``, ``adapt(support_x, support_y)``.

    Class attributes a method may set: ``needs_two_views`` (flat batches of two augmented views),
    ``pk_batches`` (P x K batches), ``find_unused_parameters`` (DDP must look for parameters the
    loss leaves unused) and ``compile_unsupported`` (why ``train.compile`` cannot work; None: it can).
    """

    backbone: nn.Module
    # the test-time settings (config.TEST_TIME_KEYS) this method reads; configure_eval sets each
    # as the attribute of its last name (episodic.eval_inner_steps -> self.eval_inner_steps)
    test_time_keys: Tuple[str, ...] = ()
    needs_two_views = False
    pk_batches = False
    find_unused_parameters = False
    compile_unsupported: Optional[str] = None

    @classmethod
    def from_config(cls, cfg: Config, backbone: nn.Module, data: Any, *, gather: bool = False,
                    **options: Any) -> "FewShotMethod":
        """The method of ``cfg`` on ``backbone``; ``data`` has the training set's ``num_classes``;
        ``options``: the registration's fixed constructor options."""
        raise NotImplementedError(f"{cls.__name__}.from_config")

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Refuse, in one line, settings this method cannot train with (called by ``load_config``)."""
        if cfg.train.compile and cls.compile_unsupported:
            raise ConfigError(f"config key 'train.compile': not supported with method {cfg.method} "
                              f"({cls.compile_unsupported}); set train.compile=false")

    @classmethod
    def released_config(cls, cfg: Config, ckpt: Any) -> Config:
        """``cfg`` adjusted to the shapes of a released RFS / SCL checkpoint (default: unchanged)."""
        return cfg

    def load_released(self, ckpt: Any) -> None:
        """Load a released RFS / SCL ResNet-12 checkpoint (:func:`~scl_plugin.backbones.rfs.read_released`):
        the backbone's weights (a method with more parts of the file overrides this)."""
        from ..backbones.rfs import load_rfs_weights
        load_rfs_weights(self.backbone.model, ckpt)

    def configure_eval(self, cfg: Config) -> None:
        """Take ``cfg``'s test-time settings (:attr:`test_time_keys`) before an evaluation."""
        from ..config import get_setting
        for key in self.test_time_keys:
            setattr(self, key.rsplit(".", 1)[-1], get_setting(cfg, key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (the embedding few-shot evaluation uses)."""
        return self.backbone(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` with the method in eval mode and no gradient (its mode restored)."""
        with eval_mode(self):
            return self.backbone(x.to(model_device(self)))

    def loss(self, batch: Any) -> Tuple[torch.Tensor, Dict[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__}.loss")

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__}.adapt")


class EpisodicMethod(FewShotMethod):
    """An episodically trained method: one meta-batch loop over a per-task ``task_logits`` hook.

    ``loss(tasks)`` embeds all tasks of the meta-batch with one backbone forward (BatchNorm sees
    all tasks, as in learn2learn's examples), splits each into support and query
    (``shots`` / ``queries`` per class), and averages ``task_loss(task_logits(...), query labels)``
    over the tasks; metrics are the mean loss and query accuracy. With ``embeds_tasks = False``
    (MAML) ``task_logits`` gets the images instead. ``adapt(xs, ys)`` embeds the support set once
    (eval mode, restored) and returns a learner scoring queries with the same hook.

    Arguments:
        backbone: the network; None when a subclass holds it elsewhere (MAML: in learn2learn's wrapper).
        ways, shots, queries: the training episodes' shape.

    Example::

        >>> import torch
        >>> from scl_plugin.backbones import create_backbone
        >>> from scl_plugin.evaluation import prototypes
        >>> class NearestMean(EpisodicMethod):
        ...     def task_logits(self, support, support_y, query, ways):
        ...         return -torch.cdist(query, prototypes(support, support_y, ways))
        >>> method = NearestMean(create_backbone("conv4", in_chans=1, image_size=28, hidden=8), 5, 1, 2)
        >>> task = (torch.randn(15, 1, 28, 28), torch.arange(5).repeat(3))
        >>> loss, metrics = method.loss([task, task])
        >>> sorted(metrics)
        ['acc', 'loss']
        >>> learner = method.adapt(torch.randn(5, 1, 28, 28), torch.arange(5))
        >>> learner(torch.randn(4, 1, 28, 28)).shape
        torch.Size([4, 5])
    """

    embeds_tasks = True

    def __init__(self, backbone: Optional[nn.Module], ways: int, shots: int, queries: int):
        super().__init__()
        if backbone is not None:
            self.backbone = backbone
        self.ways, self.shots, self.queries = ways, shots, queries

    @classmethod
    def from_config(cls, cfg: Config, backbone: nn.Module, data: Any = None, *, gather: bool = False,
                    **options: Any) -> "EpisodicMethod":
        """``cls(backbone, data.ways, data.shots, data.queries, **options)`` (``cfg.data``'s episode shape)."""
        d = cfg.data
        return cls(backbone, d.ways, d.shots, d.queries, **options)

    def task_logits(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                    ways: int) -> torch.Tensor:
        """Query logits (Q, ways) of one task from support features (S, d) with labels (S,) in
        ``0..ways-1`` and query features (Q, d); differentiable in the features (training)."""
        raise NotImplementedError(f"{type(self).__name__}.task_logits")

    def task_loss(self, logits: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
        """The query loss of one task (cross-entropy of ``task_logits``)."""
        return F.cross_entropy(logits, query_y)

    def loss(self, tasks: List[Sequence[torch.Tensor]]) -> Tuple[torch.Tensor, Dict[str, Any]]:
        if self.embeds_tasks:
            inputs = self.backbone(torch.cat([x for x, _ in tasks])).split([x.shape[0] for x, _ in tasks])
        else:
            inputs = [x for x, _ in tasks]
        losses, accs = [], []
        for x, (_, y) in zip(inputs, tasks):
            support, ys, query, yq = split_support_query(x, y.to(x.device), self.ways, self.shots, self.queries)
            logits = self.task_logits(support, ys, query, self.ways)
            losses.append(self.task_loss(logits, yq))
            accs.append((logits.argmax(-1) == yq).float().mean())
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "acc": torch.stack(accs).mean().detach()}

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "EpisodeLearner":
        """A learner for one support set (labels ``0..K-1``); ``learner(query_x) -> logits``."""
        return EpisodeLearner(self, support_x, support_y)


class EpisodeLearner(nn.Module):
    """``method.task_logits`` on one embedded support set: ``learner(query_x) -> logits`` (K classes)."""

    def __init__(self, method: EpisodicMethod, support_x: torch.Tensor, support_y: torch.Tensor):
        super().__init__()
        self.ways = check_labels(support_y)
        self.method = method
        self.support = method.embed(support_x)
        self.support_y = support_y.to(self.support.device)

    @torch.no_grad()
    def forward(self, query_x: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.method):
            return self.method.task_logits(self.support, self.support_y, self.method.embed(query_x), self.ways)


class EmbeddingMethod(FewShotMethod):
    """A method that pretrains ``self.backbone`` (SCL, CE, SimCLR, MoCo, BYOL, triplet, N-pair),
    evaluated by a classifier fitted on its frozen, L2-normalised features.

    ``adapt(xs, ys)`` fits the paper's logistic regression; the keyword-only options choose
    another probe for this call (``classifier``: ``logreg``, ``proto_cosine``, ``proto_euclidean``
    or ``simpleshot``; ``C``: the inverse L2 strength; ``base_mean``: SimpleShot's base-class mean).
    """

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, *, classifier: str = "logreg",
              C: float = 1.0, base_mean: Optional[torch.Tensor] = None) -> FeatureLearner:
        return FeatureLearner.fit(self.backbone, support_x, support_y, classifier=classifier, C=C,
                                  base_mean=base_mean)
