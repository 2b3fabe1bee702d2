"""Born-again distillation losses used by SCL's second stage.

    L_KD = T^2 * KL( softmax(t/T) || softmax(s/T) )      (batch mean, T = 4 by default)
    L_CD = 1/B * sum_i || t_i/||t_i|| - s_i/||s_i|| ||^2  =  1/B * sum_i (2 - 2 cos(t_i, s_i))

on teacher / student logits (KD) and global projections (CD; no uniformity term). The teacher
is fixed: its tensors are detached here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["kd_loss", "cd_loss"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    log_p_s = F.log_softmax(student_logits / T, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * T * T


def cd_loss(z_student: torch.Tensor, z_teacher: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(z_teacher.detach(), dim=-1) - F.normalize(z_student, dim=-1)
    return diff.pow(2).sum(-1).mean()
