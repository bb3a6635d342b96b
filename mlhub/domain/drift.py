"""Data drift: recent model inputs compared, feature by feature, with the training reference.

The reference is what :func:`mlhub.training.schema.reference_stats` captured at training: per feature a
count, quantiles, a histogram ``{edges, counts}`` and, for integral features with at most 20 distinct
values, ``categories {values, counts}``. The raw training rows are not kept, so every test compares the recent
sample with a distribution rebuilt from those statistics:

- numeric features (no ``categories``):
  - PSI (population stability index) over the reference histogram's bins, the outer two bins open-ended
    (values below the training minimum count in the first bin, above the maximum in the last);
    ``PSI = sum((cur - ref) * ln(cur / ref))`` with proportions floored at ``1e-4``.
  - Kolmogorov-Smirnov: the statistic ``D`` is the largest gap between the sample's empirical CDF and the
    reference CDF. **Approximation**: the reference CDF is rebuilt as a piecewise-linear function through the
    histogram's cumulative counts at its edges and the stored quantiles (0.01 ... 0.99), i.e. values are taken
    as spread evenly within each segment. Its error is at most the mass between two neighbouring knots that
    is not spread evenly; for smooth distributions that is well under 0.01 with 10 bins. The p-value treats
    the reference as the sample it was (``count`` rows): the two-sample asymptotic distribution with the
    effective size ``n * m / (n + m)``, as ``scipy.stats.ks_2samp(method="asymp")`` does.
- categorical features: Pearson's chi-squared test of homogeneity on the 2 x K table of reference counts and
  sample counts (values never seen in training are pooled into one ``other`` column), and PSI over the same
  categories.

A feature is drifted when ``PSI > psi``, or when the test's p-value is below ``p_value`` *and* the effect is at
least ``min_effect`` (KS: ``D``; categorical: total variation distance). The effect floor keeps a large sample
from flagging differences too small to matter, or smaller than the error of the rebuilt reference CDF. A check
with fewer than ``min_samples`` usable rows is reported but never called drifted.

Pure Python (scipy only for the two distribution tails); no database, no Ray.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mlhub.errors import ValidationError

__all__ = ["DEFAULT_THRESHOLDS", "DriftResult", "FeatureDrift", "Thresholds", "chi2_homogeneity", "detect",
           "feature_drift", "ks_p_value", "ks_statistic", "psi", "reference_cdf"]

PSI_FLOOR = 1e-4
OTHER = "other"


@dataclass(frozen=True)
class Thresholds:
    """When a feature counts as drifted (see the module docstring)."""

    psi: float = 0.2
    p_value: float = 0.01
    min_effect: float = 0.05
    min_samples: int = 30

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Thresholds:
        """Thresholds from a monitor's JSON; unknown keys or values out of range raise ValidationError."""
        doc = dict(doc or {})
        unknown = set(doc) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValidationError(f"unknown drift threshold(s) {sorted(unknown)}: use psi, p_value, min_effect, "
                                  "min_samples")
        try:
            out = cls(**{k: (int(v) if k == "min_samples" else float(v)) for k, v in doc.items()})
        except (TypeError, ValueError):
            raise ValidationError(f"drift thresholds must be numbers, got {doc}") from None
        problems = []
        if not (math.isfinite(out.psi) and out.psi > 0):
            problems.append("psi must be > 0")
        if not 0 < out.p_value < 1:
            problems.append("p_value must be between 0 and 1")
        if not 0 <= out.min_effect < 1:
            problems.append("min_effect must be in [0, 1)")
        if not 1 <= out.min_samples <= 10_000_000:
            problems.append("min_samples must be between 1 and 10000000")
        if problems:
            raise ValidationError("invalid drift thresholds: " + "; ".join(problems))
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_THRESHOLDS = Thresholds()


@dataclass
class FeatureDrift:
    """One feature's verdict and the numbers behind it (what a drift report stores, JSON-ready)."""

    name: str
    kind: str  # numeric | categorical | skipped
    n: int = 0
    missing: int = 0
    psi: float | None = None
    ks_d: float | None = None
    ks_p: float | None = None
    chi2: float | None = None
    chi2_p: float | None = None
    tv: float | None = None
    mean_ref: float | None = None
    mean_cur: float | None = None
    drifted: bool = False
    reasons: list[str] = field(default_factory=list)
    #: what the plot draws: {"edges": [...]} or {"values": [...]}, with "reference" and "current" proportions
    bins: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftResult:
    features: list[FeatureDrift]
    sample_size: int
    drifted: bool
    enough_data: bool

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]


# --- statistics -------------------------------------------------------------------------------------------


