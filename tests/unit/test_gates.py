"""Promotion gates: parsing their one-line text and judging a candidate version (pure, no database)."""

from __future__ import annotations

import pytest

from mlhub.domain.gates import (
    Evidence,
    Gate,
    check_gates,
    lower_is_better,
    parse_gate,
    parse_gates,
    validate_alias,
)
from mlhub.errors import ValidationError


@pytest.mark.parametrize("text, fields", [
    ("accuracy >= 0.9", {"metric": "accuracy", "op": ">=", "value": 0.9}),
    ("rmse<12.5", {"metric": "rmse", "op": "<", "value": 12.5}),
    ("f1_macro better than champion by 0.01", {"metric": "f1_macro", "better_than": "champion", "by": 0.01}),
    ("f1_macro better than champion", {"metric": "f1_macro", "better_than": "champion", "by": 0.0}),
    ("rmse lower than champion by 2 on diabetes", {"metric": "rmse", "direction": "lower", "dataset": "diabetes"}),
    ("evaluated on iris", {"metric": None, "dataset": "iris"}),
    ("evaluated on iris for staging, champion", {"dataset": "iris", "targets": ("staging", "champion")}),
    ("accuracy >= 0.8 on wine for challenger", {"dataset": "wine", "targets": ("challenger",)}),
])
def test_gate_text_parses_and_prints_back(text, fields):
    gate = parse_gate(text)
    for k, v in fields.items():
        assert getattr(gate, k) == v, k
    assert parse_gate(str(gate)) == gate  # the text form round-trips


@pytest.mark.parametrize("text", ["accuracy", "accuracy >= high", "f1 better than", "evaluated on",
                                  "accuracy >= 0.9 for bad alias!", "x >= nan", "f1 better than champion by -1"])
def test_bad_gate_text_is_refused(text):
    with pytest.raises(ValidationError):
        parse_gate(text)


def test_parse_gates_reports_every_bad_gate_at_once():
    with pytest.raises(ValidationError) as err:
        parse_gates(["accuracy >= 0.9", "nonsense here", {"metric": "f1"}])
    assert "gate 2" in err.value.message and "gate 3" in err.value.message and "gate 1" not in err.value.message


def test_dict_gates_reject_unknown_fields_and_mixed_kinds():
    with pytest.raises(ValidationError):
        parse_gate({"metric": "f1", "op": ">=", "value": 1, "colour": "red"})
    with pytest.raises(ValidationError):
        parse_gate({"metric": "f1", "op": ">=", "value": 1, "better_than": "champion"})


def test_loss_metrics_are_lower_is_better():
    assert lower_is_better("rmse") and lower_is_better("log_loss") and lower_is_better("val_loss")
    assert not lower_is_better("accuracy") and not lower_is_better("f1_macro") and not lower_is_better("r2")


def test_aliases_cannot_be_stage_names():
    assert validate_alias("champion") == "champion"
    for bad in ("production", "staging", "archived", "none", "has space", ""):
        with pytest.raises(ValidationError):
            validate_alias(bad)


def test_threshold_gate_passes_and_fails_with_the_numbers():
    gates = parse_gates(["accuracy >= 0.9"])
    ok = check_gates(gates, "champion", Evidence(2, {"accuracy": 0.93}), {})
    assert [r.passed for r in ok] == [True]
    bad = check_gates(gates, "champion", Evidence(2, {"accuracy": 0.85}), {})
    assert not bad[0].passed and "0.85" in bad[0].detail and "0.9" in bad[0].detail
    missing = check_gates(gates, "champion", Evidence(2, {"f1": 0.85}), {})
    assert not missing[0].passed and "no accuracy" in missing[0].detail


def test_gates_only_guard_their_targets():
    gates = parse_gates(["accuracy >= 0.99", "accuracy >= 0.5 for challenger"])
    assert [r.gate for r in check_gates(gates, "challenger", Evidence(1, {"accuracy": 0.6}), {})] == [
        "accuracy >= 0.5 for challenger"]
    assert check_gates(gates, "staging", Evidence(1, {"accuracy": 0.6}), {}) == []


def test_comparison_gate_needs_the_margin_and_knows_which_way_is_better():
    gate = parse_gates(["f1 better than champion by 0.01"])
    champ = Evidence(1, {"f1": 0.90})
    assert check_gates(gate, "champion", Evidence(2, {"f1": 0.915}), {"champion": champ})[0].passed
    res = check_gates(gate, "champion", Evidence(2, {"f1": 0.905}), {"champion": champ})[0]
    assert not res.passed and "0.905" in res.detail and "0.9 " in res.detail
    loss = parse_gates(["rmse better than champion by 1"])
    assert check_gates(loss, "champion", Evidence(2, {"rmse": 8.0}), {"champion": Evidence(1, {"rmse": 10.0})})[0].passed
    assert not check_gates(loss, "champion", Evidence(2, {"rmse": 9.5}),
                           {"champion": Evidence(1, {"rmse": 10.0})})[0].passed
    # nobody holds the alias yet: nothing to beat
    assert check_gates(gate, "champion", Evidence(2, {"f1": 0.1}), {"champion": None})[0].passed


def test_dataset_gates_read_the_evaluation_and_require_it():
    gates = parse_gates(["evaluated on iris", "accuracy >= 0.9 on iris"])
    none = check_gates(gates, "champion", Evidence(3, {"accuracy": 0.99}), {})
    assert [r.passed for r in none] == [False, False]
    ev = Evidence(3, {"accuracy": 0.99}, {"iris": {"accuracy": 0.8}})
    res = check_gates(gates, "champion", ev, {})
    assert [r.passed for r in res] == [True, False] and "evaluation on iris" in res[1].detail


def test_metric_falls_back_to_the_newest_evaluation():
    value, source = Evidence(1, {}, {"wine": {"f1": 0.7}}).metric("f1", None)
    assert value == 0.7 and source == "evaluation on wine"
    assert Evidence(1, {"f1": float("nan")}).metric("f1", None)[0] is None


def test_gate_model_is_frozen_and_hashable():
    g = Gate(metric="f1", op=">=", value=0.5)
    assert hash(g) == hash(parse_gate("f1 >= 0.5"))


def test_comparison_gates_compare_like_with_like():
    gate = parse_gates(["f1 better than champion on holdout"])
    never_evaluated = Evidence(1, {"f1": 0.99})
    res = check_gates(gate, "champion", Evidence(2, {}, {"holdout": {"f1": 0.5}}), {"champion": never_evaluated})[0]
    assert not res.passed and "no f1 from evaluation on holdout" in res.detail
    # no dataset named: the candidate's training metric is compared with the champion's training metric only
    plain = parse_gates(["f1 better than champion"])
    champion = Evidence(1, {}, {"holdout": {"f1": 0.9}})
    res = check_gates(plain, "champion", Evidence(2, {"f1": 0.95}), {"champion": champion})[0]
    assert not res.passed and "training metrics" in res.detail


def test_negated_scores_are_higher_is_better():
    assert not lower_is_better("neg_log_loss") and not lower_is_better("neg_mean_squared_error")
    assert lower_is_better("brier") and lower_is_better("eval:holdout:rmse")
    gate = parse_gates(["neg_log_loss better than champion"])
    assert check_gates(gate, "champion", Evidence(2, {"neg_log_loss": -0.2}),
                       {"champion": Evidence(1, {"neg_log_loss": -0.3})})[0].passed
