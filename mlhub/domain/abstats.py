"""Statistics of A/B experiments: per-variant summaries, confidence intervals, significance tests, and a
decision rule that stays honest when somebody looks at the numbers again and again (peeking).

Every variant is summarised by three sufficient statistics of its outcomes, ``n``, ``total`` (sum) and
``total_sq`` (sum of squares), so the database aggregates and this module only does arithmetic.

Two designs protect against peeking:

- ``sequential`` (the default): a mixture sequential probability ratio test (mSPRT, Johari et al., "Always
  valid inference", 2017). The difference of means ``d`` (treatment - control) is asymptotically normal with
  variance ``se^2``; mixing the likelihood ratio over a normal prior ``N(0, tau^2)`` on the true difference gives

      L = sqrt(se^2 / (se^2 + tau^2)) * exp(d^2 tau^2 / (2 se^2 (se^2 + tau^2)))

  and ``p = min(1, 1 / L)`` is an always-valid p-value: the chance that it EVER drops below ``alpha`` under the
  null is at most ``alpha``, however often it is checked. ``tau`` is ``mixture_sd`` standard deviations of one
  observation (pooled), so one default works for rates and for metrics on any scale.
- ``fixed``: a sample size per variant declared up front; the classic test (two-proportion z-test for rates,
  Welch's t-test for means) decides once every compared variant has that many outcomes, and never before.

The classic test's p-value is always reported too (it is what people expect to read), but with the sequential
design it is informational only; the decision uses the always-valid p-value. With more than two live variants
each one is compared with the control (the first variant) at ``alpha / comparisons`` (Bonferroni).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

MetricKind = Literal["rate", "mean"]
DesignKind = Literal["sequential", "fixed"]
METRIC_KINDS: tuple[str, ...] = ("rate", "mean")

__all__ = ["Analysis", "Arm", "Comparison", "Design", "VariantStats", "analyze", "classic_test", "compare",
           "msprt_p_value", "variant_stats"]


@dataclass(frozen=True)
class Design:
    """How winners are declared. ``sample_size`` (outcomes per variant) is required for ``fixed``."""

    kind: DesignKind = "sequential"
    alpha: float = 0.05
    sample_size: int | None = None
    mixture_sd: float = 0.1
    min_samples: int = 30
    higher_is_better: bool = True
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.kind not in ("sequential", "fixed"):
            raise ValueError(f"design must be 'sequential' or 'fixed', got {self.kind!r}")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be between 0 and 0.5, got {self.alpha}")
        if self.kind == "fixed" and (self.sample_size is None or self.sample_size < 2):
            raise ValueError("a fixed design needs a sample size of at least 2 outcomes per variant")
        if self.sample_size is not None and (isinstance(self.sample_size, bool) or self.sample_size < 2):
            raise ValueError(f"sample size must be an integer >= 2, got {self.sample_size!r}")
        if not 0 < self.mixture_sd <= 10:
            raise ValueError(f"mixture_sd must be in (0, 10], got {self.mixture_sd}")
        if self.min_samples < 2:
            raise ValueError(f"min_samples must be at least 2, got {self.min_samples}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0.5 and 1, got {self.confidence}")

    def to_doc(self) -> dict:
        return {"kind": self.kind, "alpha": self.alpha, "sample_size": self.sample_size,
                "mixture_sd": self.mixture_sd, "min_samples": self.min_samples,
                "higher_is_better": self.higher_is_better, "confidence": self.confidence}

    @classmethod
    def from_doc(cls, doc: dict | None) -> Design:
        doc = dict(doc or {})
        return cls(**{k: doc[k] for k in ("kind", "alpha", "sample_size", "mixture_sd", "min_samples",
                                          "higher_is_better", "confidence") if k in doc})


@dataclass(frozen=True)
class Arm:
    """The outcomes of one variant as sufficient statistics."""

    name: str
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    @classmethod
    def of(cls, name: str, values: Sequence[float]) -> Arm:
        return cls(name, len(values), float(sum(values)), float(sum(v * v for v in values)))

    def add(self, n: int, total: float, total_sq: float) -> Arm:
        return Arm(self.name, self.n + n, self.total + total, self.total_sq + total_sq)

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float | None:
        """The unbiased sample variance (None below two outcomes); never negative."""
        if self.n < 2:
            return None
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))


@dataclass(frozen=True)
class VariantStats:
    name: str
    n: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class Comparison:
    """A treatment against the control."""

    control: str
    treatment: str
    test: str                   # "two-proportion z-test" | "Welch's t-test"
    difference: float | None    # treatment mean - control mean
    ci_low: float | None
    ci_high: float | None
    statistic: float | None     # z or t
    p_value: float | None       # the classic test's (valid only at a fixed, pre-declared sample size)
    decision_p: float | None    # what the design decides on: always-valid (sequential) or classic (fixed)
    alpha: float                # the level this comparison is decided at (Bonferroni-adjusted)
    significant: bool
    ready: bool                 # enough outcomes for the design to decide
    note: str = ""


@dataclass(frozen=True)
class Analysis:
    metric_kind: str
    design: Design
    variants: list[VariantStats]
    comparisons: list[Comparison]
    winner: str | None
    verdict: str
    extra: dict = field(default_factory=dict)


# --- normal and t distributions ------------------------------------------------------------------------


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _norm_ppf(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def _t_sf(t: float, df: float) -> float:
    if df > 1e6:
        return _norm_sf(t)
    from scipy.special import stdtr  # the ufunc: ~50x faster than scipy.stats.t per call

    return float(stdtr(df, -t))


def _t_ppf(p: float, df: float) -> float:
    if df > 1e6:
        return _norm_ppf(p)
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


# --- per variant ---------------------------------------------------------------------------------------


def variant_stats(arm: Arm, kind: MetricKind, confidence: float = 0.95) -> VariantStats:
    """Count, mean and a confidence interval: Wilson's for rates, Student's t for means."""
    _check_kind(kind)
    if arm.n == 0:
        return VariantStats(arm.name, 0, None, None, None)
    mean = arm.mean
    if kind == "rate":
        z = _norm_ppf(0.5 + confidence / 2)
        n, p = arm.n, min(1.0, max(0.0, mean))
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return VariantStats(arm.name, n, mean, max(0.0, centre - half), min(1.0, centre + half))
    var = arm.variance
    if var is None:
        return VariantStats(arm.name, arm.n, mean, None, None)
    half = _t_ppf(0.5 + confidence / 2, arm.n - 1) * math.sqrt(var / arm.n)
    return VariantStats(arm.name, arm.n, mean, mean - half, mean + half)


# --- two variants --------------------------------------------------------------------------------------


def _variances(control: Arm, treatment: Arm, kind: MetricKind) -> tuple[float, float] | None:
    """Per-observation variances of each arm (None when an arm has under two outcomes)."""
    if control.n < 2 or treatment.n < 2:
        return None
    if kind == "rate":
        pc, pt = control.mean, treatment.mean
        return pc * (1 - pc), pt * (1 - pt)
    return control.variance, treatment.variance


def classic_test(control: Arm, treatment: Arm, kind: MetricKind,
                 confidence: float = 0.95) -> tuple[str, float | None, float | None, float | None, float | None]:
    """``(test, statistic, two-sided p, ci_low, ci_high)`` of treatment - control: the two-proportion z-test
    (pooled standard error for the test, unpooled for the interval) for rates, Welch's t-test for means."""
    _check_kind(kind)
    if kind == "rate":
        name = "two-proportion z-test"
        if control.n < 2 or treatment.n < 2:
            return name, None, None, None, None
        pc, pt = control.mean, treatment.mean
        diff = pt - pc
        pooled = (control.total + treatment.total) / (control.n + treatment.n)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
        se = math.sqrt(pc * (1 - pc) / control.n + pt * (1 - pt) / treatment.n)
        z_ci = _norm_ppf(0.5 + confidence / 2)
        if se0 == 0:
            return name, None, 1.0, diff - z_ci * se, diff + z_ci * se
        z = diff / se0
        return name, z, min(1.0, 2 * _norm_sf(abs(z))), diff - z_ci * se, diff + z_ci * se
    name = "Welch's t-test"
    if control.n < 2 or treatment.n < 2:
        return name, None, None, None, None
    vc, vt = control.variance / control.n, treatment.variance / treatment.n
    diff = treatment.mean - control.mean
    se2 = vc + vt
    if se2 == 0:
        return name, None, 1.0 if diff == 0 else 0.0, diff, diff
    df = se2 * se2 / (vc * vc / (control.n - 1) + vt * vt / (treatment.n - 1))
    t = diff / math.sqrt(se2)
    half = _t_ppf(0.5 + confidence / 2, df) * math.sqrt(se2)
    return name, t, min(1.0, 2 * _t_sf(abs(t), df)), diff - half, diff + half


