"""timm's classifier interface, shared by the backbones we register (resnet12, conv4).

A model provides ``forward_features`` and the attributes ``global_pool``, ``head_drop``,
``fc`` and ``num_features``; this mixin adds ``get_classifier``, ``reset_classifier``,
``forward_head`` and ``forward`` exactly as timm's own models define them.
"""
from __future__ import annotations

import torch
from timm.layers import SelectAdaptivePool2d
from torch import nn

# mini-ImageNet statistics of RFS / SCL (a property of the data, defined with it), the
# default_cfg normalisation of both registered models
from ..data.base import RFS_IMAGENET_MEAN as MINI_IMAGENET_MEAN, RFS_IMAGENET_STD as MINI_IMAGENET_STD  # noqa: E402


def fewshot_pretrained_cfg(first_conv: str) -> dict:
    """timm default_cfg shared by our registered models: 84x84 mini-ImageNet input, 64 classes."""
    return dict(num_classes=64, input_size=(3, 84, 84), pool_size=(5, 5), crop_pct=1.0,
                interpolation="bilinear", mean=MINI_IMAGENET_MEAN, std=MINI_IMAGENET_STD,
                first_conv=first_conv, classifier="fc", license="mit")


class ClassifierHeadMixin:
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
