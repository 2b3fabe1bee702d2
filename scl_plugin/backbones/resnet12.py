"""ResNet-12 of the few-shot literature (MetaOptNet / RFS / SCL), registered as timm ``resnet12``.

Architecture (widths ``64-160-320-640``), for an input ``x`` of size ``S x S``::

    stage_i(x) = drop_i( maxpool2( lrelu( f_i(x) + BN(conv1x1(x)) ) ) )
    f_i(x)     = BN conv3x3 . lrelu BN conv3x3 . lrelu BN conv3x3 (x)      lrelu = LeakyReLU(0.1)

``drop_i`` is dropout(p=drop_rate) on stages 1-2 and DropBlock(p=drop_rate, block=5) on
stages 3-4, as in RFS (drop_rate 0.1, dropblock_size 5). Each stage halves the map (floor),
so 84 -> 42 -> 21 -> 10 -> 5 (``5x5x640``) and 32 -> 16 -> 8 -> 4 -> 2 (``2x2x640``).
The head pools globally and adaptively (timm ``SelectAdaptivePool2d``), so any input size
works, unlike a fixed ``AvgPool2d(5)``. About 12.42M parameters (no classifier).

DropBlock keeps a constant ``drop_prob`` (RFS ramps it in with the BN batch counter; a
trainer may set ``module.drop_prob`` itself). ``drop_rate`` is thus the in-block rate of RFS,
not timm's usual pre-classifier dropout: there is none, as in RFS.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from timm.layers import DropBlock2d, SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .head import ClassifierHeadMixin, fewshot_pretrained_cfg

__all__ = ["ResNet12", "ResBlock12", "resnet12"]

# Pixel statistics of mini-ImageNet used by RFS / SCL data pipelines.


def _conv_bn(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout))


class ResBlock12(nn.Module):
    """One stage: three conv3x3-BN (LeakyReLU between) + conv1x1-BN shortcut, pool, drop."""

    def __init__(self, cin: int, cout: int, drop_rate: float = 0.0, block_size: int = 0):
        super().__init__()
        self.convs = nn.ModuleList([_conv_bn(cin, cout, 3), _conv_bn(cout, cout, 3), _conv_bn(cout, cout, 3)])
        self.shortcut = _conv_bn(cin, cout, 1)
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)
        if block_size > 0:
            self.drop = DropBlock2d(drop_rate, block_size)
        else:
            self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i, conv in enumerate(self.convs):
            out = conv(out)
            if i < 2:
                out = self.act(out)
        out = self.act(out + self.shortcut(x))
        return self.drop(self.pool(out))


class ResNet12(ClassifierHeadMixin, nn.Module):
    """timm-style ResNet-12: ``forward_features`` gives the ``(B, 640, H, W)`` map."""

    def __init__(
        self,
        num_classes: int = 64,
        in_chans: int = 3,
        drop_rate: float = 0.1,
        dropblock_size: int = 5,
        global_pool: str = "avg",
        widths: Sequence[int] = (64, 160, 320, 640),
        **kwargs,
    ):
        super().__init__()
        if kwargs:
            raise TypeError(f"resnet12: unexpected arguments {sorted(kwargs)}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        stages, cin = [], in_chans
        for i, w in enumerate(widths):
            block = dropblock_size if i >= len(widths) - 2 else 0   # DropBlock on the last two
            stages.append(ResBlock12(cin, w, drop_rate, block))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = cin
        self.feature_info = [dict(num_chs=w, reduction=2 ** (i + 1), module=f"stages.{i}")
                             for i, w in enumerate(widths)]
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Identity()
        self.fc = nn.Linear(cin, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


default_cfgs = generate_default_cfgs({"resnet12": fewshot_pretrained_cfg("stages.0.convs.0.0")})


@register_model
def resnet12(pretrained: bool = False, **kwargs) -> ResNet12:
    """ResNet-12 (64-160-320-640) of RFS / SCL. No pretrained weights are published in timm."""
    return build_model_with_cfg(ResNet12, "resnet12", pretrained,
                                feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)), **kwargs)