def msprt_p_value(control: Arm, treatment: Arm, kind: MetricKind, mixture_sd: float = 0.1) -> float | None:
    """The always-valid p-value of "no difference" after the outcomes so far (see the module's docstring)."""
    variances = _variances(control, treatment, kind)
    if variances is None:
        return None
    vc, vt = variances
    se2 = vc / control.n + vt / treatment.n
    pooled_sd = math.sqrt((vc + vt) / 2)
    if se2 <= 0 or pooled_sd <= 0:
        return 1.0
    tau2 = (mixture_sd * pooled_sd) ** 2
    d = treatment.mean - control.mean
    log_l = 0.5 * math.log(se2 / (se2 + tau2)) + d * d * tau2 / (2 * se2 * (se2 + tau2))
    return 1.0 if log_l <= 0 else math.exp(-log_l)


def compare(control: Arm, treatment: Arm, kind: MetricKind, design: Design, *, comparisons: int = 1) -> Comparison:
    """Treatment against control under ``design``, at ``alpha / comparisons``."""
    _check_kind(kind)
    alpha = design.alpha / max(1, comparisons)
    test, stat, p, lo, hi = classic_test(control, treatment, kind, 1 - alpha if comparisons > 1 else
                                         design.confidence)
    diff = None if control.n == 0 or treatment.n == 0 else treatment.mean - control.mean
    fewest = min(control.n, treatment.n)
    if design.kind == "fixed":
        target = design.sample_size or 0
        ready = fewest >= target
        decision_p = p if ready else None
        note = "" if ready else f"collecting: {fewest}/{target} outcomes per variant before the test decides"
    else:
        ready = fewest >= design.min_samples
        decision_p = msprt_p_value(control, treatment, kind, design.mixture_sd) if ready else None
        note = "" if ready else f"collecting: {fewest}/{design.min_samples} outcomes per variant before testing"
    significant = bool(ready and decision_p is not None and decision_p < alpha and diff is not None and diff != 0)
    return Comparison(control.name, treatment.name, test, diff, lo, hi, stat, p, decision_p, alpha, significant,
                      ready, note)


