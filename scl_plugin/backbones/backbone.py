"""``Backbone``: any timm (or learn2learn) feature extractor seen as a spatial feature map.

``create_backbone(cfg)`` builds ``timm.create_model(cfg.name, pretrained=cfg.pretrained,
num_classes=0, in_chans=..., **cfg.kwargs)`` and wraps it so that every architecture answers

    forward_spatial(x) -> F in R^{B x d x H x W}
    forward(x)         -> (1 / HW) sum_{h,w} F[:, :, h, w]  in R^{B x d}

``feature_dim`` (d) and ``spatial_shape`` ((H, W)) are measured by one dummy forward at
construction. Layouts of ``forward_features`` are mapped as follows:

* ``(B, C, H, W)``: as is; ``(B, H, W, C)`` when the model declares ``output_fmt == 'NHWC'``
  (e.g. Swin) is permuted;
* ``(B, N, d)`` tokens (ViTs): the ``num_prefix_tokens`` (class / register tokens) are
  dropped and the ``h * w`` patch tokens are put back on their grid. ViTs get
  ``img_size=image_size`` so position embeddings fit small few-shot images;
* ``(B, d)`` vectors: a ``1 x 1`` map.

Names ``l2l:OmniglotCNN``, ``l2l:CNN4`` and ``l2l:ResNet12`` wrap learn2learn's feature
extractors (the convolutional trunk only, without flattening). learn2learn's ResNet12 needs
84x84 inputs (its DropBlock divides by zero on smaller maps), so other sizes are refused.

MAML and BatchNorm (policy of this package)
-------------------------------------------
``l2l.algorithms.MAML.clone()`` re-uses the module's buffers: a clone adapted in train mode
writes its batch statistics into the *meta-model's* ``running_mean`` / ``running_var``
(and bumps ``num_batches_tracked``) - a silent side effect of every inner loop.
``maml_bn_policy`` turns every BatchNorm into a pure batch-statistics layer
(``track_running_stats=False``): support and query sets are normalised with their own
statistics (transductive, as in Finn et al.'s MAML and learn2learn's examples), and no
buffer is ever written. By default the running buffers are removed, so train and eval modes
behave the same (no stale ``(0, 1)`` statistics at test time); ``keep_buffers=True`` keeps
them frozen (e.g. loaded from a pretraining checkpoint) for eval mode only. Apply the policy
*after* loading a checkpoint (without buffers, the state dict has no ``running_*`` keys).

Second-order MAML differentiates twice through attention. PyTorch's fused
``scaled_dot_product_attention`` kernels have no double backward (on CPU:
"derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
implemented"), so ``disable_fused_attn`` sets ``fused_attn = False`` on each timm attention
module (per module, unlike the global ``timm.layers.set_fused_attn``). ``prepare_for_maml``
applies both.
"""
from __future__ import annotations

import difflib
from typing import Any, Dict, Tuple

import torch
from torch import nn
import timm

from ..config import ModelConfig

__all__ = ["Backbone", "BackboneSizeError", "create_backbone", "maml_bn_policy", "disable_fused_attn",
           "prepare_for_maml", "L2L_MODELS"]

L2L_MODELS = ("l2l:OmniglotCNN", "l2l:CNN4", "l2l:ResNet12")


class _L2LTrunk(nn.Module):
    """A learn2learn convolutional trunk exposed through timm's ``forward_features``."""

    def __init__(self, body: nn.Module, num_features: int):
        super().__init__()
        self.body = body
        self.num_features = num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    forward = forward_features


