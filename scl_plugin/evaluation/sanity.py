"""Sanity flags for a results table: settings whose order of accuracies is implausible.

For each method and dataset of the suite's result rows (``{"method", "dataset", "ways",
"shots", "acc", "ci95", ...}``, accuracy and 95% CI half-width in 0..1):

1. at the same ways, a setting with more shots must not score below one with fewer shots;
2. at the same shots, a setting with more ways must not score above one with fewer ways.

A pair is flagged only when the inversion exceeds the combined CI
``sqrt(ci_a^2 + ci_b^2)``. That combines the two half-widths as if the settings were evaluated
on independent episodes (unpaired: the settings' episodes differ), which is the conservative
choice. A missing or NaN ``ci95`` counts as 0; a row without ``acc`` is skipped. Every pair of
settings is compared (1, 5 and 10 shots: three pairs).

Example::

    >>> rows = [{"method": "maml", "dataset": "omniglot-small", "ways": 5, "shots": 1, "acc": 0.7317, "ci95": 0.0236},
    ...         {"method": "maml", "dataset": "omniglot-small", "ways": 5, "shots": 5, "acc": 0.6203, "ci95": 0.0180}]
    >>> for line in sanity_warnings(rows):
    ...     print(line)
    maml on omniglot-small: 5-way 5-shot (62.03 ± 1.80) below 5-way 1-shot (73.17 ± 2.36)
    >>> sanity_warnings(rows[:1])
    []
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["sanity_warnings", "sanity_block"]


def _value(v: Any) -> Optional[float]:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _setting(ways: int, shots: int, acc: float, ci: float) -> str:
    return f"{ways}-way {shots}-shot ({100 * acc:.2f} ± {100 * ci:.2f})"


def sanity_warnings(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """One line per implausible pair of settings (see the module docstring), in the order the
    methods / datasets first appear; ``[]`` for a clean table."""
    groups: Dict[Tuple[str, str], Dict[Tuple[int, int], Tuple[float, float]]] = {}
    for r in rows:
        acc = _value(r.get("acc"))
        if acc is None or r.get("ways") is None or r.get("shots") is None:
            continue
        ci = _value(r.get("ci95")) or 0.0
        group = groups.setdefault((str(r["method"]), str(r.get("dataset", ""))), {})
        group[(int(r["ways"]), int(r["shots"]))] = (acc, ci)

    out: List[str] = []
    for (method, dataset), settings in groups.items():
        keys = sorted(settings)
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                (acc_a, ci_a), (acc_b, ci_b) = settings[a], settings[b]
                margin = math.hypot(ci_a, ci_b)
                if a[0] == b[0] and a[1] < b[1] and acc_a - acc_b > margin:       # more shots, lower
                    out.append(f"{method} on {dataset}: {_setting(*b, acc_b, ci_b)} below {_setting(*a, acc_a, ci_a)}")
                elif a[1] == b[1] and a[0] < b[0] and acc_b - acc_a > margin:     # more ways, higher
                    out.append(f"{method} on {dataset}: {_setting(*b, acc_b, ci_b)} above {_setting(*a, acc_a, ci_a)}")
    return out


def sanity_block(rows: Sequence[Mapping[str, Any]]) -> str:
    """The warnings of :func:`sanity_warnings` as text to put under a results table
    (``"Sanity warnings:"`` and one ``- ...`` line each), or ``""`` when there are none."""
    lines = sanity_warnings(rows)
    return "Sanity warnings:\n" + "".join(f"- {line}\n" for line in lines) if lines else ""
