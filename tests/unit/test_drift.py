"""Drift statistics (mlhub.domain.drift) against scipy and known values; no drift on a sample of the training
distribution, drift on a shifted one; thresholds validated."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from mlhub.domain.drift import (
    Thresholds,
    chi2_homogeneity,
    detect,
    feature_drift,
    ks_p_value,
    ks_statistic,
    psi,
    reference_cdf,
)
from mlhub.errors import ValidationError
from mlhub.training.schema import reference_stats


def test_psi_matches_the_textbook_formula_and_is_zero_for_equal_bins():
    ref, cur = [0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]
    expected = sum((c - r) * math.log(c / r) for r, c in zip(ref, cur, strict=True))
    assert psi(ref, cur) == pytest.approx(expected) == pytest.approx(0.2282, abs=1e-4)
    assert psi(ref, ref) == 0.0
    # an empty bin is floored, not a division by zero
    assert psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]) == pytest.approx(
        (0.1 - 0.5) * 0 + 2 * (0.4 - 0.5) * math.log(0.8) + (0.2 - 1e-4) * math.log(0.2 / 1e-4))
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1.0])


def test_ks_statistic_and_p_value_equal_scipy():
    rng = np.random.default_rng(1)
    sample = rng.normal(0.3, 1.0, 400)
    ours = ks_statistic(sample.tolist(), lambda x: float(sps.norm.cdf(x)))
    theirs = sps.kstest(sample, "norm")
    assert ours == pytest.approx(theirs.statistic, abs=1e-12)
    assert ks_p_value(ours, 400) == pytest.approx(theirs.pvalue, rel=1e-6)
    # two-sample asymptotic p-value at the effective size, as ks_2samp(method="asymp") computes it
    other = rng.normal(0.0, 1.0, 1000)
    two = sps.ks_2samp(sample, other, method="asymp")
    assert ks_p_value(two.statistic, 400, 1000) == pytest.approx(two.pvalue, rel=1e-6)


def test_chi2_homogeneity_equals_scipy_contingency_without_correction():
    ref, cur = [50, 30, 20, 0], [20, 30, 45, 5]
    stat, p, dof = chi2_homogeneity(ref, cur)
    expected = sps.chi2_contingency(np.array([ref, cur]), correction=False)
    assert (stat, p, dof) == pytest.approx((expected.statistic, expected.pvalue, expected.dof))
    assert chi2_homogeneity([10, 0], [7, 0]) == (0.0, 1.0, 0)  # one non-empty category: nothing to test


def test_the_rebuilt_reference_cdf_is_close_to_the_true_one():
    rng = np.random.default_rng(2)
    train = rng.normal(5.0, 2.0, 20_000)
    st = reference_stats(["x"], train.reshape(-1, 1))["features"]["x"]
    xs, ys = reference_cdf(st)
    assert ys[0] == 0.0 and ys[-1] == 1.0 and all(b >= a for a, b in zip(ys, ys[1:], strict=False))
    grid = np.linspace(-2, 12, 200)
    from mlhub.domain.drift import _cdf_at

    err = max(abs(_cdf_at(xs, ys, float(g)) - sps.norm.cdf(g, 5.0, 2.0)) for g in grid)
    assert err < 0.02, err  # the documented approximation: histogram edges + quantiles, linear in between
    # and the KS statistic of a fresh sample against it is close to the exact one
    fresh = rng.normal(5.0, 2.0, 2_000)
    approx = ks_statistic(fresh.tolist(), lambda x: _cdf_at(xs, ys, x))
    exact = sps.kstest(fresh, "norm", args=(5.0, 2.0)).statistic
    assert abs(approx - exact) < 0.02


def _reference(rng, n=5_000):
    x = np.column_stack([rng.normal(0.0, 1.0, n), rng.exponential(2.0, n), rng.integers(0, 4, n)])
    return reference_stats(["a", "b", "c"], x)


@pytest.mark.parametrize("seed", [3, 4, 5, 6, 7])
def test_a_sample_of_the_training_distribution_does_not_drift(seed):
    rng = np.random.default_rng(seed)
    ref = _reference(rng)
    rows = np.column_stack([rng.normal(0.0, 1.0, 1_000), rng.exponential(2.0, 1_000), rng.integers(0, 4, 1_000)])
    result = detect(ref, ["a", "b", "c"], rows.tolist())
    assert not result.drifted, [f.to_dict() for f in result.features]
    kinds = [f.kind for f in result.features]
    assert kinds == ["numeric", "numeric", "categorical"]
    assert all(f.psi < 0.05 for f in result.features)


def test_a_shifted_sample_drifts_on_the_shifted_features_only():
    rng = np.random.default_rng(8)
    ref = _reference(rng)
    n = 1_000
    rows = np.column_stack([rng.normal(0.8, 1.0, n), rng.exponential(2.0, n), rng.choice([0, 1, 2, 3, 7], n,
                                                                                          p=[.1, .1, .1, .1, .6])])
    result = detect(ref, ["a", "b", "c"], rows.tolist())
    by = {f.name: f for f in result.features}
    assert result.drifted and result.drifted_features == ["a", "c"]
    assert by["a"].psi > 0.2 and by["a"].ks_p < 1e-10 and by["a"].ks_d > 0.2
    assert "other" in by["c"].bins["values"] and by["c"].chi2_p < 1e-10
    assert not by["b"].drifted


def test_a_small_shift_in_a_large_sample_needs_the_effect_floor():
    rng = np.random.default_rng(9)
    train = rng.normal(0, 1, 20_000)
    st = reference_stats(["x"], train.reshape(-1, 1))["features"]["x"]
    sample = rng.normal(0.06, 1, 20_000).tolist()
    default = feature_drift("x", st, sample)
    assert default.ks_p < 0.01 and default.ks_d < 0.05 and not default.drifted  # significant, too small
    strict = feature_drift("x", st, sample, Thresholds(min_effect=0.0))
    assert strict.drifted and strict.reasons[0].startswith("KS")


def test_too_few_rows_are_reported_but_never_called_drifted():
    rng = np.random.default_rng(10)
    ref = _reference(rng)
    rows = [[9.0, 50.0, 3] for _ in range(10)]
    result = detect(ref, ["a", "b", "c"], rows)
    assert not result.drifted and not result.enough_data and result.sample_size == 10
    assert all("not judged" in f.reasons[-1] for f in result.features)


def test_missing_values_and_missing_reference_are_reported():
    rng = np.random.default_rng(11)
    ref = _reference(rng)
    rows = [[float("nan"), None, 1] if i % 2 else [0.1, 1.0, 1] for i in range(200)]
    result = detect(ref, ["a", "b", "zz"], rows)
    a, b, zz = result.features
    assert (a.n, a.missing, b.n, b.missing) == (100, 100, 100, 100)
    assert zz.kind == "skipped" and zz.reasons == ["no reference statistics"]


def test_thresholds_from_json_are_checked():
    assert Thresholds.from_dict({"psi": 0.3, "min_samples": "50"}) == Thresholds(psi=0.3, min_samples=50)
    for bad in ({"psi": -1}, {"p_value": 2}, {"bogus": 1}, {"psi": "high"}, {"min_samples": 0}):
        with pytest.raises(ValidationError):
            Thresholds.from_dict(bad)
