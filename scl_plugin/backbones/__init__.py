"""Backbones: few-shot ``resnet12`` / ``conv4`` registered in timm, and the spatial wrapper.

Importing this package registers ``resnet12`` and ``conv4`` in timm's registry, so
``timm.create_model('resnet12')`` works afterwards (neither name exists in timm itself).
``create_backbone(ModelConfig(name=...))`` turns any registry name into a :class:`Backbone`
with ``forward_spatial`` (B, d, H, W) and ``forward`` (B, d); see :mod:`.backbone` for the
MAML BatchNorm policy (``maml_bn_policy``) and second-order attention (``prepare_for_maml``).
"""
from .head import MINI_IMAGENET_MEAN, MINI_IMAGENET_STD
from .resnet12 import ResNet12, resnet12
from .conv4 import Conv4, conv4
from .backbone import (L2L_MODELS, Backbone, BackboneSizeError, create_backbone, disable_fused_attn,
                       maml_bn_policy, prepare_for_maml)

__all__ = ["ResNet12", "Conv4", "resnet12", "conv4", "Backbone", "BackboneSizeError", "create_backbone",
           "maml_bn_policy", "disable_fused_attn", "prepare_for_maml", "L2L_MODELS",
           "MINI_IMAGENET_MEAN", "MINI_IMAGENET_STD"]
