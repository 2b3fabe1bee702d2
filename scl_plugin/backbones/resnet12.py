"""ResNet-12 of the few-shot literature (MetaOptNet / RFS / SCL), registered as timm ``resnet12``.

Architecture (widths ``64-160-320-640``), for an input ``x`` of size ``S x S``::

    stage_i(x) = drop_i( maxpool2( lrelu( f_i(x) + BN(conv1x1(x)) ) ) )
    f_i(x)     = BN conv3x3 . lrelu BN conv3x3 . lrelu BN conv3x3 (x)      lrelu = LeakyReLU(0.1)

``drop_i`` is dropout(p=drop_rate) on stages 1-2 and DropBlock(p, block=dropblock_size) on
stages 3-4, as in RFS / SCL (``models/resnet.py``; ``models/util.py`` builds it with drop_rate 0.1
and dropblock_size 5 on mini/tiered-ImageNet and the cross-domain runs, 2 on CIFAR-FS / FC100).
Each stage halves the map (floor), so 84 -> 42 -> 21 -> 10 -> 5 (``5x5x640``) and
32 -> 16 -> 8 -> 4 -> 2 (``2x2x640``). The head pools globally and adaptively (timm
``SelectAdaptivePool2d``), so any input size works, unlike a fixed ``AvgPool2d(5)``. About 12.42M
parameters (no classifier). ``drop_rate`` is thus the in-block rate of RFS, not timm's usual
pre-classifier dropout: there is none, as in RFS.

DropBlock schedule (``dropblock_ramp``)
---------------------------------------
RFS / SCL ramp the DropBlock rate in: their ``BasicBlock`` counts its forwards ``k`` and uses
``keep_rate = max(1 - drop_rate / (20 * 2000) * k, 1 - drop_rate)``. With ``dropblock_ramp=R``
the ``k``-th training-mode forward of each DropBlock uses ::

    p_k = drop_rate * min(k / R, 1)                       (k = 1, 2, ...; R = 40000 for theirs)

and ``dropblock_ramp=0`` (the default) keeps ``p = drop_rate`` from the first step (the counter
then stays 0). The counter ``k`` is the persistent buffer ``stages.{2,3}.drop.train_forwards``: it
is in the state dict, hence in every checkpoint, and a resumed run continues the ramp exactly.
A state dict without it (RFS / SCL checkpoints, our checkpoints from before the schedule) loads
and leaves the counter as it is.
Two deliberate differences from their code: (1) only *training-mode* forwards advance the counter
(theirs is a plain attribute bumped by every forward, validation included, and not saved: a
model rebuilt from their checkpoint starts the ramp over); (2) under ``nn.DataParallel`` theirs
bumps the replicas' copies, so the original stays at 0 and the rate stays ~0 on several GPUs;
ours is a buffer updated in place (DataParallel keeps replica 0's, DDP broadcasts rank 0's).
One forward per optimizer step in both SCL codes (the two views are concatenated), so R counts
steps there. A MAML clone shares the meta-model's buffers: with a ramp, its inner-loop forwards
advance the meta-model's counter too.

DropBlock masks (``dropblock_mask``)
------------------------------------
Both use the seed rate of Ghiasi et al. (2018), with the block clipped to the map
(``k_h = min(block, H)``)::

    gamma = p / (k_h k_w) * H W / ((H - k_h + 1) (W - k_w + 1))

* ``"rfs"``: the authors' DropBlock. Seeds ~ Bernoulli(gamma) are drawn per sample *and channel*
  on the ``(H - k_h + 1) x (W - k_w + 1)`` positions where a whole block fits; each seed zeroes
  the block starting at it; the output is rescaled by ``numel / #kept`` over the whole batch.
  About a fraction ``p`` of the activations is dropped (0.093 at 10x10, 0.10 at 5x5, block 5).
  Unlike theirs, a block larger than the map is clipped (theirs fails) and a batch with
  nothing kept gives zeros, not NaN.
* ``"timm"`` (default, what this model always used): timm's ``drop_block_2d``, which draws
  seeds on all ``H x W`` positions and shares one mask across channels; with the same gamma it
  drops more, about 0.19 at 10x10 and 0.78 at 5x5 with block 5 and ``p = 0.1``.

Under the ramp, ``"timm"`` needs ``p`` as a Python number (one device sync per DropBlock
forward); ``"rfs"`` computes it on the device. ``module.drop_prob`` is the rate the latest
training forward used (``drop_rate`` without a ramp).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import SelectAdaptivePool2d
from timm.layers.drop import drop_block_2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .head import ClassifierHeadMixin, fewshot_pretrained_cfg

__all__ = ["ResNet12", "ResBlock12", "ScheduledDropBlock", "resnet12", "ramped_drop_prob",
           "dropblock_gamma", "SCHEDULE_BUFFER", "DROPBLOCK_MASKS"]

SCHEDULE_BUFFER = "train_forwards"      # state-dict leaf of the DropBlock counter
DROPBLOCK_MASKS = ("timm", "rfs")

# Pixel statistics of mini-ImageNet used by RFS / SCL data pipelines.


def _conv_bn(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout))


def ramped_drop_prob(drop_rate: float, ramp: int, forwards: Union[int, torch.Tensor]):
    """``drop_rate * min(forwards / ramp, 1)``; ``drop_rate`` when ``ramp <= 0``. RFS / SCL's
    ``1 - keep_rate`` at their ``num_batches_tracked = forwards`` with ``ramp = 20 * 2000``.
    A tensor ``forwards`` gives a float32 tensor (no device sync)."""
    if ramp <= 0:
        return drop_rate
    if torch.is_tensor(forwards):
        return (forwards.float() / ramp).clamp(max=1.0) * drop_rate
    return drop_rate * min(forwards / ramp, 1.0)


def dropblock_gamma(drop_prob, block_size: int, height: int, width: int):
    """Seed rate ``p / (k_h k_w) * H W / ((H - k_h + 1)(W - k_w + 1))``, block clipped to the map
    (``k = min(block_size, side)``); RFS's ``(1 - keep_rate) / block**2 * feat**2 / (feat - block + 1)**2``
    on square maps."""
    kh, kw = min(block_size, height), min(block_size, width)
    return drop_prob * (height * width) / (kh * kw * (height - kh + 1) * (width - kw + 1))


def _rfs_dropblock(x: torch.Tensor, gamma, block_size: int) -> torch.Tensor:
    """The authors' DropBlock: per-(sample, channel) seeds where a whole block fits, each zeroing
    the ``k_h x k_w`` block starting at it; rescaled by ``numel / #kept`` over the batch."""
    _, _, h, w = x.shape
    kh, kw = min(block_size, h), min(block_size, w)
    with torch.no_grad():
        shape = (x.shape[0], x.shape[1], h - kh + 1, w - kw + 1)
        seeds = (torch.rand(shape, device=x.device) < gamma).float()
        # a seed at (i, j) covers output rows i..i+kh-1, columns j..j+kw-1 (as their offsets do)
        dropped = F.max_pool2d(F.pad(seeds, (kw - 1, kw - 1, kh - 1, kh - 1)), (kh, kw), stride=1)
        keep = 1.0 - dropped
        keep = keep * (keep.numel() / keep.sum().clamp(min=1.0))      # all dropped: zeros, not NaN
    return x * keep.to(x.dtype)


