"""`runs list --filter/--order-by` and `compare` as SQL, on SQLite and on PostgreSQL (row-level security on):
the same filter picks the same runs on both. No Ray."""

from __future__ import annotations

import uuid

import pytest

from mlhub.config import load_settings
from mlhub.errors import NotFoundError, ValidationError
from mlhub.store import runs as runs_repo
from mlhub.store.runs import MetricPoint
from mlhub.tenancy import TenantService
from mlhub.tracking import TrackingService


def tenant(db):
    svc = TenantService(db)
    key = svc.create_tenant(f"flt-{uuid.uuid4().hex[:8]}")[1]
    return svc.authenticate(key), key


def make_run(db, principal, name, *, params=None, tags=None, metrics=None, status="finished",
             experiment="exp") -> int:
    """A run with params, tags and metric series ``{key: [(step, value), ...]}`` (logged in the order given)."""
    t = principal.tenant_id
    with db.tenant_scope(t) as s:
        run = runs_repo.create_run(s, t, name, experiment=experiment)
        runs_repo.add_params(s, t, run.id, {k: str(v) for k, v in (params or {}).items()})
        runs_repo.set_tags(s, t, run.id, {k: str(v) for k, v in (tags or {}).items()})
        runs_repo.log_metrics(s, t, run.id, [MetricPoint(k, v, step) for k, series in (metrics or {}).items()
                                             for step, v in series])
        run.status = status
        return run.id


@pytest.fixture
def runs(db):
    me, _ = tenant(db)
    ids = {
        "good": make_run(db, me, "good", params={"lr": 0.001, "optimizer": "adam", "epochs": 10},
                         tags={"team": "vision"}, metrics={"f1": [(0, 0.5), (1, 0.95)]}),
        "high_lr": make_run(db, me, "high_lr", params={"lr": 0.1, "optimizer": "sgd", "epochs": 2},
                            tags={"team": "nlp"}, metrics={"f1": [(0, 0.97)]}),
        # best f1 early, but its latest (highest step) value is low; logged out of step order
        "regressed": make_run(db, me, "regressed", params={"lr": 0.001, "epochs": "10.0"},
                              metrics={"f1": [(5, 0.7), (2, 0.96)]}, status="failed"),
        "no_f1": make_run(db, me, "no_f1", params={"lr": 0.001}, metrics={"loss": [(0, 0.1)]}),
        "text_lr": make_run(db, me, "text_lr", params={"lr": "auto"}, metrics={"f1": [(0, 0.99)]}),
        "exp_lr": make_run(db, me, "exp_lr", params={"lr": "1e-3", "optimizer": "adam"},
                           tags={"team": "vision"}, metrics={"f1": [(0, 0.91)]}, experiment="other"),
    }
    other, _ = tenant(db)  # a twin of "good" in another tenant: never listed
    make_run(db, other, "good", params={"lr": 0.001}, metrics={"f1": [(0, 0.99)]})
    return me, ids


def names(db, principal, **kw) -> list[str]:
    return [r.name for r in TrackingService(db).list_runs(principal, **kw)]


def test_the_issue_example_compares_latest_metrics_and_numeric_params(db, runs):
    me, _ = runs
    assert sorted(names(db, me, filter="metrics.f1 > 0.9 and params.lr < 0.01")) == ["exp_lr", "good"]


@pytest.mark.parametrize(("flt", "expected"), [
    ("metrics.f1 >= 0.95", ["good", "high_lr", "text_lr"]),
    ("metrics.f1 = 0.7", ["regressed"]),
    ("metrics.loss < 1", ["no_f1"]),
    ("params.lr = 0.001", ["exp_lr", "good", "no_f1", "regressed"]),  # "1e-3" is the number 0.001
    ("params.lr = '0.001'", ["good", "no_f1", "regressed"]),          # quoted: compared as text
    ("params.lr != 0.001", ["high_lr"]),                               # "auto" is no number: never matches
    ("params.lr = 'auto'", ["text_lr"]),
    ("params.epochs = 10", ["good", "regressed"]),                     # "10" and "10.0"
    ("params.epochs > 5", ["good", "regressed"]),
    ("params.optimizer = 'adam'", ["exp_lr", "good"]),
    ("params.optimizer != 'adam'", ["high_lr"]),                       # runs without the param never match
    ('tags.team = "vision"', ["exp_lr", "good"]),
    ("tags.team = 'vision' or tags.team = 'nlp'", ["exp_lr", "good", "high_lr"]),
    ("status = 'failed'", ["regressed"]),
    ("attributes.status != 'failed' and name = 'no_f1'", ["no_f1"]),
    ("experiment = 'other'", ["exp_lr"]),
    ("(metrics.f1 > 0.96 or params.optimizer = 'sgd') and params.lr > 0.01", ["high_lr"]),
    ("metrics.f1 > 0.9 and (tags.team = 'nlp' or status = 'failed')", ["high_lr"]),
    ("params.optimizer = 'x\\' or 1=1 --'", []),                        # values are bound, never spliced in
    ("metrics.nothing > 0", []),
])
def test_filters(db, runs, flt, expected):
    me, _ = runs
    assert sorted(names(db, me, filter=flt, limit=100)) == expected


