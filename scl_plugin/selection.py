"""Test-time settings chosen on validation episodes, never on test ones (``eval.select``).

A config may list candidates for settings that are read only at test time (the ``eval``
section and :data:`~scl_plugin.config.TEST_TIME_KEYS`), e.g. in a method's YAML::

    eval:
      select:
        episodic.eval_inner_steps: [1, 3, 5, 10]

Every combination of candidates (the grid, in the order written) is scored on the validation
episodes of the run's own training dataset (its validation classes, ``data.val_episodes``
episodes of the test setting's ways and shots, seeded by ``data.episode_seed``); the best mean
accuracy wins, ties going to the earlier candidate. The benchmark harness
(:mod:`scl_plugin.bench`) does this per (ways, shots) setting, records every candidate's score
in ``<run>/eval/<test set>/select-*.json`` and evaluates the test episodes once, with the
winner: the winner is part of that evaluation's cache key, and the table shows it.

Example::

    >>> from scl_plugin.config import load_config
    >>> cfg = load_config(None, ["method=maml", "eval.select={episodic.eval_inner_steps: [1, 3]}"])
    >>> [c for c in candidates(cfg.eval.select)]
    [{'episodic.eval_inner_steps': 1}, {'episodic.eval_inner_steps': 3}]
    >>> scores = {1: 0.70, 3: 0.64}                  # e.g. validation accuracy per candidate
    >>> choice = select(cfg, lambda c: [scores[c.episodic.eval_inner_steps]] * 4)
    >>> choice.settings, choice.label
    ({'episodic.eval_inner_steps': 1}, 'eval_inner_steps=1')
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from .config import Config, with_settings
from .evaluation.stats import mean_ci

__all__ = ["candidates", "select", "Selection", "settings_label"]


def candidates(select_spec: Dict[str, Sequence[Any]]) -> List[Dict[str, Any]]:
    """Every combination of the candidate values, in the order they are written (first key slowest)."""
    keys = list(select_spec)
    return [dict(zip(keys, values)) for values in itertools.product(*(select_spec[k] for k in keys))]


def settings_label(settings: Dict[str, Any]) -> str:
    """``eval_inner_steps=1, eval_lr_scale=0.5`` (last name of each key; ``""`` for none)."""
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in settings.items())


@dataclass
class Selection:
    """The winner of :func:`select` and every candidate's validation score."""

    settings: Dict[str, Any]
    scores: List[Dict[str, Any]] = field(default_factory=list)   # {"settings", "acc", "ci95"} per candidate

    @property
    def label(self) -> str:
        return settings_label(self.settings)

    def to_dict(self) -> Dict[str, Any]:
        return {"chosen": self.settings, "candidates": self.scores}


def select(cfg: Config, validate: Callable[[Config], Sequence[float]]) -> Selection:
    """Score every candidate of ``cfg.eval.select`` with ``validate(candidate_cfg) -> per-episode
    validation accuracies`` and return the best (highest mean; ties: the first). ``validate``
    must only ever read validation episodes: this function never sees any test data."""
    scores, best, best_acc = [], {}, -np.inf
    for settings in candidates(cfg.eval.select):
        accs = validate(with_settings(cfg, settings))
        mean, ci = mean_ci(accs, ci=cfg.eval.ci)
        scores.append({"settings": settings, "acc": mean, "ci95": ci})
        if mean > best_acc:
            best, best_acc = settings, mean
    return Selection(best, scores)
