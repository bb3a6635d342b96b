"""A/B statistics: the classic tests agree with scipy, intervals cover, and the sequential design keeps false
winners at or under alpha when an A/A experiment is looked at 100 times (while a naive test does not)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mlhub.domain.abstats import Arm, Design, analyze, classic_test, compare, msprt_p_value, variant_stats


def test_welch_and_two_proportion_tests_agree_with_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 200), rng.normal(0.3, 2, 150)
    test, t, p, lo, hi = classic_test(Arm.of("a", a), Arm.of("b", b), "mean")
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert test == "Welch's t-test"
    assert t == pytest.approx(ref.statistic, rel=1e-9) and p == pytest.approx(ref.pvalue, rel=1e-9)
    assert lo < b.mean() - a.mean() < hi
    x, y = [1.0] * 30 + [0.0] * 70, [1.0] * 45 + [0.0] * 55
    test, z, p, lo, hi = classic_test(Arm.of("x", x), Arm.of("y", y), "rate")
    pooled = 75 / 200
    z_ref = 0.15 / np.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert test == "two-proportion z-test"
    assert z == pytest.approx(z_ref) and p == pytest.approx(2 * stats.norm.sf(z_ref), rel=1e-9)
    assert lo < 0.15 < hi


def test_variant_intervals_wilson_for_rates_t_for_means():
    s = variant_stats(Arm.of("a", [1.0] * 30 + [0.0] * 70), "rate")
    assert (s.n, s.mean) == (100, 0.3) and s.ci_low == pytest.approx(0.2189, abs=1e-3)
    assert s.ci_high == pytest.approx(0.3958, abs=1e-3)
    values = np.arange(10, dtype=float)
    m = variant_stats(Arm.of("m", values), "mean")
    ref = stats.t.interval(0.95, 9, loc=values.mean(), scale=stats.sem(values))
    assert (m.ci_low, m.ci_high) == pytest.approx(ref)
    empty = variant_stats(Arm("e"), "mean")
    assert (empty.n, empty.mean, empty.ci_low) == (0, None, None)
    assert Arm.of("a", [1, 2]).add(1, 3.0, 9.0) == Arm.of("a", [1, 2, 3])


def _arms_stream(kind: str, rng, n: int, effect: float):
    if kind == "rate":
        return (rng.random(n) < 0.2).astype(float), (rng.random(n) < 0.2 + effect).astype(float)
    return rng.normal(0, 1, n), rng.normal(effect, 1, n)


def _share_of_seeds_with_a_winner(kind: str, design: Design, *, seeds: int = 200, looks: int = 100,
                                  batch: int = 20, effect: float = 0.0) -> float:
    """Run each seed's experiment, peek after every batch of outcomes (``looks`` times), and count the seeds in
    which ``analyze`` ever named a winner (once named, a winner is kept: the service records the first one)."""
    declared = 0
    for seed in range(seeds):
        a, b = _arms_stream(kind, np.random.default_rng(seed), looks * batch, effect)
        control, treatment = Arm("a"), Arm("b")
        for k in range(looks):
            ca, cb = a[k * batch:(k + 1) * batch], b[k * batch:(k + 1) * batch]
            control = control.add(len(ca), float(ca.sum()), float((ca * ca).sum()))
            treatment = treatment.add(len(cb), float(cb.sum()), float((cb * cb).sum()))
            if analyze([control, treatment], kind, design).winner is not None:
                declared += 1
                break
    return declared / seeds


@pytest.mark.parametrize("kind", ["rate", "mean"])
def test_an_aa_experiment_checked_100_times_declares_a_winner_in_at_most_5_percent_of_seeds(kind):
    assert _share_of_seeds_with_a_winner(kind, Design()) <= 0.05


def test_the_same_peeking_with_the_classic_test_would_declare_false_winners_far_more_often():
    # the protection matters: deciding on the classic p-value at every look (a "fixed" design whose sample size
    # is reached at once) names a winner in many A/A experiments
    naive = Design(kind="fixed", sample_size=2)
    assert _share_of_seeds_with_a_winner("rate", naive, seeds=100) > 0.15


@pytest.mark.parametrize("kind", ["rate", "mean"])
def test_a_real_difference_is_detected(kind):
    effect = 0.05 if kind == "rate" else 0.2
    assert _share_of_seeds_with_a_winner(kind, Design(), seeds=30, effect=effect) >= 0.9
    rng = np.random.default_rng(7)
    a, b = _arms_stream(kind, rng, 2000, effect)
    result = analyze([Arm.of("control", a), Arm.of("treatment", b)], kind)
    assert result.winner == "treatment" and "winner: treatment" in result.verdict
    lower = analyze([Arm.of("control", a), Arm.of("treatment", b)], kind, Design(higher_is_better=False))
    assert lower.winner == "control"


def test_fixed_design_waits_for_its_sample_size_then_decides_once():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 400), rng.normal(0.5, 1, 400)
    design = Design(kind="fixed", sample_size=300)
    early = analyze([Arm.of("c", a[:200]), Arm.of("t", b[:200])], "mean", design)
    assert early.winner is None and "collecting: 200/300" in early.verdict
    assert early.comparisons[0].p_value < 0.05 and early.comparisons[0].decision_p is None
    done = analyze([Arm.of("c", a[:300]), Arm.of("t", b[:300])], "mean", design)
    assert done.winner == "t" and done.comparisons[0].ready


def test_three_variants_are_each_compared_with_the_control_at_a_bonferroni_level():
    rng = np.random.default_rng(11)
    arms = [Arm.of("c", rng.normal(0, 1, 3000)), Arm.of("same", rng.normal(0, 1, 3000)),
            Arm.of("better", rng.normal(0.3, 1, 3000))]
    result = analyze(arms, "mean")
    assert [c.alpha for c in result.comparisons] == [0.025, 0.025]
    assert result.winner == "better" and not result.comparisons[0].significant


def test_degenerate_inputs_give_no_winner_and_clear_errors():
    assert msprt_p_value(Arm.of("a", [1.0] * 50), Arm.of("b", [1.0] * 50), "rate") == 1.0
    assert msprt_p_value(Arm.of("a", [1.0]), Arm.of("b", [0.0, 1.0]), "rate") is None
    assert analyze([Arm("a"), Arm("b")], "rate").winner is None
    assert compare(Arm.of("a", [0.0] * 40), Arm.of("b", [0.0] * 40), "rate", Design()).significant is False
    with pytest.raises(ValueError, match="metric kind"):
        analyze([Arm("a"), Arm("b")], "median")
    with pytest.raises(ValueError, match="at least two"):
        analyze([Arm("a")], "rate")
    with pytest.raises(ValueError, match="sample size"):
        Design(kind="fixed")
    with pytest.raises(ValueError, match="alpha"):
        Design(alpha=0.7)
    assert Design.from_doc(Design(kind="fixed", sample_size=50).to_doc()) == Design(kind="fixed", sample_size=50)
