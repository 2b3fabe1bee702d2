"""Checkpoints of RFS (Tian et al. 2020) and of the SCL authors' code (Ouali et al. 2021) for our
``resnet12``: import and export.

Both write ``{'model': state_dict, 'opt': argparse.Namespace, ...}``, with two key layouts:

* **RFS** (``WangYueFt/rfs``): the bare ResNet-12, ``layer{1..4}.0.{conv1,bn1,conv2,bn2,conv3,bn3}``
  and ``layer{i}.0.downsample.{0,1}``, plus ``classifier`` when trained with a linear head.
* **SCL** (``yassouali/SCL``, ``train_contrastive.py`` / ``train_distillation.py``): the state dict
  of ``ContrastResNet`` (``models/contrast.py``), i.e. the same ResNet-12 (``models/resnet.py``)
  under ``encoder.`` (``encoder.layer1.0.conv1.weight`` ... ``encoder.classifier.{weight,bias}``)
  and the global projection head ``Projection`` under ``head.``: ``head.net.0.weight`` (d x d) and
  ``head.net.2.weight`` (d' x d), Linear-ReLU-Linear without biases, d = 640, d' = ``opt.feat_dim``
  (80 by default). ``train_contrastive.py`` saves the spatial attention ``AttentionSimilarity``
  (``models/attention.py``) beside it as ``'attention'`` (None without ``--spatial_cont_loss``):
  ``{query,key,value}.0.weight`` (d x d) and ``{query,key,value}.2.weight`` (d' x d), the same
  bias-free MLP; it has no other parameter (its dropout has none).

Either may be prefixed ``module.`` (DataParallel: ``module.layer1...``, ``module.encoder.layer1...``).
Their block computes exactly ours (conv-BN-LeakyReLU(0.1) x3 without the last activation, plus a
1x1 conv-BN shortcut, LeakyReLU, max-pool), so the backbone mapping is a renaming:

    layer{i+1}.0.conv{j+1} <-> stages.{i}.convs.{j}.0      layer{i+1}.0.downsample.0 <-> stages.{i}.shortcut.0
    layer{i+1}.0.bn{j+1}   <-> stages.{i}.convs.{j}.1      layer{i+1}.0.downsample.1 <-> stages.{i}.shortcut.1
    classifier             <-> fc                          (SCL: the same under ``encoder.``)

and SCL's head and attention are exactly our :class:`~scl_plugin.losses.ProjectionHead` and
:class:`~scl_plugin.losses.SpatialAttention` (``query`` / ``key`` / ``value`` projectors):

    head.net.{0,2}.weight <-> SCL.head.{0,2}.weight
    attention {query,key,value}.{0,2}.weight <-> SCL.attention.{query,key,value}.{0,2}.weight

What does not map: their SE-ResNets (``seresnet12``: ``se.fc`` keys), WRN / ConvNet / ResNet-18+
encoders, and any other key, all listed in one error. The attention's options (``opt.aggregation``)
are settings, not weights: ours come from the config (``loss.aggregation``).

Files are read with ``torch.load(weights_only=True)``, allowing only ``argparse.Namespace`` (the
``opt`` entry) besides tensors and containers: a checkpoint cannot run code.

Example (a file in RFS's layout written by :func:`export_rfs`, read back)::

    >>> import tempfile, pathlib
    >>> from scl_plugin.algorithms import SCL
    >>> from scl_plugin.backbones import create_backbone
    >>> from scl_plugin.backbones.rfs import export_rfs, load_into_scl, load_rfs_weights, read_released
    >>> backbone = create_backbone("resnet12", in_chans=3, image_size=32)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "resnet12_last.pth"
    >>> export_rfs(backbone.model, path)                        # our weights in RFS's layout
    >>> load_rfs_weights(backbone.model, path)                  # backbone.model: our timm resnet12
    >>> ckpt = read_released(path)                              # + ckpt.head, ckpt.attention (SCL's files)
    >>> ckpt.layout, ckpt.num_classes
    ('rfs', None)
    >>> load_into_scl(SCL(backbone, num_classes=5), ckpt)      # backbone, classifier, head, attention
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from ..utils import refused_global
from .resnet12 import SCHEDULE_BUFFER

__all__ = ["rfs_to_ours", "ours_to_rfs", "read_rfs_checkpoint", "load_rfs_weights", "export_rfs",
           "RFSCheckpointError", "ReleasedCheckpoint", "read_released", "load_into_scl"]

# Classes a released RFS / SCL checkpoint legitimately pickles besides tensors and containers.
SAFE_GLOBALS = [argparse.Namespace]

_RFS = re.compile(r"^layer([1-4])\.0\.(?:(conv|bn)([1-3])|downsample\.([01]))\.(.+)$")
_OURS = re.compile(r"^stages\.([0-3])\.(?:convs\.([0-2])\.([01])|shortcut\.([01]))\.(.+)$")
_HEAD = re.compile(r"^head\.net\.([02])\.weight$")                     # SCL's Projection
_ATTENTION = re.compile(r"^(?:query|key|value)\.[02]\.weight$")       # SCL's AttentionSimilarity


class RFSCheckpointError(ValueError):
    """The file is not an RFS / SCL ResNet-12 checkpoint that fits our resnet12."""


def _rfs_key_to_ours(k: str):
    if k.startswith("classifier."):
        return "fc." + k[len("classifier."):]
    m = _RFS.match(k)
    if not m:
        return None
    stage, kind, j, down, leaf = m.groups()
    i = int(stage) - 1
    if down is not None:
        return f"stages.{i}.shortcut.{down}.{leaf}"
    return f"stages.{i}.convs.{int(j) - 1}.{0 if kind == 'conv' else 1}.{leaf}"


def _our_key_to_rfs(k: str):
    if k.startswith("fc."):
        return "classifier." + k[len("fc."):]
    m = _OURS.match(k)
    if not m:
        return None
    i, j, which, short, leaf = m.groups()
    if short is not None:
        return f"layer{int(i) + 1}.0.downsample.{short}.{leaf}"
    return f"layer{int(i) + 1}.0.{'conv' if which == '0' else 'bn'}{int(j) + 1}.{leaf}"


def _strip_module(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _is_scl(state: Dict[str, torch.Tensor]) -> bool:
    """SCL's ``ContrastResNet`` layout (``encoder.*``, ``head.*``) rather than RFS's bare ResNet."""
    return any(k.startswith("encoder.") for k in state)


def rfs_to_ours(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """RFS / SCL ResNet-12 state dict -> our ``resnet12`` keys; one error listing unmapped keys.

    Of an SCL ``ContrastResNet`` state dict this is the ``encoder``; its projection head
    (``head.net.{0,2}.weight``) is not backbone weights: :func:`read_released` gives it."""
    state = _strip_module(state)
    scl = _is_scl(state)
    out, unmapped = {}, []
    for k, v in state.items():
        if scl and _HEAD.match(k):
            continue
        theirs = k[len("encoder."):] if scl and k.startswith("encoder.") else (None if scl else k)
        ours = _rfs_key_to_ours(theirs) if theirs is not None else None
        if ours is None:
            unmapped.append(k)
        else:
            out[ours] = v
    if unmapped:
        raise RFSCheckpointError(f"{len(unmapped)} keys do not map onto resnet12: "
                                 f"{', '.join(sorted(unmapped))}")
    return out


def ours_to_rfs(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our ``resnet12`` state dict -> the RFS layout."""
    out, unmapped = {}, []
    for k, v in state.items():
        if k.endswith("." + SCHEDULE_BUFFER):      # our DropBlock counter: RFS keeps no such state
            continue
        theirs = _our_key_to_rfs(k)
        if theirs is None:
            unmapped.append(k)
        else:
            out[theirs] = v
    if unmapped:
        raise RFSCheckpointError(f"{len(unmapped)} keys have no RFS name: {', '.join(sorted(unmapped))}")
    return out


