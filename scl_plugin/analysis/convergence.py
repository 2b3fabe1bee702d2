"""Did a training run converge, and what did it consume?

A run directory holds ``config.yaml``, ``train_time.json`` and one folder per training stage
with a ``metrics.jsonl``: ``train/`` (every run that trained its own weights) and
``distill-1/``, ``distill-2/``... for distillation. The *final stage* (the one that produced
the final weights) is the last ``distill-g`` when there is one, else ``train``.
Rows with ``"kind": "epoch"`` carry ``epoch``, ``step`` and, when validation ran, ``val_acc``
and (newer runs) ``val_ci95``, the 95% CI half-width of the validation accuracy over the
validation episodes.

The rule (:func:`check_curve`): a run has **not converged** when its validation accuracy still
improved over the last fifth of its budget by more than the CI. With ``last`` the last
validation point and ``at80`` the last point at or before 80% of the last point's step (the
first point if none is), ``improvement = acc(last) - acc(at80)`` and
``CI = sqrt(ci(last)^2 + ci(at80)^2)`` (the two points' half-widths combined as if
independent); ``converged = improvement <= CI``. A point without ``val_ci95`` (older runs, or a
NaN half-width) gets the binomial approximation ``1.96 * sqrt(p (1 - p) / n)`` with ``n`` the
number of validation queries (``data.val_episodes * data.ways * data.queries`` in
:func:`convergence`); it ignores the correlation of the queries of one episode, so it is
narrower than the episode-level CI. Fewer than 3 validation points: ``None`` ("no validation").
The budget is the steps the stage ran (the last validation point's step), so a paused run is
judged on what it has run so far (``finished`` says whether it completed).

Consumption (:func:`convergence`): steps are the batches the trainer counted (with
``train.grad_accum`` > 1 several make one optimizer update). Per step, an episodic method
sees ``episodic.meta_batch_size`` tasks of ``ways * (shots + queries)`` images; flat
pretraining and distillation see ``data.batch_size`` images (views not counted; PK batches:
``embed.pk_classes * embed.pk_images``). One process is assumed (``data.batch_size`` is per
process). ``train_s`` is the run's summed training wall time (all stages); ``threads`` is what
the caller knows of the run's thread count (the current process's is not the run's).

Example (the rule on a curve: accuracy in 0..1, CIs as half-widths)::

    >>> rising = [(100, 0.50, 0.01), (800, 0.60, 0.01), (1000, 0.70, 0.01)]
    >>> check_curve(rising)
    (False, 'val +10.00 ± 1.41 pts over the last fifth (steps 800→1000): still improving')
    >>> check_curve([(100, 0.50, 0.01), (800, 0.70, 0.01), (1000, 0.705, 0.01)])[0]
    True
    >>> check_curve([(100, 0.5, 0.01)])
    (None, 'no validation (1 validation point; 3 needed)')

and on a run directory (here a tiny synthetic one)::

    >>> import json, pathlib, tempfile
    >>> from scl_plugin.config import load_config, to_yaml
    >>> tmp = tempfile.TemporaryDirectory(); run = pathlib.Path(tmp.name)
    >>> _ = (run / "config.yaml").write_text(to_yaml(load_config(None, ["method=protonet"])))
    >>> (run / "train").mkdir()
    >>> rows = [{"kind": "epoch", "epoch": e, "step": 100 * e, "loss": 1.0, "val_acc": 0.9, "val_ci95": 0.02}
    ...         for e in range(1, 6)]
    >>> _ = (run / "train" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> report = convergence(run, threads=1)
    >>> report["stage"], report["steps"], report["tasks_seen"], report["images_seen"], report["converged"]
    ('train', 500, 2000, 160000, True)
    >>> path = plot_curves({"protonet": read_curve(run)}, run / "curves.png")
    >>> tmp.cleanup()
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["read_curve", "final_stage", "stages", "check_curve", "convergence", "plot_curves", "TAIL"]

TAIL = 0.2          # the last fifth of the budget
Z95 = 1.96
_DISTILL = re.compile(r"^distill-(\d+)$")


# ----------------------------------------------------------------------------- reading a run
def _run_dir(run_dir: Any) -> Path:
    from ..utils import expand
    return expand(run_dir)


def stages(run_dir: Any) -> List[str]:
    """The stage folders of ``run_dir`` that have a ``metrics.jsonl``, in training order
    (``train``, ``distill-1``, ``distill-2``...)."""
    root = _run_dir(run_dir)
    out = ["train"] if (root / "train" / "metrics.jsonl").is_file() else []
    distill = sorted((int(m.group(1)), p.name) for p in root.glob("distill-*")
                     if (m := _DISTILL.match(p.name)) and (p / "metrics.jsonl").is_file())
    return out + [name for _, name in distill]


def final_stage(run_dir: Any) -> str:
    """The stage that produced the final weights: the last ``distill-g``, else ``train``."""
    found = stages(run_dir)
    if not found:
        raise FileNotFoundError(f"{_run_dir(run_dir)}: no train/metrics.jsonl or distill-*/metrics.jsonl "
                                f"(not trained yet, or not a run directory)")
    return found[-1]


def _rows(path: Path) -> List[Dict[str, Any]]:
    """The JSON rows of a metrics.jsonl; a line that does not parse (one being written) is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _stage_rows(run_dir: Any, stage: Optional[str]) -> Tuple[str, List[Dict[str, Any]]]:
    stage = stage or final_stage(run_dir)
    path = _run_dir(run_dir) / stage / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such metrics file (stages with metrics: "
                                f"{', '.join(stages(run_dir)) or 'none'})")
    return stage, _rows(path)