def test_filter_with_the_other_options_and_the_id_attribute(db, runs):
    me, ids = runs
    assert names(db, me, filter="metrics.f1 > 0.9", experiment="exp", status="finished") == [
        "text_lr", "high_lr", "good"]  # newest first
    assert names(db, me, filter="metrics.f1 > 0.9", limit=1) == ["exp_lr"]
    assert names(db, me, filter=f"id = {ids['good']}") == ["good"]


def test_order_by_latest_metric_and_numeric_then_text_params(db, runs):
    me, _ = runs
    # runs without f1 last; equal values fall back to newest first
    assert names(db, me, order_by="metrics.f1 desc") == ["text_lr", "high_lr", "good", "exp_lr", "regressed",
                                                         "no_f1"]
    assert names(db, me, order_by="metrics.f1") == ["regressed", "exp_lr", "good", "high_lr", "text_lr", "no_f1"]
    # numbers by value (0.001 = 1e-3 < 0.1), then text ("auto")
    assert names(db, me, order_by="params.lr asc, name desc") == ["regressed", "no_f1", "good", "exp_lr",
                                                                   "high_lr", "text_lr"]
    assert names(db, me, order_by="params.epochs desc", filter="params.epochs > 0") == [
        "regressed", "good", "high_lr"]  # 10.0 = 10 > 2 (not "2" > "10" as text); ties by text
    assert names(db, me, order_by="name", filter="tags.team = 'vision'") == ["exp_lr", "good"]


def test_a_bad_filter_or_order_is_a_validation_error_with_its_position(db, runs):
    me, _ = runs
    svc = TrackingService(db)
    with pytest.raises(ValidationError, match=r"compares with a number at position 13"):
        svc.list_runs(me, filter="metrics.f1 > 'x'")
    with pytest.raises(ValidationError, match="cannot order by attribute 'color'"):
        svc.list_runs(me, order_by="color")


def test_compare_puts_params_tags_and_latest_metrics_side_by_side(db, runs):
    me, ids = runs
    svc = TrackingService(db)
    cmp = svc.compare(me, [ids["good"], ids["high_lr"], ids["no_f1"]])
    assert [r.name for r in cmp.runs] == ["good", "high_lr", "no_f1"]
    params = {c.key: (c.values, c.differs) for c in cmp.params}
    assert params == {"epochs": (("10", "2", None), True), "lr": (("0.001", "0.1", "0.001"), True),
                      "optimizer": (("adam", "sgd", None), True)}
    metrics = {c.key: (c.values, c.differs) for c in cmp.metrics}
    assert metrics == {"f1": ((0.95, 0.97, None), True), "loss": ((None, None, 0.1), True)}
    assert cmp.differing == {"params": ["epochs", "lr", "optimizer"], "tags": ["team"], "metrics": ["f1", "loss"]}
    same = svc.compare(me, [ids["good"], ids["exp_lr"]])
    assert [(c.key, c.differs) for c in same.tags] == [("team", False)]
    with pytest.raises(ValidationError, match="compare 2 to 20 runs, got 1"):
        svc.compare(me, [ids["good"]])
    with pytest.raises(ValidationError, match="each run may be compared once"):
        svc.compare(me, [ids["good"], ids["good"]])


def test_compare_refuses_another_tenants_run(db, runs):
    me, ids = runs
    stranger, _ = tenant(db)
    with pytest.raises(NotFoundError, match=f"run {ids['good']} not found"):
        TrackingService(db).compare(stranger, [ids["good"], ids["high_lr"]])


def test_start_run_writes_what_the_filter_finds(db, tmp_path):
    import mlhub

    me, key = tenant(db)
    settings = load_settings(home=tmp_path / "hub", database_url=db.url)
    with mlhub.start_run("script", params={"lr": 0.005}, tags={"team": "vision"}, settings=settings,
                         api_key=key) as run:
        for step in range(20):
            run.log_metrics({"f1": 0.5 + step / 40}, step=step)
        with mlhub.start_run("child") as child:
            child.log_metric("f1", 0.2)
    assert names(db, me, filter="metrics.f1 > 0.9 and params.lr < 0.01 and tags.team = 'vision'") == ["script"]
    assert TrackingService(db).metric_history(me, run.id, ["f1"]) == {"f1": [(s, 0.5 + s / 40) for s in range(20)]}
    assert [(r.name, r.parent_run_id) for r in TrackingService(db).list_runs(me, filter="metrics.f1 < 0.5")] == [
        ("child", run.id)]
