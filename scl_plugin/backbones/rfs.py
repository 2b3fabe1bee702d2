"""Checkpoints of RFS (Tian et al. 2020) and SCL's own code for our ``resnet12``: import and export.

Both write ``{'model': state_dict, 'opt': argparse.Namespace, ...}`` with ResNet-12 keys
``layer{1..4}.0.{conv1,bn1,conv2,bn2,conv3,bn3}`` and ``layer{i}.0.downsample.{0,1}`` (plus
``classifier`` when trained with a linear head), optionally prefixed ``module.`` (DataParallel).
Their block computes exactly ours (conv-BN-LeakyReLU(0.1) x3 without the last activation, plus a
1x1 conv-BN shortcut, LeakyReLU, max-pool), so the mapping is a renaming:

    layer{i+1}.0.conv{j+1} <-> stages.{i}.convs.{j}.0      layer{i+1}.0.downsample.0 <-> stages.{i}.shortcut.0
    layer{i+1}.0.bn{j+1}   <-> stages.{i}.convs.{j}.1      layer{i+1}.0.downsample.1 <-> stages.{i}.shortcut.1
    classifier             <-> fc

Files are read with ``torch.load(weights_only=True)``, allowing only ``argparse.Namespace`` (the
``opt`` entry) besides tensors and containers: a checkpoint cannot run code.

Usage::

    from scl_plugin.backbones.rfs import load_rfs_weights, export_rfs
    load_rfs_weights(backbone.model, "resnet12_last.pth")      # backbone.model: our timm resnet12
    export_rfs(backbone.model, "ours_in_rfs_layout.pth")
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict

import torch
from torch import nn

from ..utils import refused_global

__all__ = ["rfs_to_ours", "ours_to_rfs", "read_rfs_checkpoint", "load_rfs_weights", "export_rfs",
           "RFSCheckpointError"]

# Classes a released RFS / SCL checkpoint legitimately pickles besides tensors and containers.
SAFE_GLOBALS = [argparse.Namespace]

_RFS = re.compile(r"^layer([1-4])\.0\.(?:(conv|bn)([1-3])|downsample\.([01]))\.(.+)$")
_OURS = re.compile(r"^stages\.([0-3])\.(?:convs\.([0-2])\.([01])|shortcut\.([01]))\.(.+)$")


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


def rfs_to_ours(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """RFS / SCL ResNet-12 state dict -> our ``resnet12`` keys; one error listing unmapped keys."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    out, unmapped = {}, []
    for k, v in state.items():
        ours = _rfs_key_to_ours(k)
        if ours is None:
            unmapped.append(k)
        else:
            out[ours] = v
    if unmapped:
        raise RFSCheckpointError(f"{len(unmapped)} keys do not map onto resnet12: "
                                 f"{', '.join(sorted(unmapped))}")
    return out


def ours_to_rfs(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our ``resnet12`` state dict -> the RFS / SCL layout."""
    out, unmapped = {}, []
    for k, v in state.items():
        theirs = _our_key_to_rfs(k)
        if theirs is None:
            unmapped.append(k)
        else:
            out[theirs] = v
    if unmapped:
        raise RFSCheckpointError(f"{len(unmapped)} keys have no RFS name: {', '.join(sorted(unmapped))}")
    return out


def read_rfs_checkpoint(path) -> Dict[str, torch.Tensor]:
    """The state dict of an RFS / SCL checkpoint file (``{'model': ...}`` or a bare state dict),
    loaded with ``weights_only=True`` and only :data:`SAFE_GLOBALS` allowed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RFSCheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError names the refused global; others = damaged file
        raise RFSCheckpointError(_refusal(path, e)) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise RFSCheckpointError(f"{path} holds no state dict (expected {{'model': state_dict, ...}})")
    return obj


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


def load_rfs_weights(model: nn.Module, path, strict_head: bool = False) -> None:
    """Load an RFS / SCL ResNet-12 checkpoint into our timm ``resnet12`` ``model``.

    The backbone must fit exactly; the linear ``classifier`` is loaded only if it has our ``fc``'s
    shape (few-shot evaluation does not use it) unless ``strict_head``.
    """
    state = rfs_to_ours(read_rfs_checkpoint(path))
    own = model.state_dict()
    if not strict_head:
        for k in [k for k in state if k.startswith("fc.")]:
            if k not in own or own[k].shape != state[k].shape:
                del state[k]
        for k in [k for k in own if k.startswith("fc.") and k not in state]:
            state[k] = own[k]
    missing = sorted(set(own) - set(state))
    bad_shape = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if missing or bad_shape:
        raise RFSCheckpointError(
            f"{path} does not fit resnet12: "
            + "; ".join(p for p in (f"missing {', '.join(missing)}" if missing else "",
                                    f"shape mismatch {', '.join(bad_shape)}" if bad_shape else "") if p))
    model.load_state_dict(state)


def export_rfs(model: nn.Module, path, **extra) -> None:
    """Write our ``resnet12`` as an RFS / SCL checkpoint ``{'model': state_dict, **extra}``."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": ours_to_rfs(model.state_dict()), **extra}, path)