def _load_file(path) -> Any:
    """The object in ``path``, loaded with ``weights_only=True`` and only :data:`SAFE_GLOBALS` allowed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RFSCheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError names the refused global; others = damaged file
        raise RFSCheckpointError(_refusal(path, e)) from None


def _model_state(obj: Any, path) -> Dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise RFSCheckpointError(f"{Path(path).expanduser()} holds no state dict (expected "
                                 f"{{'model': state_dict, ...}})")
    return obj


def read_rfs_checkpoint(path) -> Dict[str, torch.Tensor]:
    """The state dict of an RFS / SCL checkpoint file (``{'model': ...}`` or a bare state dict),
    loaded with ``weights_only=True`` and only :data:`SAFE_GLOBALS` allowed."""
    return _model_state(_load_file(path), path)


def _refusal(path: Path, e: Exception) -> str:
    """One line for a file ``torch.load(weights_only=True)`` refused: the global it would call, or
    torch's cause without its advice to turn the check off."""
    allowed = "only tensors, containers and argparse.Namespace are allowed"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))     # torch colours its advice
    name = refused_global(e)
    if name:
        return (f"{path} cannot be loaded safely and is refused: it pickles {name}, so loading it would "
                f"run code; {allowed}")
    cause = [ln.strip() for ln in text.replace("Weights only load failed.", "\n").splitlines()
             if ln.strip() and "weights_only" not in ln and "trust" not in ln
             and not ln.strip().startswith("Check the documentation")]
    cause = f"{type(e).__name__}: {cause[0][:300]}" if cause else type(e).__name__
    return f"{path} cannot be loaded safely ({cause}; damaged or not a PyTorch file?); {allowed}"