def psi(reference: Sequence[float], current: Sequence[float], floor: float = PSI_FLOOR) -> float:
    """Population stability index of two proportion vectors over the same bins (each floored at ``floor``)."""
    if len(reference) != len(current) or not reference:
        raise ValueError("psi needs two proportion vectors of the same non-zero length")
    total = 0.0
    for r, c in zip(reference, current, strict=True):
        r, c = max(float(r), floor), max(float(c), floor)
        total += (c - r) * math.log(c / r)
    return total


def reference_cdf(stats: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """Knots ``(xs, ys)`` of the piecewise-linear reference CDF rebuilt from a feature's histogram and
    quantiles (see the module docstring); ``None`` when the statistics hold neither."""
    knots: list[tuple[float, float]] = []
    hist = stats.get("histogram") or {}
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    total = float(sum(counts))
    if len(edges) == len(counts) + 1 and total > 0 and all(e is not None for e in edges):
        cum = 0.0
        knots.append((float(edges[0]), 0.0))
        for e, c in zip(edges[1:], counts, strict=True):
            cum += c
            knots.append((float(e), cum / total))
    for q, v in (stats.get("quantiles") or {}).items():
        if v is not None:
            knots.append((float(v), float(q)))
    if stats.get("min") is not None:
        knots.append((float(stats["min"]), 0.0))
    if stats.get("max") is not None:
        knots.append((float(stats["max"]), 1.0))
    if not knots:
        return None
    knots.sort()
    xs, ys, top = [], [], 0.0
    for x, y in knots:
        top = min(1.0, max(top, y))  # a CDF never decreases
        xs.append(x)
        ys.append(top)
    ys[-1] = 1.0
    return xs, ys


def _cdf_at(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    if x < xs[0]:
        return 0.0
    if x >= xs[-1]:
        return 1.0
    i = bisect_right(xs, x) - 1  # xs[i] <= x < xs[i + 1]
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def ks_statistic(sample: Sequence[float], cdf) -> float:
    """``D = sup |F_n(x) - F(x)|`` of a sample against a continuous CDF (as ``scipy.stats.kstest`` computes it)."""
    values = sorted(sample)
    n = len(values)
    if n == 0:
        raise ValueError("ks_statistic needs at least one value")
    d = 0.0
    for i, v in enumerate(values):
        f = cdf(v)
        d = max(d, (i + 1) / n - f, f - i / n)
    return d


def ks_p_value(d: float, n: int, m: int | None = None) -> float:
    """P(D >= d): one-sample exact for a sample of ``n`` against a known CDF; with ``m`` (the reference was a
    sample of ``m`` rows) the two-sample asymptotic tail at the effective size ``n * m / (n + m)``."""
    from scipy.stats import kstwo

    size = n if m is None else max(1, round(n * m / (n + m)))
    return float(min(1.0, max(0.0, kstwo.sf(d, size))))


def chi2_homogeneity(reference_counts: Sequence[float], current_counts: Sequence[float]) -> tuple[float, float, int]:
    """Pearson's chi-squared test that two count vectors over the same categories come from one distribution:
    ``(statistic, p-value, degrees of freedom)``; categories empty on both sides are dropped."""
    from scipy.special import chdtrc

    cols = [(float(r), float(c)) for r, c in zip(reference_counts, current_counts, strict=True) if r + c > 0]
    n_ref, n_cur = sum(r for r, _ in cols), sum(c for _, c in cols)
    dof = len(cols) - 1
    if dof < 1 or n_ref <= 0 or n_cur <= 0:
        return 0.0, 1.0, max(dof, 0)
    total = n_ref + n_cur
    stat = 0.0
    for r, c in cols:
        col = r + c
        for observed, row in ((r, n_ref), (c, n_cur)):
            expected = row * col / total
            stat += (observed - expected) ** 2 / expected
    return stat, float(chdtrc(dof, stat)), dof


# --- per feature ------------------------------------------------------------------------------------------


def _finite(values: Sequence[Any]) -> tuple[list[float], int]:
    out, missing = [], 0
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            missing += 1
            continue
        if math.isfinite(f):
            out.append(f)
        else:
            missing += 1
    return out, missing


def _r(v: float | None, digits: int = 6) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, digits)


def feature_drift(name: str, stats: Mapping[str, Any] | None, values: Sequence[Any],
                  thresholds: Thresholds = DEFAULT_THRESHOLDS) -> FeatureDrift:
    """Compare one feature's recent ``values`` with its reference ``stats``."""
    sample, missing = _finite(values)
    out = FeatureDrift(name=name, kind="skipped", n=len(sample), missing=missing)
    if not stats or not stats.get("count"):
        out.reasons.append("no reference statistics")
        return out
    out.mean_ref = _r(stats.get("mean"))
    out.mean_cur = _r(sum(sample) / len(sample)) if sample else None
    if not sample:
        out.reasons.append("no values in the window")
        out.kind = "categorical" if stats.get("categories") else "numeric"
        return out
    if stats.get("categories"):
        _categorical(out, stats["categories"], sample, thresholds)
    else:
        _numeric(out, stats, sample, thresholds)
    return out


def _numeric(out: FeatureDrift, stats: Mapping[str, Any], sample: list[float], th: Thresholds) -> None:
    out.kind = "numeric"
    hist = stats.get("histogram") or {}
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if len(edges) == len(counts) + 1 and sum(counts) > 0:
        inner = [float(e) for e in edges[1:-1]]
        cur = [0] * len(counts)
        for v in sample:
            cur[bisect_right(inner, v)] += 1
        ref_p = [c / sum(counts) for c in counts]
        cur_p = [c / len(sample) for c in cur]
        out.psi = _r(psi(ref_p, cur_p))
        out.bins = {"edges": [float(e) for e in edges], "reference": ref_p, "current": cur_p}
    knots = reference_cdf(stats)
    if knots is not None:
        xs, ys = knots
        d = ks_statistic(sample, lambda x: _cdf_at(xs, ys, x))
        out.ks_d = _r(d)
        out.ks_p = _r(ks_p_value(d, len(sample), int(stats.get("count") or 0) or None), 12)
    _verdict(out, th, out.ks_p, out.ks_d, "KS")


def _categorical(out: FeatureDrift, cats: Mapping[str, Any], sample: list[float], th: Thresholds) -> None:
    out.kind = "categorical"
    values = [float(v) for v in cats.get("values") or []]
    ref_counts = [float(c) for c in cats.get("counts") or []]
    index = {v: i for i, v in enumerate(values)}
    cur = [0] * len(values)
    other = 0
    for v in sample:
        i = index.get(v)
        if i is None:
            other += 1
        else:
            cur[i] += 1
    labels: list[Any] = [int(v) if v.is_integer() else v for v in values]
    if other:
        labels.append(OTHER)
        ref_counts.append(0.0)
        cur.append(other)
    n_ref = sum(ref_counts)
    ref_p = [c / n_ref for c in ref_counts]
    cur_p = [c / len(sample) for c in cur]
    out.psi = _r(psi(ref_p, cur_p))
    out.tv = _r(0.5 * sum(abs(a - b) for a, b in zip(ref_p, cur_p, strict=True)))
    stat, p, _ = chi2_homogeneity(ref_counts, cur)
    out.chi2, out.chi2_p = _r(stat), _r(p, 12)
    out.bins = {"values": labels, "reference": ref_p, "current": cur_p}
    _verdict(out, th, out.chi2_p, out.tv, "chi2")


def _verdict(out: FeatureDrift, th: Thresholds, p: float | None, effect: float | None, test: str) -> None:
    if out.n < th.min_samples:
        out.reasons.append(f"only {out.n} values (< {th.min_samples}): not judged")
        return
    if out.psi is not None and out.psi > th.psi:
        out.reasons.append(f"PSI {out.psi:.3f} > {th.psi:g}")
    if p is not None and p < th.p_value and (effect or 0.0) >= th.min_effect:
        what = "D" if test == "KS" else "TV"
        out.reasons.append(f"{test} p={p:.2g} < {th.p_value:g} ({what}={effect:.3f})")
    out.drifted = bool(out.reasons)


# --- a whole sample -----------------------------------------------------------------------------------------


def detect(reference: Mapping[str, Any], feature_names: Sequence[str], rows: Sequence[Sequence[Any]],
           thresholds: Thresholds = DEFAULT_THRESHOLDS) -> DriftResult:
    """Drift of every feature: ``reference`` is a version's ``reference_stats``; ``rows`` are recent inputs,
    each a list of values in ``feature_names`` order (rows of another width are ignored)."""
    width = len(feature_names)
    usable = [r for r in rows if isinstance(r, list | tuple) and len(r) == width]
    per_feature = (reference or {}).get("features") or {}
    columns = list(zip(*usable, strict=True)) if usable else [() for _ in feature_names]
    features = [feature_drift(name, per_feature.get(name), columns[j], thresholds)
                for j, name in enumerate(feature_names)]
    enough = len(usable) >= thresholds.min_samples
    return DriftResult(features=features, sample_size=len(usable),
                       drifted=enough and any(f.drifted for f in features), enough_data=enough)