def _number(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _epoch_rows(rows: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    by_epoch: Dict[int, Mapping[str, Any]] = {}
    for r in rows:
        if r.get("kind") == "epoch" and "epoch" in r:
            by_epoch[int(r["epoch"])] = r          # a re-logged epoch (after a resume): the last one
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_curve(run_dir: Any, stage: Optional[str] = None) -> List[Dict[str, Any]]:
    """The per-epoch curve of a stage (default: :func:`final_stage`): one dict per epoch row,
    ``{"epoch", "step", "val_acc", "val_ci95"}`` (``None`` where not logged), ordered by epoch."""
    _, rows = _stage_rows(run_dir, stage)
    return [{"epoch": int(r["epoch"]), "step": int(r.get("step", 0)),
             "val_acc": _number(r.get("val_acc")), "val_ci95": _number(r.get("val_ci95"))}
            for r in _epoch_rows(rows)]


# ----------------------------------------------------------------------------- the rule
def _point(p: Any) -> Tuple[float, Optional[float], Optional[float]]:
    if isinstance(p, Mapping):
        return float(p["step"]), _number(p.get("val_acc")), _number(p.get("val_ci95"))
    step, acc, *rest = p
    return float(step), _number(acc), _number(rest[0]) if rest else None


def check_curve(points: Sequence[Any], n: Optional[int] = None, tail: float = TAIL) -> Tuple[Optional[bool], str]:
    """``(converged, reason)`` of a validation curve (see the module docstring for the rule).

    ``points``: ``(step, val_acc)`` or ``(step, val_acc, val_ci95)`` tuples, or dicts of
    :func:`read_curve`; accuracies and half-widths in 0..1; points without ``val_acc`` are
    ignored. ``n``: validation queries per point, for the binomial CI of a point that has no
    ``val_ci95``. ``converged`` is ``None`` with fewer than 3 validation points, or when a
    needed CI is missing and ``n`` is not given.
    """
    pts = sorted((s, a, c) for s, a, c in map(_point, points) if a is not None)
    if len(pts) < 3:
        return None, f"no validation ({len(pts)} validation point{'' if len(pts) == 1 else 's'}; 3 needed)"
    last = pts[-1]
    cut = (1.0 - tail) * last[0]
    before = [p for p in pts[:-1] if p[0] <= cut]
    ref = before[-1] if before else pts[0]

    def half_width(p: Tuple[float, float, Optional[float]]) -> Optional[float]:
        if p[2] is not None:
            return p[2]
        if n:
            return Z95 * math.sqrt(p[1] * (1.0 - p[1]) / n)
        return None

    ci_last, ci_ref = half_width(last), half_width(ref)
    if ci_last is None or ci_ref is None:
        return None, "no val_ci95 logged and no query count for a binomial CI"
    improvement = last[1] - ref[1]
    ci = math.sqrt(ci_last ** 2 + ci_ref ** 2)
    converged = not improvement > ci
    verdict = "no gain beyond the CI: converged" if converged else "still improving"
    return converged, (f"val {100 * improvement:+.2f} ± {100 * ci:.2f} pts over the last fifth "
                       f"(steps {ref[0]:.0f}→{last[0]:.0f}): {verdict}")


# ----------------------------------------------------------------------------- consumption
def _per_step(cfg: Any, stage: str) -> Tuple[int, Optional[int], str]:
    """``(images, tasks or None, description)`` of one step of ``stage``."""
    from ..registry import get_method
    d = cfg.data
    entry = get_method(cfg.method)
    if stage == "train" and entry.episodic:
        tasks = cfg.episodic.meta_batch_size
        per_task = d.ways * (d.shots + d.queries)
        return (tasks * per_task, tasks,
                f"{tasks} tasks x {d.ways}-way ({d.shots}+{d.queries}) = {tasks * per_task} images")
    if stage == "train" and entry.batches == "pk":
        images = cfg.embed.pk_classes * cfg.embed.pk_images
        return images, None, f"{cfg.embed.pk_classes} classes x {cfg.embed.pk_images} images = {images} images"
    return d.batch_size, None, f"data.batch_size = {d.batch_size} images (views not counted)"


def _stage_progress(rows: Sequence[Mapping[str, Any]]) -> Tuple[int, int]:
    """``(steps, completed epochs)`` of a stage's rows."""
    steps = max((int(r["step"]) for r in rows if _number(r.get("step")) is not None), default=0)
    epochs = max((int(r["epoch"]) for r in _epoch_rows(rows)), default=0)
    return steps, epochs


def convergence(run_dir: Any, threads: Optional[int] = None, val_episodes: Optional[int] = None,
                stage: Optional[str] = None) -> Dict[str, Any]:
    """Whether ``run_dir``'s final stage (or ``stage``) converged, and what the run consumed.

    Returns ``{"stage", "finished", "steps", "epochs", "per_step", "images_seen",
    "tasks_seen", "images_seen_total", "train_s", "threads", "val_first", "val_best",
    "val_last", "converged", "reason"}``: ``steps`` / ``epochs`` / ``images_seen`` /
    ``tasks_seen`` (episodic training, else None) are the stage's; ``images_seen_total`` sums
    every stage of the run; ``train_s`` is the whole run's (:func:`scl_plugin.runs.train_seconds`,
    None if unknown); ``threads`` is recorded as given. ``val_*`` are accuracies in 0..1 (None
    without validation). ``val_episodes`` (default ``data.val_episodes``) sets the query count
    of the binomial CI used where ``val_ci95`` was not logged.
    """
    from ..config import load_config
    from ..runs import train_seconds

    root = _run_dir(run_dir)
    cfg = load_config(root / "config.yaml")
    stage, rows = _stage_rows(root, stage)
    steps, epochs = _stage_progress(rows)
    images, tasks, per_step = _per_step(cfg, stage)
    total = 0
    for name in stages(root):
        s, _ = _stage_progress(rows if name == stage else _rows(root / name / "metrics.jsonl"))
        total += s * _per_step(cfg, name)[0]
    curve = [dict(step=int(r.get("step", 0)), val_acc=_number(r.get("val_acc")), val_ci95=_number(r.get("val_ci95")))
             for r in _epoch_rows(rows)]
    accs = [p["val_acc"] for p in curve if p["val_acc"] is not None]
    episodes = cfg.data.val_episodes if val_episodes is None else val_episodes
    converged, reason = check_curve(curve, n=episodes * cfg.data.ways * cfg.data.queries or None)
    return {"stage": stage, "finished": (root / stage / "final.pt").is_file(), "steps": steps, "epochs": epochs,
            "per_step": per_step, "images_seen": steps * images,
            "tasks_seen": steps * tasks if tasks is not None else None, "images_seen_total": total,
            "train_s": train_seconds(root), "threads": threads,
            "val_first": accs[0] if accs else None, "val_best": max(accs) if accs else None,
            "val_last": accs[-1] if accs else None, "converged": converged, "reason": reason}


# ----------------------------------------------------------------------------- plot
def _xy(points: Sequence[Any]) -> Tuple[List[float], List[float], List[Optional[float]]]:
    pts = sorted((s, a, c) for s, a, c in map(_point, points) if a is not None)
    xs = [p[0] for p in pts]
    top = max(xs, default=1.0)
    if top > 1.0:                      # steps: as fractions of the curve's own budget
        xs = [x / top for x in xs]
    return xs, [100 * p[1] for p in pts], [None if p[2] is None else 100 * p[2] for p in pts]


def plot_curves(curves: Mapping[str, Sequence[Any]], path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Validation accuracy (%) against the fraction of the training budget, one line per run.

    ``curves``: ``{name: points}``, points as in :func:`check_curve` (``(x, val_acc[, ci95])``
    or :func:`read_curve` dicts); ``x`` is a fraction of the budget (all ``x <= 1``) or a step
    (divided by the curve's last step), so runs of different lengths compare. A logged CI is
    drawn as a band; a dotted line marks where the last fifth starts. Rendered with the Agg
    canvas (no display, no global backend change), like :func:`scl_plugin.evaluation.plot_results`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, points in curves.items():
        xs, ys, cis = _xy(points)
        if not xs:
            continue
        (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=name)
        if all(c is not None for c in cis):
            ax.fill_between(xs, [y - c for y, c in zip(ys, cis)], [y + c for y, c in zip(ys, cis)],
                            color=line.get_color(), alpha=0.15, linewidth=0)
    ax.axvline(1.0 - TAIL, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0.0, 1.02)
    ax.set_xlabel("fraction of training budget")
    ax.set_ylabel("validation accuracy (%)")
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    from ..utils import save_figure
    return Path(save_figure(fig, path))