@dataclass
class ReleasedCheckpoint:
    """A released RFS / SCL checkpoint in our names (:func:`read_released`).

    ``backbone``: our ``resnet12`` keys (``fc.*`` = their linear ``classifier``, when there is one);
    ``head``: our :class:`~scl_plugin.losses.ProjectionHead` keys ``{0,2}.weight`` (SCL's
    ``head.net``; empty for RFS); ``attention``: our :class:`~scl_plugin.losses.SpatialAttention`
    keys ``{query,key,value}.{0,2}.weight`` (SCL's ``'attention'`` entry; empty when not saved);
    ``opt``: their ``argparse.Namespace`` of training options (or None)."""
    path: Path
    layout: str                                   # "rfs" or "scl"
    backbone: Dict[str, torch.Tensor]
    head: Dict[str, torch.Tensor] = field(default_factory=dict)
    attention: Dict[str, torch.Tensor] = field(default_factory=dict)
    opt: Optional[argparse.Namespace] = None

    @property
    def num_classes(self) -> Optional[int]:
        """Classes of their linear classifier (None: saved without one)."""
        w = self.backbone.get("fc.weight")
        return int(w.shape[0]) if w is not None else None

    @property
    def proj_dim(self) -> Optional[int]:
        """``d'`` of the projection head / attention (their ``opt.feat_dim``; None for RFS)."""
        w = self.head.get("2.weight", self.attention.get("query.2.weight"))
        return int(w.shape[0]) if w is not None else None


def read_released(path) -> ReleasedCheckpoint:
    """Read an RFS or SCL checkpoint file (layouts in the module docstring) into our names.

    One :class:`RFSCheckpointError` line for a file that is missing, unsafe, damaged, or has
    keys that do not map (all of them listed)."""
    obj = _load_file(path)
    state = _model_state(obj, path)
    path = Path(path).expanduser()
    backbone = rfs_to_ours(state)
    stripped = _strip_module(state)
    head = {}
    if _is_scl(stripped):
        head = {f"{m.group(1)}.weight": v for k, v in stripped.items() for m in [_HEAD.match(k)] if m}
    attention = obj.get("attention") if isinstance(obj, dict) and "model" in obj else None
    if attention is not None:
        if not isinstance(attention, dict) or not all(torch.is_tensor(v) for v in attention.values()):
            raise RFSCheckpointError(f"{path}: its 'attention' entry is not a state dict")
        attention = _strip_module(attention)
        bad = sorted(k for k in attention if not _ATTENTION.match(k))
        if bad:
            raise RFSCheckpointError(f"{path}: {len(bad)} keys of its 'attention' entry do not map onto "
                                     f"SpatialAttention (query/key/value.{{0,2}}.weight): {', '.join(bad)}")
    ckpt = ReleasedCheckpoint(path, "scl" if _is_scl(stripped) else "rfs", backbone, head, attention or {},
                              obj.get("opt") if isinstance(obj, dict) and isinstance(obj.get("opt"),
                                                                                      argparse.Namespace) else None)
    dims = {name: int(part[k].shape[0]) for name, part, k in (("head", head, "2.weight"),
                                                              ("attention", ckpt.attention, "query.2.weight"))
            if k in part}
    if len(set(dims.values())) > 1:
        raise RFSCheckpointError(f"{path}: its projection head projects to {dims['head']} dimensions but its "
                                 f"attention to {dims['attention']}; our SCL holds both at one loss.proj_dim")
    return ckpt


