"""Confidence intervals over test episodes."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = ["mean_ci", "paired_difference"]

Z95 = 1.96


def mean_ci(accs: Sequence[float]) -> Tuple[float, float]:
    """Mean and 95% confidence half-width: ``1.96 * std / sqrt(n)``.

    ``std`` is the sample standard deviation (``ddof=1``, the unbiased variance), the
    usual choice; RFS's ``scipy.stats.sem * t.ppf`` differs only by using Student's t
    instead of 1.96, which is negligible for hundreds of episodes. With fewer than two
    episodes the half-width is NaN (undefined).
    """
    a = np.asarray(accs, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("mean_ci of an empty sequence")
    mean = float(a.mean())
    if a.size < 2:
        return mean, float("nan")
    return mean, float(Z95 * a.std(ddof=1) / np.sqrt(a.size))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Tuple[float, float]:
    """Mean and 95% CI of the per-episode difference ``a - b`` (same episodes, same order).

    Pairing removes the between-episode variance both methods share, so this CI is much
    tighter than comparing two independent :func:`mean_ci` intervals.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs equal lengths, got {a.size} and {b.size}")
    return mean_ci(a - b)
