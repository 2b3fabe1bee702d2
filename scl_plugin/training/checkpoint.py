"""Checkpoints that survive interruption: atomic writes, last-K + best retention, clear errors.

A checkpoint is one ``torch.save`` file holding model / optimizer / scheduler / scaler state,
the RNG states of this process, the training position (epoch, batch within the epoch,
global step), the resolved config and a small ``meta`` dict used to refuse incompatible
checkpoints (backbone name, number of classes) with a one-line message.

Writes go to a temp file in the same folder, are fsynced, then renamed into place, so a
crash or a full disk never leaves a file that looks complete. A truncated or corrupt file
(e.g. copied half-way) is detected on load and reported, never silently used.

Every read is ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain data
(dicts, lists, tuples, numbers, strings) only, so a shared run folder or an ``init_from`` file
can never run code. A file whose pickle needs anything else (a class, a function such as
``os.system``) is refused with :class:`UnsafeCheckpointError`, naming the object it asked for.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..utils import atomic_open, refused_global

CKPT_RE = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why and what to do."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No file at the given path (bad input: the CLI exits with code 2)."""


class UnsafeCheckpointError(CheckpointError):
    """A file whose unpickling would need code (a global other than plain data): refused."""


def unsafe_reason(error: BaseException) -> str:
    """The object a refused pickle asked for (``posix.system``), from torch's message."""
    text = str(error).strip()
    return refused_global(error) or (text.splitlines()[0][:80] if text else type(error).__name__)


def safe_torch_load(path: os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors: :class:`CheckpointNotFound`,
    :class:`UnsafeCheckpointError` (the file would run code: never loaded) or
    :class:`CheckpointError` (truncated or corrupt)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise UnsafeCheckpointError(
                f"{what} {path} is refused: loading it would run code ({unsafe_reason(e)}), and scl_plugin "
                f"reads only tensors and plain data from files; use a checkpoint written by scl_plugin or "
                f"re-save its state_dict from a trusted source") from None
        raise CheckpointError(f"{what} {path} is truncated or corrupt (UnpicklingError)") from None
    except Exception as e:  # torch raises RuntimeError/EOFError/... on damage
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({type(e).__name__})") from None


def save_checkpoint(path: os.PathLike, state: Dict[str, Any]) -> Path:
    path = Path(path)
    try:
        with atomic_open(path, "wb") as f:
            torch.save(state, f)
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e} "
                              f"(free disk space or set run_dir elsewhere); previous checkpoints are intact") from None
    return path


def load_checkpoint(path: os.PathLike, expect: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Load a checkpoint, refusing truncated files and mismatching ``meta`` entries."""
    path = Path(path)
    try:
        state = safe_torch_load(path)
    except (CheckpointNotFound, UnsafeCheckpointError):
        raise
    except CheckpointError as e:
        raise CheckpointError(f"{e}: delete it (training resumes from the newest step checkpoint) "
                              f"or retrain with --restart") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not an scl_plugin checkpoint (no 'model' entry)")
    meta = state.get("meta", {})
    for key, want in (expect or {}).items():
        have = meta.get(key)
        if have is not None and have != want:
            raise CheckpointError(f"checkpoint {path} is incompatible: {key} is {have!r} there but "
                                  f"{want!r} in this config; use a matching config or another run_dir")
    return state


def list_checkpoints(folder: os.PathLike) -> List[Path]:
    """Step checkpoints in ``folder`` sorted by step (oldest first)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(folder: os.PathLike, keep_last: int) -> None:
    ckpts = list_checkpoints(folder)
    for p in ckpts[:-keep_last] if keep_last > 0 else ckpts:
        p.unlink(missing_ok=True)


def latest_checkpoint(folder: os.PathLike) -> Optional[Path]:
    ckpts = list_checkpoints(folder)
    return ckpts[-1] if ckpts else None
