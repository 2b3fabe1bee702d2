"""Result tables (Markdown / CSV / JSON), paired comparisons and a bar chart."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..utils import atomic_write_json, atomic_write_text
from .stats import mean_ci, paired_difference

__all__ = ["COLUMNS", "format_table", "write_results", "paired_table", "plot_results",
           "result_row"]

COLUMNS = ("method", "dataset", "ways", "shots", "episodes", "acc", "ci95")


def result_row(method: str, dataset: str, ways: int, shots: int, accs: Sequence[float],
               **extra: Any) -> Dict[str, Any]:
    """One table row from per-episode accuracies (acc and ci95 as fractions)."""
    mean, ci = mean_ci(accs)
    return {"method": method, "dataset": dataset, "ways": int(ways), "shots": int(shots),
            "episodes": len(accs), "acc": mean, "ci95": ci, **extra}


def _columns(rows: Sequence[Mapping[str, Any]], base: Sequence[str] = COLUMNS) -> List[str]:
    cols = [c for c in base if any(c in r for r in rows)]
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def _clean(v: Any) -> Any:
    """JSON-safe scalar: NaN/inf -> None, numpy scalars -> Python."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table; ``acc ± ci95`` is shown in percent (e.g. ``63.21 ± 0.80``)."""
    if not rows:
        return "(no results)\n"
    cols = _columns(rows)
    shown = [c for c in cols if c != "ci95"]
    header = ["acc (%)" if c == "acc" else c for c in shown]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if c in ("ways", "shots", "episodes", "acc") else "---"
                            for c in shown) + "|"]
    for r in rows:
        cells = []
        for c in shown:
            if c == "acc" and r.get("acc") is not None:
                ci = r.get("ci95")
                cell = f"{100 * r['acc']:.2f}"
                if ci is not None and not (isinstance(ci, float) and math.isnan(ci)):
                    cell += f" ± {100 * ci:.2f}"
                cells.append(cell)
            else:
                cells.append(_fmt(r.get(c)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    cols = _columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _clean(r.get(c)) for c in cols})   # full-precision floats
    return buf.getvalue()


def write_results(rows: Sequence[Mapping[str, Any]], out_dir, name: str = "results"
                  ) -> Dict[str, Path]:
    """Write ``<name>.md``, ``<name>.csv`` and ``<name>.json`` into ``out_dir``, atomically.

    One row per method x dataset x (ways, shots) with columns method, dataset, ways, shots,
    episodes, acc, ci95 (fractions in [0, 1]; the Markdown shows percent), plus any extra
    keys. Each file is written to a temp file in the same folder, fsynced and renamed, so a
    reader never sees a partial file. Returns the paths by format.
    """
    out = Path(out_dir)
    rows = [dict(r) for r in rows]
    paths = {"md": out / f"{name}.md", "csv": out / f"{name}.csv", "json": out / f"{name}.json"}
    atomic_write_text(paths["md"], format_table(rows))
    atomic_write_text(paths["csv"], _csv_text(rows))
    atomic_write_json(paths["json"], [{k: _clean(v) for k, v in r.items()} for r in rows])
    return paths


def paired_table(per_episode: Mapping[str, Sequence[float]], reference: str,
                 **common: Any) -> List[Dict[str, Any]]:
    """Paired per-episode differences of every method against ``reference``.

    ``per_episode`` maps method -> accuracies on the *same* episodes in the same order.
    Each row: method, reference, episodes, diff (mean of method - reference), ci95 and
    ``significant`` (the 95% CI excludes 0), plus the ``common`` keys (e.g. dataset).
    """
    if reference not in per_episode:
        raise KeyError(f"reference method {reference!r} not in {list(per_episode)}")
    ref = per_episode[reference]
    rows = []
    for method, accs in per_episode.items():
        if method == reference:
            continue
        diff, ci = paired_difference(accs, ref)
        rows.append({"method": method, "reference": reference, "episodes": len(accs),
                     "diff": diff, "ci95": ci,
                     "significant": bool(math.isfinite(ci) and abs(diff) > ci), **common})
    return rows


def plot_results(rows: Sequence[Mapping[str, Any]], path, title: Optional[str] = None) -> Path:
    """Bar chart of accuracy (%) with 95% CI error bars: one group per dataset/ways/shots,
    one bar per method. Rendered with the Agg canvas (no display, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups: List[tuple] = []
    methods: List[str] = []
    for r in rows:
        g = (r.get("dataset", ""), r.get("ways"), r.get("shots"))
        if g not in groups:
            groups.append(g)
        if r["method"] not in methods:
            methods.append(r["method"])
    lookup = {((r.get("dataset", ""), r.get("ways"), r.get("shots")), r["method"]): r for r in rows}
    fig = Figure(figsize=(max(4.0, 1.2 * len(groups) * max(1, len(methods)) ** 0.5 + 2), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(methods))
    for m_i, m in enumerate(methods):
        xs, ys, es = [], [], []
        for g_i, g in enumerate(groups):
            r = lookup.get((g, m))
            if r is None or r.get("acc") is None:
                continue
            ci = r.get("ci95")
            xs.append(g_i - 0.4 + width * (m_i + 0.5))
            ys.append(100 * r["acc"])
            es.append(0.0 if ci is None or (isinstance(ci, float) and math.isnan(ci)) else 100 * ci)
        ax.bar(xs, ys, width=width, yerr=es, capsize=3, label=m)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{d}\n{w}-way {s}-shot" for d, w, s in groups], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from ..utils import save_figure
    return Path(save_figure(fig, path))
