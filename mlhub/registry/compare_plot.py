"""A PNG of a version comparison: the metrics the versions share as grouped bars (one panel for metrics in
[0, 1], one for the rest, whose scales differ), and beside them each version's newest confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlhub.errors import ValidationError
from mlhub.plots import _figure, _target, save_png
from mlhub.registry.maintenance import Comparison

MAX_BARS = 12


def plot_comparison(result: Comparison, out: Path, *, dpi: int = 100) -> Path:
    target = _target(out)
    names = [f"{v.model}/{v.version}" for v in result.versions]
    shared = [k for k, vals in result.rows.items() if all(v is not None for v in vals)
              and not k.endswith("n_samples") and ".class." not in k and not k.startswith("class.")]
    unit = [k for k in shared if all(0.0 <= v <= 1.0 for v in result.rows[k])][:MAX_BARS]
    other = [k for k in shared if k not in unit][:MAX_BARS]
    matrices = [(n, c) for n, c in zip(names, result.confusion, strict=True) if c is not None]
    panels = [p for p in (unit, other) if p]
    if not panels and not matrices:
        raise ValidationError("these versions share no metric and have no confusion matrix: nothing to plot")
    fig, axes = _figure(len(panels) + len(matrices), width=5.5, height=4.2)
    for ax, keys in zip(axes, panels, strict=False):
        x = np.arange(len(keys))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            ax.bar(x + i * width - 0.4 + width / 2, [result.rows[k][i] for k in keys], width, label=name)
        ax.set_xticks(x, keys, rotation=30, ha="right", fontsize="small")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
        ax.set_title("metrics in [0, 1]" if keys is unit else "other metrics")
    for ax, (name, cm) in zip(axes[len(panels):], matrices, strict=True):
        m = np.asarray(cm["matrix"])
        ax.imshow(m, cmap="Blues")
        labels = [str(v) for v in cm.get("labels") or range(len(m))]
        ax.set_xticks(range(len(labels)), labels, fontsize="small")
        ax.set_yticks(range(len(labels)), labels, fontsize="small")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name} on {cm['dataset']}")
        if len(m) <= 20:
            for i in range(len(m)):
                for j in range(len(m)):
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] > m.max() / 2 else "black")
    return save_png(fig, target, dpi)
