"""Experiment routing as pure functions: stable hash buckets, weighted choice in proportion, variant specs, and
the canary ramp's advance / hold / complete / rollback decisions."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from mlhub.domain.routing import (
    CanaryHealth,
    CanaryPolicy,
    VariantSpec,
    bucket,
    canary_weights,
    choose,
    decide_canary,
    p99_rank,
    parse_variant,
    validate_variants,
)


def test_buckets_are_stable_across_processes_and_differ_between_experiments():
    here = [bucket(7, f"user-{i}") for i in range(5)]
    code = "from mlhub.domain.routing import bucket; print([bucket(7, f'user-{i}') for i in range(5)])"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert there.strip() == repr(here)
    assert all(0 <= u < 1 for u in here)
    assert bucket(7, "user-0") != bucket(8, "user-0")


def test_choice_follows_the_weights_and_the_same_key_gets_the_same_variant():
    slices = [("control", 0.7), ("treatment", 0.2), ("other", 0.1)]
    counts = Counter(choose(slices, bucket(1, f"k{i}")) for i in range(20_000))
    assert counts["control"] / 20_000 == pytest.approx(0.7, abs=0.015)
    assert counts["treatment"] / 20_000 == pytest.approx(0.2, abs=0.015)
    assert counts["other"] / 20_000 == pytest.approx(0.1, abs=0.015)
    assert {choose(slices, bucket(1, "same")) for _ in range(10)} == {choose(slices, bucket(1, "same"))}
    assert choose([("a", 0.5), ("b", 0.5), ("c", 0.0)], 0.9999999999) == "b"  # rounding never picks a 0 weight
    with pytest.raises(ValueError):
        choose([], 0.5)


def test_variant_specs_parse_and_fill_in_weights():
    assert parse_variant("control=3") == VariantSpec("control", 3)
    assert parse_variant(" treatment=4:0.25 ") == VariantSpec("treatment", 4, 0.25)
    for bad in ("control", "control=x", "control=3:", "control=3:-1", "=3"):
        with pytest.raises(ValueError, match="NAME=VERSION"):
            parse_variant(bad)
    filled = validate_variants([VariantSpec("a", 1), VariantSpec("b", 2, 0.5), VariantSpec("c", 3),
                                VariantSpec("s", 4, shadow=True)])
    assert [(v.name, v.weight, v.shadow) for v in filled] == [("a", 0.25, False), ("b", 0.5, False),
                                                              ("c", 0.25, False), ("s", 0.0, True)]
    # an A/A test (one version twice) is allowed
    assert len(validate_variants([VariantSpec("a", 1), VariantSpec("b", 1)])) == 2


@pytest.mark.parametrize(("specs", "message"), [
    ([VariantSpec("a", 1)], "at least two"),
    ([VariantSpec("a", 1), VariantSpec("a", 2)], "named twice"),
    ([VariantSpec("A b", 1), VariantSpec("c", 2)], "invalid variant name"),
    ([VariantSpec("a", 0), VariantSpec("b", 2)], "positive integer"),
    ([VariantSpec("a", 1, 0.7), VariantSpec("b", 2, 0.7)], "more than 1"),
    ([VariantSpec("a", 1, 0.3), VariantSpec("b", 2, 0.3)], "must sum to 1"),
    ([VariantSpec("a", 1, 1.0), VariantSpec("b", 2)], "no weight left"),
    ([VariantSpec("a", 1, shadow=True), VariantSpec("b", 2, shadow=True)], "live"),
    ([VariantSpec("a", 1), VariantSpec("b", 2, 0.5, shadow=True)], "takes no weight"),
    ([VariantSpec("a", 1, float("nan")), VariantSpec("b", 2)], "between 0 and 1"),
])
def test_bad_variant_sets_are_refused_with_the_reason(specs, message):
    with pytest.raises(ValueError, match=message):
        validate_variants(specs)


def test_canary_weights_only_move_keys_from_stable_to_canary_as_the_share_grows():
    slices = [("stable", 0.9), ("canary", 0.1)]
    assert canary_weights(slices, "canary", 0.25) == [("canary", 0.25), ("stable", 0.75)]
    keys = [f"k{i}" for i in range(5000)]
    before = {k: choose(canary_weights(slices, "canary", 0.05), bucket(3, k)) for k in keys}
    after = {k: choose(canary_weights(slices, "canary", 0.5), bucket(3, k)) for k in keys}
    assert all(after[k] == "canary" for k in keys if before[k] == "canary")
    assert sum(v == "canary" for v in after.values()) / len(keys) == pytest.approx(0.5, abs=0.03)
    three = canary_weights([("a", 0.6), ("b", 0.2), ("c", 0.2)], "c", 0.5)
    assert three == [("c", 0.5), ("a", pytest.approx(0.375)), ("b", pytest.approx(0.125))]
    with pytest.raises(ValueError, match="not a live variant"):
        canary_weights(slices, "ghost", 0.5)


POLICY = CanaryPolicy("canary", steps=(0.05, 0.25, 1.0), step_s=60, max_error_rate=0.05, max_p99_ms=200,
                      min_requests=20)


def test_canary_holds_until_its_step_has_run_long_enough_with_enough_requests_then_advances():
    healthy = CanaryHealth(requests=100, errors=1, p99_ms=50)
    assert decide_canary(POLICY, 0, 10, healthy).action == "hold"
    assert decide_canary(POLICY, 0, 61, CanaryHealth(5, 0, 10)).action == "hold"
    d = decide_canary(POLICY, 0, 61, healthy)
    assert (d.action, d.step) == ("advance", 1) and "ramp to 25%" in d.reason
    assert decide_canary(POLICY, 1, 61, healthy).step == 2
    done = decide_canary(POLICY, 2, 61, healthy)
    assert (done.action, done.step) == ("complete", 2)


def test_canary_rolls_back_on_error_rate_or_p99_once_there_is_evidence_even_mid_step():
    errors = decide_canary(POLICY, 1, 5, CanaryHealth(requests=40, errors=8, p99_ms=50))
    assert errors.action == "rollback" and "error rate 0.200 > 0.05" in errors.reason and "step 2 (25%)" in errors.reason
    slow = decide_canary(POLICY, 0, 5, CanaryHealth(requests=40, errors=0, p99_ms=450.0))
    assert slow.action == "rollback" and "p99 latency 450.0 ms > 200 ms" in slow.reason
    # too few requests to judge: no rollback on 3 errors out of 3
    assert decide_canary(POLICY, 0, 5, CanaryHealth(requests=3, errors=3)).action == "hold"
    # exactly at the threshold is not a breach
    assert decide_canary(POLICY, 0, 5, CanaryHealth(requests=100, errors=5, p99_ms=200)).action == "hold"


def test_canary_policy_validation_and_round_trip():
    assert CanaryPolicy.from_doc(POLICY.to_doc()) == POLICY
    for kwargs, message in [({"steps": ()}, "at least one step"), ({"steps": (0.5, 0.25)}, "increase"),
                            ({"steps": (0.0, 1.0)}, r"\(0, 1\]"), ({"max_error_rate": 1.5}, "max_error_rate"),
                            ({"max_p99_ms": -1.0}, "max_p99_ms"), ({"min_requests": 0}, "min_requests"),
                            ({"step_s": -1.0}, "step_s")]:
        with pytest.raises(ValueError, match=message):
            CanaryPolicy("c", **kwargs)
    with pytest.raises(ValueError, match="outside the ramp"):
        decide_canary(POLICY, 3, 0, CanaryHealth(0, 0))


def test_p99_rank_is_the_nearest_rank_from_the_top():
    assert [p99_rank(n) for n in (1, 50, 100, 101, 200, 1000)] == [1, 1, 2, 2, 3, 11]
    values = list(range(1, 1001))
    assert sorted(values, reverse=True)[p99_rank(1000) - 1] == 990