# --- the whole experiment ------------------------------------------------------------------------------


def analyze(arms: Sequence[Arm], kind: MetricKind, design: Design | None = None) -> Analysis:
    """Every variant's summary, each treatment against the control (``arms[0]``), and the winner if clear.

    A winner is clear when a treatment is significantly better than the control (the best such one when
    several are), or when the control is significantly better than every treatment.
    """
    design = design or Design()
    _check_kind(kind)
    if len(arms) < 2:
        raise ValueError("an analysis needs at least two variants")
    control, treatments = arms[0], list(arms[1:])
    k = len(treatments)
    stats = [variant_stats(a, kind, design.confidence) for a in arms]
    comps = [compare(control, t, kind, design, comparisons=k) for t in treatments]
    sign = 1.0 if design.higher_is_better else -1.0
    better = [(sign * c.difference, c.treatment) for c in comps if c.significant and sign * c.difference > 0]
    worse = [c for c in comps if c.significant and sign * c.difference < 0]
    if better:
        winner = max(better)[1]
        verdict = f"winner: {winner} (significantly better than {control.name})"
    elif len(worse) == k:
        winner = control.name
        verdict = f"winner: {control.name} (every other variant is significantly worse)"
    else:
        winner = None
        pending = [c.note for c in comps if c.note]
        verdict = "no clear winner yet" + (f" ({pending[0]})" if pending else "")
    return Analysis(kind, design, stats, comps, winner, verdict)


def _check_kind(kind: str) -> None:
    if kind not in METRIC_KINDS:
        raise ValueError(f"metric kind must be 'rate' or 'mean', got {kind!r}")