def _l2l_model(name: str, in_chans: int, image_size: int, kwargs: Dict[str, Any]) -> nn.Module:
    try:
        from learn2learn.vision.models import ResNet12Backbone
        from learn2learn.vision.models.cnn4 import ConvBase
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(f"{name} needs learn2learn (see tools/install.sh): {e}") from None
    kw = dict(kwargs)
    if name == "l2l:ResNet12":
        if image_size != 84:
            raise ValueError(f"l2l:ResNet12 only works on 84x84 inputs (got image_size={image_size}): "
                             "its DropBlock fails on smaller maps; use 'resnet12' instead")
        net = ResNet12Backbone(avg_pool=False, channels=in_chans, **kw)
        body = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        return _L2LTrunk(body, body[-1][0].conv3.out_channels)
    hidden, layers = kw.pop("hidden_size", 64), kw.pop("layers", 4)
    if kw:
        raise TypeError(f"{name}: unexpected arguments {sorted(kw)} (allowed: hidden_size, layers)")
    if name == "l2l:OmniglotCNN":   # Finn et al.: stride-2 convs, no pooling (28 -> 2x2 map)
        body = ConvBase(hidden=hidden, channels=in_chans, max_pool=False, layers=layers)
    else:                           # l2l:CNN4, Ravi & Larochelle (CNN4Backbone without flatten)
        body = ConvBase(hidden=hidden, channels=in_chans, max_pool=True, layers=layers,
                        max_pool_factor=4 // layers)
    return _L2LTrunk(body, hidden)


def _unknown_name_error(name: str) -> ValueError:
    names = list(timm.list_models()) + list(L2L_MODELS)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    if not close:
        close = timm.list_models(f"*{name.split(':')[-1]}*")[:5]
    hint = ", ".join(close) if close else "none (see timm.list_models())"
    return ValueError(f"unknown backbone {name!r}: not in timm's model registry nor one of "
                      f"{', '.join(L2L_MODELS)}. Close matches: {hint}")


def _create_timm(cfg: ModelConfig, in_chans: int, image_size: int) -> nn.Module:
    if not timm.is_model(cfg.name):
        raise _unknown_name_error(cfg.name)
    kwargs = dict(num_classes=0, in_chans=in_chans, **cfg.kwargs)
    if "img_size" not in kwargs:    # transformers take the input size; CNNs refuse the argument
        try:
            return timm.create_model(cfg.name, pretrained=cfg.pretrained, img_size=image_size, **kwargs)
        except TypeError as e:
            if "img_size" not in str(e):
                raise
    return timm.create_model(cfg.name, pretrained=cfg.pretrained, **kwargs)


class Backbone(nn.Module):
    """Spatial view of a feature extractor: ``forward_spatial`` (B, d, H, W), ``forward`` (B, d).

    Example::

        >>> backbone = create_backbone("resnet12", in_chans=1, image_size=28)
        >>> backbone.forward_spatial(torch.randn(2, 1, 28, 28)).shape       # (B, 640, H, W)
        torch.Size([2, 640, 1, 1])
        >>> backbone(torch.randn(2, 1, 28, 28)).shape                       # (B, 640)
        torch.Size([2, 640])
    """

    def __init__(self, model: nn.Module, name: str = "", in_chans: int = 3, image_size: int = 84):
        super().__init__()
        self.model = model
        self.name = name
        self.in_chans = in_chans
        self.image_size = image_size
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
        fmt = getattr(model, "output_fmt", "NCHW")
        self.channels_last = str(getattr(fmt, "value", fmt)) == "NHWC"
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                fmap = self.forward_spatial(torch.zeros(2, in_chans, image_size, image_size))
        except RuntimeError as e:        # e.g. a kernel larger than the map left by the downsampling
            raise BackboneSizeError(f"backbone {name!r} cannot run on {image_size}x{image_size} images "
                                    f"({str(e).splitlines()[0][:120]}){_smallest_size_hint(model, in_chans, image_size)}; "
                                    f"raise data.image_size or choose another model.name") from None
        model.train(was_training)
        self.feature_dim: int = int(fmap.shape[1])
        self.spatial_shape: Tuple[int, int] = (int(fmap.shape[2]), int(fmap.shape[3]))

    def _tokens_to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens[:, self.num_prefix_tokens:]
        b, n, d = tokens.shape
        grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)
        if grid is None or grid[0] * grid[1] != n:
            side = int(round(n ** 0.5))
            if side * side != n:
                raise ValueError(f"{self.name}: cannot put {n} patch tokens on a grid "
                                 f"(num_prefix_tokens={self.num_prefix_tokens})")
            grid = (side, side)
        return tokens.transpose(1, 2).reshape(b, d, grid[0], grid[1])

    def forward_spatial(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and x.shape[1] != self.in_chans:
            raise ValueError(f"backbone {self.name!r} was built for {self.in_chans} input channel(s) but got "
                             f"images with {x.shape[1]}: build it with create_backbone(..., in_chans={x.shape[1]})")
        f = self.model.forward_features(x)
        if f.ndim == 4:
            return f.permute(0, 3, 1, 2) if self.channels_last else f
        if f.ndim == 3:
            return self._tokens_to_map(f)
        if f.ndim == 2:
            return f[:, :, None, None]
        raise ValueError(f"{self.name}: unsupported forward_features output shape {tuple(f.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_spatial(x).mean(dim=(2, 3))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, feature_dim={self.feature_dim}, spatial_shape={self.spatial_shape}"


class BackboneSizeError(ValueError):
    """The backbone cannot process images of the requested size."""


def _smallest_size_hint(model: nn.Module, in_chans: int, image_size: int) -> str:
    """Cheaply find the smallest of a few sizes the model runs at (one tiny forward each)."""
    for size in (32, 48, 64, 84, 96, 128, 160, 224):
        if size <= image_size:
            continue
        try:
            with torch.no_grad():
                model.forward_features(torch.zeros(1, in_chans, size, size))
            return f"; the smallest size that works is {size}"
        except Exception:
            continue
    return ""


def create_backbone(cfg: Any, in_chans: int = 3, image_size: int = 84, **kwargs: Any) -> Backbone:
    """Build the :class:`Backbone` named by ``cfg`` (timm registry or ``l2l:*``).

    ``cfg`` is a model name or a :class:`~scl_plugin.config.ModelConfig`; keyword arguments
    other than ``pretrained`` go to the model constructor::

        backbone = create_backbone("resnet12", in_chans=1, image_size=28)
        backbone = create_backbone("conv4", in_chans=3, image_size=32, depth=3, hidden=32)
    """
    if isinstance(cfg, str):
        pretrained = bool(kwargs.pop("pretrained", False))
        cfg = ModelConfig(name=cfg, pretrained=pretrained, kwargs=kwargs)
    elif kwargs:
        raise TypeError(f"create_backbone: pass model arguments {sorted(kwargs)} in ModelConfig.kwargs "
                        f"or give the model name as a string")
    if cfg.name.startswith("l2l:"):
        if cfg.name not in L2L_MODELS:
            raise _unknown_name_error(cfg.name)
        if cfg.pretrained:
            raise ValueError(f"{cfg.name}: learn2learn models have no pretrained weights")
        model = _l2l_model(cfg.name, in_chans, image_size, cfg.kwargs)
    else:
        model = _create_timm(cfg, in_chans, image_size)
    return Backbone(model, cfg.name, in_chans, image_size)


def maml_bn_policy(module: nn.Module, keep_buffers: bool = False) -> int:
    """Make every BatchNorm use batch statistics only and never write its buffers.

    ``keep_buffers=False`` removes ``running_mean/var`` and ``num_batches_tracked`` (batch
    statistics in train *and* eval mode); ``True`` keeps them frozen, used in eval mode only.
    Returns the number of BatchNorm layers changed.
    """
    count = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            if not keep_buffers:
                m.running_mean = m.running_var = m.num_batches_tracked = None
            count += 1
    return count


def disable_fused_attn(module: nn.Module) -> int:
    """Use explicit softmax attention in every timm attention module (double backward works)."""
    count = 0
    for m in module.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
            count += 1
    return count


def prepare_for_maml(module: nn.Module, first_order: bool = False, keep_bn_buffers: bool = False) -> nn.Module:
    """Apply :func:`maml_bn_policy`, and :func:`disable_fused_attn` for second-order MAML."""
    maml_bn_policy(module, keep_buffers=keep_bn_buffers)
    if not first_order:
        disable_fused_attn(module)
    return module
