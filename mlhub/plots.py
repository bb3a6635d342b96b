"""PNG plots of step series (training curves, HPO trials): pure functions of the data, no store access.

A series is a list of ``(step, value)`` points; a plot takes ``{label: series}`` and a path, and returns the
resolved path of the PNG it wrote. Matplotlib's Agg canvas is used directly, so plotting never needs a display
and never touches pyplot's global state (safe in threads, workers and tests)::

    plot_curves({"loss": [(0, 0.9), (1, 0.5)]}, Path("loss.png"), "run 3")
    plot_loss_and_metrics({"loss": [...], "val_loss": [...], "val_accuracy": [...]}, Path("run-3.png"), "run 3")
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mlhub.errors import ValidationError

Series = Sequence[tuple[int | float, float]]

__all__ = ["is_loss_key", "plot_curves", "plot_loss_and_metrics", "split_loss_and_metrics"]


def is_loss_key(key: str) -> bool:
    """``loss``, ``val_loss``, ``train_loss``, ``loss/val`` ...: the series drawn on the loss panel."""
    k = key.lower()
    return k == "loss" or k.endswith(("_loss", "/loss", ".loss")) or k.startswith(("loss_", "loss/", "loss."))


def split_loss_and_metrics(keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """Keys in their given order, split into (loss series, other metrics)."""
    keys = list(keys)
    return [k for k in keys if is_loss_key(k)], [k for k in keys if not is_loss_key(k)]


def _clean(series: Mapping[str, Series]) -> dict[str, tuple[list[float], list[float]]]:
    """Non-empty series as sorted (x, y) lists, non-finite points dropped; ValidationError if nothing is left."""
    if not isinstance(series, Mapping):
        raise ValidationError(f"series must be a mapping of label to (step, value) points, got {type(series).__name__}")
    out: dict[str, tuple[list[float], list[float]]] = {}
    for label, points in series.items():
        try:
            pts = sorted((float(s), float(v)) for s, v in points if math.isfinite(float(v)))
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"series {label!r}: points must be (step, number) pairs ({exc})") from exc
        if pts:
            out[str(label)] = ([s for s, _ in pts], [v for _, v in pts])
    if not out:
        names = ", ".join(map(str, series)) or "none given"
        raise ValidationError(f"nothing to plot: no points in any series ({names})")
    return out


def _target(out: Path) -> Path:
    out = Path(out).expanduser()
    if out.is_dir():
        raise ValidationError(f"cannot write the plot to {out}: it is a folder, give a file name")
    if not out.parent.is_dir():
        raise ValidationError(f"cannot write the plot to {out}: folder {out.parent} does not exist")
    return out


def _figure(panels: int, width: float = 6.0, height: float = 3.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def _draw(ax, data: dict[str, tuple[list[float], list[float]]], *, title: str | None, xlabel: str,
          ylabel: str | None) -> None:
    for label, (xs, ys) in data.items():
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 2 else None, markersize=4)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def save_png(fig, out: Path, dpi: int) -> Path:
    """Lay out and write ``fig`` as a PNG; a place that cannot be written is a ValidationError."""
    fig.tight_layout()
    try:
        fig.savefig(out, format="png", dpi=dpi)
    except OSError as exc:
        raise ValidationError(f"cannot write the plot to {out}: {exc.strerror or exc}") from exc
    return out.resolve()


def plot_curves(series: Mapping[str, Series], out: Path, title: str, *, xlabel: str = "epoch",
                ylabel: str | None = None, dpi: int = 100) -> Path:
    """All series on one panel; writes a PNG at ``out`` and returns its resolved path."""
    data = _clean(series)
    target = _target(out)
    fig, (ax,) = _figure(1)
    _draw(ax, data, title=title, xlabel=xlabel, ylabel=ylabel)
    return save_png(fig, target, dpi)


def plot_loss_and_metrics(series: Mapping[str, Series], out: Path, title: str, *, xlabel: str = "epoch",
                          dpi: int = 100) -> Path:
    """Loss series (see :func:`is_loss_key`) on the left panel, every other metric on the right.

    A run that has only one kind gets one panel. Returns the resolved path of the PNG."""
    data = _clean(series)
    target = _target(out)
    losses, metrics = split_loss_and_metrics(data)
    groups = [(name, keys) for name, keys in (("loss", losses), ("metrics", metrics)) if keys]
    fig, axes = _figure(len(groups))
    for ax, (name, keys) in zip(axes, groups, strict=True):
        _draw(ax, {k: data[k] for k in keys}, title=name, xlabel=xlabel, ylabel=None)
    fig.suptitle(title)
    return save_png(fig, target, dpi)
