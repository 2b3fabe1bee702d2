"""Contrastive distillation (Ouali et al. 2021, Sec. 3.4): a student learns from a frozen teacher.

    L = lambda_kd * KL(softmax(t / T) || softmax(s / T)) * T^2
      + lambda_cd * mean_i || z_t(i) - z_s(i) ||^2      (z: L2-normalised features)
      + lambda_ce * CE(s, y)

``z`` is, by default (``cd_features="pooled"``, the authors' train_distillation.py), the pooled
backbone embedding, so the projection head receives no gradient; ``"projection"`` uses the
projection head's outputs instead. Both networks see the same batch (one view by default); the
teacher is an :class:`SCL` in eval mode whose parameters never receive gradients. Repeating
with the student as the next teacher gives further generations (``distill.generations``).
In the pipeline this is the stage that follows a teacher method's training (the registry's
``distills``), generation after generation.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DistillConfig
from ..losses import cd_loss, kd_loss
from .base import EmbeddingMethod
from .scl import SCL


class Distiller(EmbeddingMethod):
    """Contrastive distillation of a frozen :class:`SCL` teacher into a fresh student.

    Arguments:
        teacher: the trained :class:`SCL` (frozen, kept out of the state dict).
        student: the :class:`SCL` that learns; :meth:`from_teacher` builds one.
        cfg: the loss weights and options (:class:`~scl_plugin.config.DistillConfig`).

    Example::

        >>> import torch
        >>> from scl_plugin.backbones import create_backbone
        >>> new_backbone = lambda: create_backbone("conv4", in_chans=1, image_size=28, hidden=8)
        >>> trained_scl = SCL(new_backbone(), num_classes=4, lambda_global=1.0)
        >>> distiller = Distiller.from_teacher(trained_scl, DistillConfig(lambda_kd=1.0, lambda_cd=10.0),
        ...                                    new_backbone=new_backbone)
        >>> views, labels = (torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)), torch.arange(4).repeat(2)
        >>> loss, metrics = distiller.loss((views, labels))
        >>> sorted(metrics)
        ['cd', 'kd', 'loss']
        >>> student = distiller.student                  # an SCL: student.adapt(xs, ys)
        >>> student.adapt(torch.randn(4, 1, 28, 28), torch.arange(4))(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 4])
    """

    # DDP: the student's projection head and attention are kept for a later stage but unused here
    find_unused_parameters = True

    def __init__(self, teacher: SCL, student: SCL, cfg: DistillConfig):
        super().__init__()
        self.student = student
        self.teacher = [teacher.eval().requires_grad_(False)]   # a list: not a registered submodule
        self.cfg = cfg

    @classmethod
    def from_teacher(cls, teacher: SCL, cfg: DistillConfig,
                     new_backbone: Optional[Callable[[], nn.Module]] = None) -> "Distiller":
        """Student = a fresh network of the teacher's architecture (born-again networks).

        ``cfg.student_init="backbone"`` (default, as the authors): the student's backbone is
        ``new_backbone()``, built anew with the backbone's own initialisation (ResNet-12:
        Kaiming-normal fan_out convolutions, BatchNorm 1 / 0), with fresh heads.
        ``"reset"``: a copy of the teacher whose modules are re-initialised with PyTorch's
        default ``reset_parameters``.
        """
        if cfg.student_init == "backbone":
            if new_backbone is None:
                raise ValueError("student_init='backbone' needs new_backbone= (a callable building "
                                 "the backbone); pass it or use student_init='reset'")
            student = SCL(new_backbone(), teacher.classifier.out_features, teacher.cfg)
        else:
            student = copy.deepcopy(teacher)
            for m in student.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        return cls(teacher, student.requires_grad_(True).train(), cfg)

    @property
    def backbone(self) -> nn.Module:
        return self.student.backbone

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher[0].eval()
        return self

    def loss(self, batch: Any) -> Tuple[torch.Tensor, Dict[str, Any]]:
        x, y = batch
        two = isinstance(x, (list, tuple))
        inputs = torch.cat(list(x), 0) if two else x
        targets = y.repeat(len(x)) if two else y
        teacher = self.teacher[0].to(inputs.device)
        projection = self.cfg.cd_features == "projection"
        with torch.no_grad():
            _, t_pooled = teacher.features(inputs)
            t_logits = teacher.classifier(t_pooled)
            t_z = teacher.head(t_pooled) if projection else t_pooled
        _, s_pooled = self.student.features(inputs)
        s_logits = self.student.classifier(s_pooled)
        s_z = self.student.head(s_pooled) if projection else s_pooled
        kd = kd_loss(s_logits, t_logits, self.cfg.kd_temperature)
        cd = cd_loss(s_z, t_z)
        total = self.cfg.lambda_kd * kd + self.cfg.lambda_cd * cd
        metrics = {"kd": kd.detach(), "cd": cd.detach()}
        if self.cfg.lambda_ce > 0:
            ce = F.cross_entropy(s_logits, targets)
            total = total + self.cfg.lambda_ce * ce
            metrics["ce"] = ce.detach()
        metrics["loss"] = total.detach()
        return total, metrics