def _fit(module: nn.Module, state: Dict[str, torch.Tensor], what: str, hint: str = "") -> None:
    """Load ``state`` into ``module`` exactly, or one error naming missing / misshapen keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad_shape = sorted(f"{k} {tuple(state[k].shape)} vs ours {tuple(own[k].shape)}" for k in state
                       if k in own and own[k].shape != state[k].shape)
    if missing or extra or bad_shape:
        raise RFSCheckpointError(
            f"{what}: "
            + "; ".join(p for p in (f"missing {', '.join(missing)}" if missing else "",
                                    f"unexpected {', '.join(extra)}" if extra else "",
                                    f"shape mismatch {', '.join(bad_shape)}" if bad_shape else "") if p)
            + hint)
    module.load_state_dict(state)


def load_rfs_weights(model: nn.Module, path: Union[str, Path, ReleasedCheckpoint],
                     strict_head: bool = False) -> None:
    """Load an RFS / SCL ResNet-12 checkpoint (a file, or one :func:`read_released` already read)
    into our timm ``resnet12`` ``model``.

    The backbone must fit exactly; the linear ``classifier`` is loaded only if it has our ``fc``'s
    shape (few-shot evaluation does not use it) unless ``strict_head``.
    """
    if isinstance(path, ReleasedCheckpoint):
        path, state = path.path, dict(path.backbone)
    else:
        state = rfs_to_ours(read_rfs_checkpoint(path))
    own = model.state_dict()
    if not strict_head:
        for k in [k for k in state if k.startswith("fc.")]:
            if k not in own or own[k].shape != state[k].shape:
                del state[k]
        for k in [k for k in own if k.startswith("fc.") and k not in state]:
            state[k] = own[k]
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("." + SCHEDULE_BUFFER))  # kept as is
    bad_shape = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if missing or bad_shape:
        raise RFSCheckpointError(
            f"{path} does not fit resnet12: "
            + "; ".join(p for p in (f"missing {', '.join(missing)}" if missing else "",
                                    f"shape mismatch {', '.join(bad_shape)}" if bad_shape else "") if p))
    model.load_state_dict(state)


def load_into_scl(method: nn.Module, ckpt: ReleasedCheckpoint) -> None:
    """Load a released checkpoint into an :class:`~scl_plugin.algorithms.SCL` (a CE or SCL method
    on our ``resnet12``).

    * backbone: must fit exactly (:func:`load_rfs_weights`);
    * ``method.classifier``: their linear ``classifier`` when its shape fits (build the method
      with ``num_classes = ckpt.num_classes``);
    * ``method.head``: SCL's ``head.net`` (must fit: ``loss.proj_dim`` = their ``opt.feat_dim``);
    * ``method.attention``: SCL's saved attention (must fit), when both have one.

    What the file lacks keeps its initialisation: an RFS file has no head and no attention; an
    SCL file of ``train_distillation.py`` or trained without ``--spatial_cont_loss`` has no
    attention. (SCL saves its head either way; it is trained only with ``--global_cont_loss``.)
    A method without attention (CE, ``loss.lambda_spatial=0``) does not receive the file's.
    Neither few-shot evaluation nor distillation uses the attention.
    """
    load_rfs_weights(method.backbone.model, ckpt)
    fc = {k[len("fc."):]: v for k, v in ckpt.backbone.items() if k.startswith("fc.")}
    own = method.classifier.state_dict()
    if fc and fc.keys() == own.keys() and all(fc[k].shape == own[k].shape for k in own):
        method.classifier.load_state_dict(fc)
    hint = f" (set loss.proj_dim={ckpt.proj_dim}: their opt.feat_dim)" if ckpt.proj_dim else ""
    if ckpt.head:
        _fit(method.head, ckpt.head, f"{ckpt.path}: its projection head (head.net) does not fit ours", hint)
    if ckpt.attention and getattr(method, "attention", None) is not None:
        _fit(method.attention, ckpt.attention, f"{ckpt.path}: its attention does not fit ours", hint)


def export_rfs(model: nn.Module, path, **extra) -> None:
    """Write our ``resnet12`` as an RFS checkpoint ``{'model': state_dict, **extra}``."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": ours_to_rfs(model.state_dict()), **extra}, path)
