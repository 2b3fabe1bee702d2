"""Confidence intervals over test episodes."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = ["mean_ci", "paired_difference", "CI_METHODS"]

Z95 = 1.96
CI_METHODS = ("normal", "t")


def mean_ci(accs: Sequence[float], ci: str = "normal") -> Tuple[float, float]:
    """Mean and 95% confidence half-width ``q * std / sqrt(n)``.

    ``std`` is the sample standard deviation (``ddof=1``). ``ci="normal"``: ``q = 1.96``;
    ``ci="t"``: ``q`` = the 97.5% quantile of Student's t with n - 1 degrees of freedom,
    i.e. RFS's / the SCL authors' ``scipy.stats.sem(a) * t.ppf(0.975, n - 1)`` (1.9640 for
    600 episodes). With fewer than two episodes the half-width is NaN (undefined).
    """
    if ci not in CI_METHODS:
        raise ValueError(f"unknown ci {ci!r}; allowed: {', '.join(CI_METHODS)}")
    a = np.asarray(accs, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("mean_ci of an empty sequence")
    mean = float(a.mean())
    if a.size < 2:
        return mean, float("nan")
    if ci == "t":
        from scipy.stats import t
        q = float(t.ppf(0.975, a.size - 1))
    else:
        q = Z95
    return mean, float(q * a.std(ddof=1) / np.sqrt(a.size))


def paired_difference(a: Sequence[float], b: Sequence[float], ci: str = "normal") -> Tuple[float, float]:
    """Mean and 95% CI of the per-episode difference ``a - b`` (same episodes, same order).

    Pairing removes the between-episode variance both methods share, so this CI is much
    tighter than comparing two independent :func:`mean_ci` intervals.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs equal lengths, got {a.size} and {b.size}")
    return mean_ci(a - b, ci=ci)
