"""Conv-4 of the few-shot literature (Vinyals et al. 2016; Snell et al. 2017), timm ``conv4``.

Four identical blocks ``x -> maxpool2(ReLU(BN(conv3x3_64(x))))`` (padding 1, with bias).
Each block halves the map (floor)::

    84 -> 42 -> 21 -> 10 -> 5     map 5x5x64   (mini-ImageNet, 1600-d when flattened)
    32 -> 16 ->  8 ->  4 -> 2     map 2x2x64
    28 -> 14 ->  7 ->  3 -> 1     map 1x1x64   (Omniglot)

At 28x28 the final map has a single location: a spatial loss over it degenerates to the
global one, so spatial methods on Omniglot-size inputs need more resolution (e.g. image_size
56 or 84, or ``l2l:OmniglotCNN`` which never pools). ~113k parameters with 3 input channels.
``drop_rate`` is timm's dropout on the pooled features before the classifier (default 0).
"""
from __future__ import annotations

import torch
from torch import nn
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .head import ClassifierHeadMixin, fewshot_pretrained_cfg

__all__ = ["Conv4", "conv4"]


class Conv4(ClassifierHeadMixin, nn.Module):
    """timm-style Conv-4: ``forward_features`` gives the ``(B, hidden, H, W)`` map."""

    def __init__(
        self,
        num_classes: int = 64,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        hidden: int = 64,
        depth: int = 4,
        **kwargs,
    ):
        super().__init__()
        if kwargs:
            raise TypeError(f"conv4: unexpected arguments {sorted(kwargs)}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        blocks = []
        for i in range(depth):
            blocks.append(nn.Sequential(
                nn.Conv2d(in_chans if i == 0 else hidden, hidden, 3, padding=1),
                nn.BatchNorm2d(hidden), nn.ReLU(inplace=True), nn.MaxPool2d(2)))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = self.head_hidden_size = hidden
        self.feature_info = [dict(num_chs=hidden, reduction=2 ** (i + 1), module=f"blocks.{i}")
                             for i in range(depth)]
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


default_cfgs = generate_default_cfgs({"conv4": fewshot_pretrained_cfg("blocks.0.0")})


@register_model
def conv4(pretrained: bool = False, **kwargs) -> Conv4:
    """Conv-4 (4 x conv3x3(64)-BN-ReLU-maxpool2). No pretrained weights."""
    return build_model_with_cfg(Conv4, "conv4", pretrained,
                                feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)), **kwargs)
