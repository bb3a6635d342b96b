"""The PNG of an HPO job: trial curves (metric vs epoch, one line per trial) and, for each searched param,
param vs final score. Matplotlib's Agg canvas directly: no display, no pyplot global state."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlhub.errors import ValidationError
from mlhub.plots import save_png

MAX_PARAM_PANELS = 8
MAX_LEGEND = 12


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def plot_trials(curves: Mapping[str, Sequence[tuple[int, float]]], trials: Sequence[Any], metric: str, out: Path,
                title: str, *, log_params: Sequence[str] = (), dpi: int = 100) -> Path:
    """Write the PNG at ``out`` and return its resolved path. ``trials`` carry ``trial_id``, ``params`` and
    ``metrics`` (the last reported); ``log_params`` are drawn on a log axis (loguniform dimensions)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out).expanduser()
    if out.is_dir() or not out.parent.is_dir():
        raise ValidationError(f"cannot write the plot to {out}: give a file name in an existing folder")
    scored = [(t, _number((t.metrics or {}).get(metric))) for t in trials]
    scored = [(t, v) for t, v in scored if v is not None]
    if not scored and not any(curves.values()):
        raise ValidationError(f"nothing to plot: no trial reported {metric!r} yet")
    params = sorted({k for t, _ in scored for k in (t.params or {})})[:MAX_PARAM_PANELS]
    panels = 1 + len(params)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    ax = axes[0]
    for i, (trial_id, points) in enumerate(curves.items()):
        pts = sorted((s, v) for s, v in points if _number(v) is not None)
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o" if len(pts) < 2 else None, markersize=3,
                    linewidth=1.2, label=trial_id if i < MAX_LEGEND else None)
    ax.set(title=f"{metric} per epoch, one line per trial", xlabel="epoch", ylabel=metric)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="x-small", ncols=2)
    for ax, key in zip(axes[1:], params, strict=False):
        pairs = [((t.params or {}).get(key), v) for t, v in scored if key in (t.params or {})]
        xs = [_number(x) for x, _ in pairs]
        if all(x is not None for x in xs):
            ax.scatter(xs, [v for _, v in pairs], s=22, alpha=0.8)
            if key in log_params and all(x > 0 for x in xs):
                ax.set_xscale("log")
        else:  # categorical: one column per value
            labels = sorted({str(x) for x, _ in pairs})
            ax.scatter([labels.index(str(x)) for x, _ in pairs], [v for _, v in pairs], s=22, alpha=0.8)
            ax.set_xticks(range(len(labels)), labels, fontsize="small")
        ax.set(title=f"{key} vs {metric}", xlabel=key, ylabel=metric)
        ax.grid(alpha=0.3)
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return save_png(fig, out, dpi)
