"""Where the loaders are: one module per dataset family / on-disk layout in
:mod:`scl_plugin.data.formats`, chosen by :func:`scl_plugin.data.registry.load_splits`.
This module only keeps the old import paths working."""
from __future__ import annotations

from .base import FileSource, NpySource, Split, TensorSource  # noqa: F401
from .formats.omniglot import (OMNIGLOT_SMALL_VAL_FRACTION, ChallengeRun,  # noqa: F401
                               find_omniglot_dir, load_omniglot_challenge)
from .registry import load_splits  # noqa: F401

__all__ = ["Split", "load_splits", "load_omniglot_challenge", "ChallengeRun", "find_omniglot_dir",
           "OMNIGLOT_SMALL_VAL_FRACTION"]