class ScheduledDropBlock(nn.Module):
    """DropBlock whose rate ramps in over the first ``ramp`` training-mode forwards.

    ``train_forwards`` (a persistent buffer) counts the training-mode forwards; the ``k``-th uses
    ``ramped_drop_prob(drop_rate, ramp, k)``. Eval mode is the identity and leaves the counter;
    so does ``ramp=0`` (constant rate: the counter stays 0 and the module writes no state).
    ``mask``: ``"timm"`` (timm's ``drop_block_2d``, channels share a mask) or ``"rfs"`` (the
    authors'). See the module docstring.
    """

    def __init__(self, drop_rate: float = 0.1, block_size: int = 5, ramp: int = 0, mask: str = "timm"):
        super().__init__()
        if mask not in DROPBLOCK_MASKS:
            raise ValueError(f"resnet12: dropblock_mask must be one of {', '.join(DROPBLOCK_MASKS)}, "
                             f"not {mask!r}")
        if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
            raise ValueError(f"resnet12: dropblock_ramp must be a whole number >= 0 (forwards), not {ramp!r}")
        if block_size < 1:
            raise ValueError(f"resnet12: dropblock_size must be >= 1, not {block_size!r}")
        self.drop_rate = float(drop_rate)
        self.block_size = int(block_size)
        self.ramp = ramp
        self.mask = mask
        self.register_buffer(SCHEDULE_BUFFER, torch.zeros((), dtype=torch.long))

    @property
    def drop_prob(self) -> float:
        """The rate of the latest training forward (the constant rate without a ramp)."""
        if self.ramp <= 0:
            return self.drop_rate
        return ramped_drop_prob(self.drop_rate, self.ramp, int(getattr(self, SCHEDULE_BUFFER)))

    def reset_parameters(self) -> None:
        """Restart the schedule (as BatchNorm's ``reset_parameters`` resets its counter)."""
        getattr(self, SCHEDULE_BUFFER).zero_()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        key = prefix + SCHEDULE_BUFFER
        if key in missing_keys:          # an RFS / older checkpoint: keep the counter as it is
            missing_keys.remove(key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        count = getattr(self, SCHEDULE_BUFFER)
        if self.ramp > 0:           # without a ramp nothing is scheduled: no state is written
            count.add_(1)           # (e.g. by a MAML clone, which shares the meta-model's buffers)
        if not self.drop_rate:
            return x
        if self.mask == "timm":
            p = self.drop_prob          # a Python float: one device sync under a ramp
            return drop_block_2d(x, p, self.block_size) if p else x
        p = ramped_drop_prob(self.drop_rate, self.ramp, count)
        return _rfs_dropblock(x, dropblock_gamma(p, self.block_size, x.shape[2], x.shape[3]), self.block_size)

    def extra_repr(self) -> str:
        return (f"drop_rate={self.drop_rate}, block_size={self.block_size}, ramp={self.ramp}, "
                f"mask={self.mask!r}")


class ResBlock12(nn.Module):
    """One stage: three conv3x3-BN (LeakyReLU between) + conv1x1-BN shortcut, pool, drop."""

    def __init__(self, cin: int, cout: int, drop_rate: float = 0.0, block_size: int = 0,
                 dropblock_ramp: int = 0, dropblock_mask: str = "timm"):
        super().__init__()
        self.convs = nn.ModuleList([_conv_bn(cin, cout, 3), _conv_bn(cout, cout, 3), _conv_bn(cout, cout, 3)])
        self.shortcut = _conv_bn(cin, cout, 1)
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)
        if block_size > 0:
            self.drop = ScheduledDropBlock(drop_rate, block_size, dropblock_ramp, dropblock_mask)
        else:
            self.drop = nn.Dropout(drop_rate)      # stages 1-2: constant rate, as in RFS

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
        dropblock_ramp: int = 0,
        dropblock_mask: str = "timm",
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
            stages.append(ResBlock12(cin, w, drop_rate, block, dropblock_ramp, dropblock_mask))
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
