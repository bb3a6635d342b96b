"""The run filter language: what `mlhub runs list --filter` accepts, the tree it means, and the errors a user
sees for what it refuses (with the position). Pure domain code."""

from __future__ import annotations

import pytest

from mlhub.domain.run_filter import (
    And,
    Comparison,
    FilterSyntaxError,
    Or,
    OrderKey,
    parse_filter,
    parse_order_by,
)
from mlhub.errors import ValidationError


def test_the_issue_example_is_an_and_of_a_metric_and_a_param():
    assert parse_filter("metrics.f1 > 0.9 and params.lr < 0.01") == And((
        Comparison("metric", "f1", ">", 0.9, 0), Comparison("param", "lr", "<", 0.01, 21)))


@pytest.mark.parametrize(("text", "expected"), [
    ("metrics.f1>=0.9", Comparison("metric", "f1", ">=", 0.9)),
    ("metrics.val_loss <= 1e-3", Comparison("metric", "val_loss", "<=", 0.001)),
    ("metrics.delta > -.5", Comparison("metric", "delta", ">", -0.5)),
    ("params.optimizer = 'adam'", Comparison("param", "optimizer", "=", "adam")),
    ("params.optimizer == 'adam'", Comparison("param", "optimizer", "=", "adam")),
    ('tags.team != "vision"', Comparison("tag", "team", "!=", "vision")),
    ("tags.team <> 'nlp'", Comparison("tag", "team", "!=", "nlp")),
    ("params.epochs = 10", Comparison("param", "epochs", "=", 10.0)),
    ("params.note = 'it\\'s'", Comparison("param", "note", "=", "it's")),
    ("status = 'finished'", Comparison("attribute", "status", "=", "finished")),
    ("attributes.status = 'failed'", Comparison("attribute", "status", "=", "failed")),
    ("NAME = 'digits'", Comparison("attribute", "name", "=", "digits")),
    ("id > 3", Comparison("attribute", "id", ">", 3.0)),
    ("metrics.`val loss` < 0.2", Comparison("metric", "val loss", "<", 0.2)),
    ('metrics."loss/val" < 0.2', Comparison("metric", "loss/val", "<", 0.2)),
    ("metrics.train.loss < 0.2", Comparison("metric", "train.loss", "<", 0.2)),
    ("metrics.loss/val < 0.2", Comparison("metric", "loss/val", "<", 0.2)),
])
def test_single_comparisons(text, expected):
    got = parse_filter(text)
    assert (got.kind, got.key, got.op, got.value) == (expected.kind, expected.key, expected.op, expected.value)


def test_and_binds_tighter_than_or_and_parentheses_regroup():
    a, b, c = "metrics.a > 1", "metrics.b > 2", "metrics.c > 3"
    flat = parse_filter(f"{a} or {b} AND {c}")
    assert isinstance(flat, Or) and isinstance(flat.items[1], And) and len(flat.items) == 2
    grouped = parse_filter(f"({a} or {b}) and {c}")
    assert isinstance(grouped, And) and isinstance(grouped.items[0], Or)
    assert str(grouped) == "(metrics.a > 1 or metrics.b > 2) and metrics.c > 3"
    assert str(flat) == "metrics.a > 1 or metrics.b > 2 and metrics.c > 3"
    assert parse_filter(str(grouped)) == grouped  # the canonical text parses back to the same tree


def test_empty_filter_is_none():
    assert parse_filter(None) is None and parse_filter("   ") is None


@pytest.mark.parametrize(("text", "problem", "position"), [
    ("metrics.f1 >", "expected a value", 12),
    ("metrics.f1 0.9", "expected a comparison operator", 11),
    ("metrics.f1 > 'high'", "metrics.f1 compares with a number", 13),
    ("status = finished", "a text value is quoted: 'finished'", 9),
    ("status = 'done'", "unknown run status 'done'", 9),
    ("id = 'x'", "id compares with a number", 5),
    ("name = 3", "name compares with a quoted string", 7),
    ("f1 > 0.9", "unknown attribute 'f1'", 0),
    ("metrics > 0.9", "'metrics' needs a key", 0),
    ("metric.f1 > 0.9 and", "expected a field", 19),
    ("metrics.f1 > 0.9 params.lr < 1", "expected 'and', 'or' or the end", 17),
    ("(metrics.f1 > 0.9", "expected ')' to close the '(' at position 0", 17),
    ("metrics.f1 > 0.9)", "unbalanced ')'", 16),
    ("params.opt = 'adam", "unterminated string", 13),
    ("metrics.f1 > 0.9 ; drop table runs", "unexpected character ';'", 17),
    ("foo.f1 > 1", "unknown field prefix 'foo'", 0),
    ("metrics.`bad;key` > 1", "invalid key 'bad;key'", 0),
    ("metrics.f1 > 0.9x", "unexpected character", 13),
])
def test_errors_name_the_problem_and_its_position(text, problem, position):
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    err = info.value
    assert isinstance(err, ValidationError)  # the CLI answers exit 2, the API 422
    assert problem in err.message
    assert (err.position, err.details["position"]) == (position, position)
    assert f"at position {position}" in err.message


def test_too_many_comparisons_or_too_long_is_refused():
    with pytest.raises(FilterSyntaxError, match="more than 64 comparisons"):
        parse_filter(" or ".join(["metrics.a > 1"] * 65))
    with pytest.raises(FilterSyntaxError, match="longer than"):
        parse_filter("metrics.a > 1 and " * 400)
    with pytest.raises(ValidationError, match="a filter is text"):
        parse_filter(3)


def test_order_by():
    assert parse_order_by("metrics.f1 desc, params.lr, name ASC, created_at") == (
        OrderKey("metric", "f1", True), OrderKey("param", "lr"), OrderKey("attribute", "name"),
        OrderKey("attribute", "created_at"))
    assert parse_order_by("") == ()
    with pytest.raises(FilterSyntaxError, match="cannot order by attribute 'color'"):
        parse_order_by("color desc")
    with pytest.raises(FilterSyntaxError, match="expected ',', 'asc', 'desc' or the end at position 11"):
        parse_order_by("metrics.f1 down")
