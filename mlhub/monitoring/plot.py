"""The PNG of a drift report: per feature, the reference distribution next to the recent one; drifted features
titled in red."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mlhub.errors import ValidationError
from mlhub.plots import _target, save_png

COLUMNS = 3


def render_drift_png(title: str, features: dict[str, dict[str, Any]], *, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (what the drift check stores as an artifact)."""
    import io

    fig = _figure(title, features)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot_drift(title: str, features: dict[str, dict[str, Any]], out: Path, *, dpi: int = 90) -> Path:
    """Write the figure to ``out``; return its resolved path."""
    target = _target(out)
    return save_png(_figure(title, features), target, dpi)


def _figure(title: str, features: dict[str, dict[str, Any]]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [(n, f) for n, f in features.items() if (f.get("bins") or {}).get("reference")]
    if not shown:
        raise ValidationError("nothing to plot: the report compared no feature with a reference")
    cols = min(COLUMNS, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, feat) in zip(axes, shown, strict=False):
        _panel(ax, name, feat)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def _panel(ax, name: str, feat: dict[str, Any]) -> None:
    bins = feat["bins"]
    ref, cur = bins["reference"], bins["current"]
    if "edges" in bins:
        edges = bins["edges"]
        lefts, widths = edges[:-1], [b - a for a, b in zip(edges, edges[1:], strict=False)]
        ax.bar(lefts, ref, width=widths, align="edge", alpha=0.45, label="reference", color="tab:blue")
        ax.step([*lefts, edges[-1]], [*cur, cur[-1]], where="post", label="recent", color="tab:orange")
        stats = f"PSI {feat.get('psi') or 0:.3f}  KS D {feat.get('ks_d') or 0:.3f} p {feat.get('ks_p') or 0:.2g}"
    else:
        labels = [str(v) for v in bins["values"]]
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], ref, width=0.4, label="reference", color="tab:blue", alpha=0.6)
        ax.bar([x + 0.2 for x in xs], cur, width=0.4, label="recent", color="tab:orange", alpha=0.8)
        ax.set_xticks(list(xs), labels, fontsize="small")
        stats = f"PSI {feat.get('psi') or 0:.3f}  chi2 p {feat.get('chi2_p') or 0:.2g}"
    drifted = bool(feat.get("drifted"))
    ax.set_title(f"{name}{'  DRIFT' if drifted else ''}\n{stats}", color="red" if drifted else "black",
                 fontsize="medium")
    ax.set_ylabel("share of rows")
    ax.legend(fontsize="x-small")
    ax.grid(alpha=0.3)
    if drifted:
        for spine in ax.spines.values():
            spine.set_edgecolor("red")
            spine.set_linewidth(2)
