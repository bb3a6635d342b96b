"""A/B, canary and shadow experiments on SQLite and on PostgreSQL (row-level security on): routing 1000 keys in
proportion and sticky across routers, outcomes joined to assignments (also when they come first), the status
numbers and the winner, the canary ramp and its automatic rollback from prediction-log rows, promotion through
the registry, an inference replica (InferenceCore) routing by the experiment, and `mlhub ab ...` as a user
drives it. No Ray."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import numpy as np
import pytest
from sqlalchemy import func, select

from mlhub.audit import AuditLog
from mlhub.domain.abstats import Design
from mlhub.domain.routing import CanaryPolicy, VariantSpec
from mlhub.errors import ConflictError, ExperimentStateError, NotFoundError, ValidationError
from mlhub.experiments import canary as canary_eval
from mlhub.experiments.router import ExperimentRouter
from mlhub.experiments.service import ExperimentService
from mlhub.serving.endpoints import EndpointService
from mlhub.store.database import Database
from mlhub.store.models import ExperimentAssignment, PredictionLog
from mlhub.store.types import utcnow
from tests.integration.test_registry import Setup
from tests.integration.test_serving_core import Tenant as ServingTenant
from tests.integration.test_serving_core import core, trained  # noqa: F401, F811 - the replica test fixtures
from tests.integration.test_tracking_cli import run_cli

KEYS = [f"user-{i}" for i in range(1000)]


@pytest.fixture
def reg(db, tmp_path):
    setup = Setup(db, tmp_path)
    for acc in (0.90, 0.91, 0.92):
        setup.version("churn", {"accuracy": acc})
    return setup


def _assignments(db, principal, experiment_id) -> int:
    with db.tenant_scope(principal.tenant_id, readonly=True) as s:
        return s.scalar(select(func.count()).select_from(ExperimentAssignment)
                        .where(ExperimentAssignment.experiment_id == experiment_id))


def _log(db, principal, info, variant: str, *, n: int, errors: int = 0, latency_ms: float = 5.0) -> None:
    version_id = info.variant(variant).version_id
    with db.tenant_scope(principal.tenant_id) as s:
        for i in range(n):
            s.add(PredictionLog(tenant_id=principal.tenant_id, version_id=version_id, endpoint="churn",
                                request_id=uuid.uuid4().hex, inputs=[[0.0]], outputs=[0], latency_ms=latency_ms,
                                status_code=500 if i < errors else 200, experiment_id=info.id, variant=variant,
                                created_at=utcnow()))


def test_ab_routes_in_proportion_sticky_joins_outcomes_declares_the_winner_and_promotes(reg):
    db, me = reg.db, reg.me
    svc = ExperimentService(db)
    info = svc.create(me, "churn-ab", "churn", [VariantSpec("control", 1), VariantSpec("treatment", 2, 0.3),
                                                VariantSpec("shadowed", 3)], shadow=["shadowed"], metric="converted")
    # control takes what treatment leaves; the shadow takes no share but gets copies
    assert [(v.name, v.weight, v.shadow) for v in info.variants] == [
        ("control", pytest.approx(0.7), False), ("treatment", 0.3, False), ("shadowed", 0.0, True)]
    assert (info.kind, info.status) == ("ab", "draft")
    router = ExperimentRouter(db, ttl_s=60)
    try:
        assert router.route(me.tenant_id, info.model_id, "user-1") is None  # a draft routes nothing
        router.invalidate()
        svc.start(me, "churn-ab")
        routes = {k: router.route(me.tenant_id, info.model_id, k) for k in KEYS}
        anonymous = router.route(me.tenant_id, info.model_id, None)
        router.flush()  # the background thread may have written some already (every flush_s)
        assert (router.written, router.pending, router.dropped) == (1001, 0, 0)
    finally:
        router.close()
    counts = Counter(r.variant for r in routes.values())
    assert counts["treatment"] / 1000 == pytest.approx(0.3, abs=0.05) and counts["shadowed"] == 0
    first = routes["user-1"]
    assert first.version_id == info.variant(first.variant).version_id and first.request_key == "user-1"
    assert first.shadows == ((("shadowed", info.variant("shadowed").version_id)),)
    assert len(anonymous.request_key) == 32  # generated, returned so the caller can send an outcome for it
    # a fresh router (another replica, a restart) sends every key where the first one did; no duplicate rows
    again = ExperimentRouter(db, ttl_s=60)
    try:
        assert all(again.route(me.tenant_id, info.model_id, k).variant == routes[k].variant for k in KEYS)
        again.flush()
    finally:
        again.close()
    assert _assignments(db, me, info.id) == 1001

    # outcomes: treatment converts at 0.45, control at 0.25
    rng = np.random.default_rng(1)
    for k in KEYS:
        p = 0.45 if routes[k].variant == "treatment" else 0.25
        result = svc.record_outcome(me, info.id, k, int(rng.random() < p))
        assert result.joined and result.variant == routes[k].variant
    early = svc.record_outcome(me, info.id, "late-user", 1)           # its assignment is not written yet
    assert not early.joined
    report = svc.status(me, "churn-ab")
    by = {v.name: v for v in report.variants}
    assert by["control"].assigned + by["treatment"].assigned == 1001 and by["shadowed"].assigned == 0
    assert by["control"].outcomes == counts["control"] and by["treatment"].outcomes == counts["treatment"]
    assert by["control"].ci_low < by["control"].mean < by["control"].ci_high
    assert by["treatment"].mean == pytest.approx(0.45, abs=0.06) and by["shadowed"].outcomes == 0
    assert report.unjoined_outcomes == 1
    assert report.analysis.comparisons[0].test == "two-proportion z-test"
    assert report.analysis.winner == "treatment" and report.verdict.startswith("winner: treatment")
    assert report.experiment.winner == "treatment"                    # recorded once, audited
    assert [e.details["winner"] for e in AuditLog(db).list(me, action="experiment.winner")] == ["treatment"]
    # the late assignment arrives: its earlier outcome joins by key
    late = ExperimentRouter(db, ttl_s=60)
    try:
        late.route(me.tenant_id, info.model_id, "late-user")
    finally:
        late.close()
    assert svc.status(me, info.id).unjoined_outcomes == 0

    with pytest.raises(ValidationError, match="0 or 1"):
        svc.record_outcome(me, info.id, "user-2", 0.5)
    with pytest.raises(ValidationError, match="finite"):
        svc.record_outcome(me, info.id, "user-2", float("nan"))
    with pytest.raises(NotFoundError):
        svc.record_outcome(reg.other, info.id, "user-2", 1)           # another tenant sees nothing
    with pytest.raises(NotFoundError):
        svc.get(reg.other, "churn-ab")

    promoted = svc.promote(me, "churn-ab")
    assert (promoted.variant, promoted.version, promoted.alias, promoted.changed) == ("treatment", 2, "champion", True)
    assert reg.models.get("churn@champion").version == 2
    assert reg.models.history("churn")[0].reason == "experiment churn-ab: treatment won"
    assert svc.get(me, "churn-ab").status == "promoted"
    fresh = ExperimentRouter(db, ttl_s=60)
    try:
        assert fresh.route(me.tenant_id, info.model_id, "user-1") is None  # the alias serves again
    finally:
        fresh.close()
    with pytest.raises(ExperimentStateError):
        svc.promote(me, "churn-ab")


def test_lifecycle_rules_and_bad_input_are_refused_with_typed_errors(reg):
    svc, me = ExperimentService(reg.db), reg.me
    with pytest.raises(NotFoundError, match="no version 9"):
        svc.create(me, "x", "churn", [VariantSpec("a", 1), VariantSpec("b", 9)])
    with pytest.raises(NotFoundError, match="model 'nope'"):
        svc.create(me, "x", "nope", [VariantSpec("a", 1), VariantSpec("b", 2)])
    with pytest.raises(ValidationError, match="sum to 1"):
        svc.create(me, "x", "churn", [VariantSpec("a", 1, 0.2), VariantSpec("b", 2, 0.2)])
    with pytest.raises(ValidationError, match="--shadow 'c'"):
        svc.create(me, "x", "churn", [VariantSpec("a", 1), VariantSpec("b", 2)], shadow=["c"])
    with pytest.raises(ValidationError, match="canary variant"):
        svc.create(me, "x", "churn", [VariantSpec("a", 1), VariantSpec("b", 2)], canary=CanaryPolicy("c"))
    svc.create(me, "one", "churn", [VariantSpec("a", 1), VariantSpec("b", 2)], metric_kind="mean",
               design=Design(kind="fixed", sample_size=100))
    with pytest.raises(ConflictError, match="exists already"):
        svc.create(me, "one", "churn", [VariantSpec("a", 1), VariantSpec("b", 2)])
    with pytest.raises(ExperimentStateError, match="has not started"):
        svc.record_outcome(me, svc.get(me, "one").id, "k", 1.0)
    svc.create(me, "two", "churn", [VariantSpec("a", 1), VariantSpec("b", 3)])
    svc.start(me, "one")
    with pytest.raises(ExperimentStateError, match="'one' already runs"):
        svc.start(me, "two")
    with pytest.raises(ExperimentStateError, match="no clear winner"):
        svc.promote(me, "one")
    assert svc.stop(me, "one", reason="enough").status == "stopped"
    with pytest.raises(ExperimentStateError, match="only a draft can start"):
        svc.start(me, "one")
    assert [e.outcome for e in AuditLog(reg.db).list(me, action="experiment.start")] == ["failure", "failure",
                                                                                         "success"]
    assert svc.start(me, "two").status == "running"  # the model is free again
    # a mean outcome can be any finite number; the fixed design waits for its sample size
    svc.record_outcome(me, svc.get(me, "one").id, "k", 12.5)
    assert [i.name for i in svc.list(me, model="churn")] == ["one", "two"]


def test_canary_ramps_on_healthy_traffic_rolls_back_on_errors_and_the_router_stops_routing(reg):
    db, me = reg.db, reg.me
    svc = ExperimentService(db)
    policy = CanaryPolicy("canary", steps=(0.1, 0.5, 1.0), step_s=0, max_error_rate=0.1, max_p99_ms=500,
                          min_requests=10)
    info = svc.create(me, "churn-canary", "churn", [VariantSpec("stable", 1), VariantSpec("canary", 3)],
                      canary=policy)
    assert info.kind == "canary"
    svc.start(me, info.id)
    router = ExperimentRouter(db, ttl_s=60, evaluate_s=0)
    try:
        counts = Counter(router.route(me.tenant_id, info.model_id, k).variant for k in KEYS)
        assert counts["canary"] / 1000 == pytest.approx(0.1, abs=0.04)
        router.evaluate_canaries()                                    # no evidence yet: holds
        assert svc.get(me, info.id).step == 0
        _log(db, me, info, "canary", n=12)
        report = svc.status(me, info.id)                              # status evaluates too: healthy -> 50%
        assert report.decision.action == "advance" and report.experiment.step == 1
        assert report.canary["share"] == 0.5 and report.verdict == "ramping: step 2 of 3 (50%)"
        stale = svc.get(me, info.id)
        # the 50% share applies from the router's next refresh, and only moves keys stable -> canary
        router.invalidate()
        now = {k: router.route(me.tenant_id, info.model_id, k).variant for k in KEYS}
        assert sum(v == "canary" for v in now.values()) / 1000 == pytest.approx(0.5, abs=0.06)
        _log(db, me, info, "canary", n=20, errors=5)                  # 25% errors in the new step
        router.evaluate_canaries()
        rolled = svc.get(me, info.id)
        assert (rolled.status, rolled.phase) == ("stopped", "rolled_back")
        assert "error rate 0.250 > 0.1 over 20 requests at step 2 (50%)" in rolled.reason
        assert router.route(me.tenant_id, info.model_id, "user-1") is None  # every request back on the alias
        # evaluating again, or applying a decision taken on the stale state, moves nothing
        assert canary_eval.evaluate(db, me, rolled) is None
        decision = canary_eval.decide_canary(policy, stale.step, 1.0, canary_eval.CanaryHealth(20, 0))
        assert not canary_eval.apply_decision(db, me, stale, decision, canary_eval.CanaryHealth(20, 0), utcnow())
    finally:
        router.close()
    events = AuditLog(db).list(me, action="experiment.canary")
    assert [e.action for e in events] == ["experiment.canary.rollback", "experiment.canary.advance"]
    assert events[0].details["errors"] == 5 and events[0].actor == "experiment-router"
    assert svc.status(me, info.id).verdict.startswith("rolled back: error rate 0.250")


def test_a_healthy_canary_completes_and_is_promoted_and_slow_answers_roll_back(reg):
    db, me = reg.db, reg.me
    svc = ExperimentService(db)
    policy = CanaryPolicy("canary", steps=(0.2, 1.0), step_s=0, max_error_rate=0.1, max_p99_ms=100, min_requests=5)
    info = svc.create(me, "ok-canary", "churn", [VariantSpec("stable", 1), VariantSpec("canary", 2)], canary=policy)
    svc.start(me, info.id)
    for _ in range(2):
        _log(db, me, info, "canary", n=6, latency_ms=20)
        svc.status(me, info.id)
    done = svc.status(me, info.id)
    assert (done.experiment.phase, done.experiment.winner, done.experiment.status) == ("completed", "canary",
                                                                                       "running")
    assert "promote it with `mlhub ab promote ok-canary`" in done.verdict
    assert svc.promote(me, info.id, to="champion").version == 2
    assert reg.models.get("churn@champion").version == 2

    slow = svc.create(me, "slow-canary", "churn", [VariantSpec("stable", 2), VariantSpec("canary", 3)],
                      canary=policy)
    svc.start(me, slow.id)
    _log(db, me, slow, "canary", n=9, latency_ms=20)
    _log(db, me, slow, "canary", n=1, latency_ms=900)                # the p99 of 10 is the slowest one
    report = svc.status(me, slow.id)
    assert report.decision.action == "rollback" and "p99 latency 900.0 ms > 100 ms" in report.experiment.reason


def test_router_survives_a_database_outage_and_keeps_the_assignments(reg, tmp_path):
    db, me = reg.db, reg.me
    svc = ExperimentService(db)
    info = svc.create(me, "outage", "churn", [VariantSpec("a", 1), VariantSpec("b", 2)])
    svc.start(me, info.id)
    broken = Database(f"sqlite:///{tmp_path / 'missing' / 'nothing-here.db'}")  # no schema: every query fails
    router = ExperimentRouter(broken, ttl_s=0)
    try:
        assert router.route(me.tenant_id, info.model_id, "k") is None  # nothing known, nothing raised
    finally:
        router.close()
    router = ExperimentRouter(db, ttl_s=0)
    try:
        assert router.route(me.tenant_id, info.model_id, "k1") is not None
        router.db = broken                                           # the database goes away
        assert router.route(me.tenant_id, info.model_id, "k2") is not None  # the last definition still routes
        assert router.flush() == 0 and router.pending == 2           # kept for later
        router.db = db
        assert router.flush() == 2
    finally:
        router.close()
        broken.dispose()
    assert _assignments(db, me, info.id) == 2


def test_router_is_thread_safe_and_its_thread_writes_and_evaluates_on_its_own(reg):
    import threading
    import time

    db, me = reg.db, reg.me
    svc = ExperimentService(db)
    info = svc.create(me, "threads", "churn", [VariantSpec("stable", 1), VariantSpec("canary", 2)],
                      canary=CanaryPolicy("canary", steps=(0.5, 1.0), step_s=0, max_error_rate=0.1, min_requests=5))
    svc.start(me, info.id)
    router = ExperimentRouter(db, ttl_s=0.01, flush_s=0.05, evaluate_s=0)
    seen: dict[str, set[str]] = {}
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(300):  # every thread routes the same keys: one row per key must land
            r = router.route(me.tenant_id, info.model_id, f"key-{i}")
            with lock:
                seen.setdefault(r.request_key, set()).add(r.variant)

    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(len(v) == 1 for v in seen.values()) and len(seen) == 300
        _log(db, me, info, "canary", n=10, errors=5)
        deadline = time.monotonic() + 30  # the background thread writes and rolls back without being asked
        while time.monotonic() < deadline and (router.pending or svc.get(me, info.id).status == "running"):
            time.sleep(0.05)
        assert router.alive
    finally:
        router.close()
    assert _assignments(db, me, info.id) == 300
    assert svc.get(me, info.id).phase == "rolled_back"


@pytest.mark.postgres
def test_ab_cli_creates_starts_shows_the_numbers_and_promotes(capsys, migrated_pg_url, monkeypatch, tmp_path):
    monkeypatch.setenv("MLHUB_DATABASE_URL", migrated_pg_url)
    monkeypatch.setenv("MLHUB_HOME", str(tmp_path))
    db = Database(migrated_pg_url)
    try:
        reg = Setup(db, tmp_path)
        for acc in (0.90, 0.91):
            reg.version("churn", {"accuracy": acc})

        def cli(*args, key=reg.key):
            return run_cli(capsys, "--api-key", key, "ab", *args)

        rc, out, err = cli("create", "churn-ab", "--model", "churn", "--variant", "control=1",
                           "--variant", "treatment=2:0.5", "--metric-kind", "rate", "--json")
        assert rc == 0, err
        created = json.loads(out)
        assert created["status"] == "draft" and [v["weight"] for v in created["variants"]] == [0.5, 0.5]
        rc, _, err = cli("create", "bad", "--model", "churn", "--variant", "control")
        assert rc == 2 and "NAME=VERSION" in err
        rc, out, err = cli("start", "churn-ab")
        assert rc == 0 and "churn-ab running" in out, err
        router = ExperimentRouter(db, ttl_s=60)
        try:
            routes = {k: router.route(reg.me.tenant_id, created["model_id"], k) for k in KEYS[:600]}
        finally:
            router.close()
        svc = ExperimentService(db)
        rng = np.random.default_rng(5)
        for k, r in routes.items():
            svc.record_outcome(reg.me, created["id"], k, int(rng.random() < (0.5 if r.variant == "treatment" else 0.2)))
        rc, out, err = cli("status", "churn-ab")
        assert rc == 0, err
        assert "control" in out and "treatment" in out and "two-proportion z-test" in out
        assert "winner: treatment" in out
        rc, out, err = cli("status", "churn-ab", "--json")
        doc = json.loads(out)
        assert rc == 0 and doc["experiment"]["winner"] == "treatment"
        assert sum(v["outcomes"] for v in doc["variants"]) == 600
        rc, out, err = cli("status", "churn-ab", key=reg.other_key)
        assert rc == 4 and "not found" in err
        rc, out, err = cli("list")
        assert rc == 0 and "churn-ab" in out, err
        rc, out, err = cli("promote", "churn-ab", "--to", "champion")
        assert rc == 0 and "churn@champion -> version 2 (treatment)" in out, err
        rc, out, err = cli("stop", "churn-ab")
        assert rc == 5 and "promoted already" in err
    finally:
        db.dispose()


def test_a_replica_routes_by_the_experiment_logs_the_variant_and_joins_outcomes(core, trained):  # noqa: F811
    """The wiring the inference server uses (InferenceCore without Ray): target -> Route, log -> variant."""
    me = ServingTenant(core, trained)
    me.version(), me.version()
    me.promote(1)
    EndpointService(core.backends.db).deploy(me.principal, "iris")
    svc = ExperimentService(core.backends.db)
    info = svc.create(me.principal, "iris-ab", "iris", [VariantSpec("control", 1), VariantSpec("treatment", 2)])
    svc.start(me.principal, info.id)
    principal = core.authenticate(me.header)
    targets = {k: core.target(principal, "iris", k) for k in KEYS[:200]}
    assert {t.experiment_id for t in targets.values()} == {info.id}
    assert {t.variant for t in targets.values()} == {"control", "treatment"}
    assert all(t.version.id == info.variant(t.variant).version_id for t in targets.values())
    chosen = targets["user-7"]
    core.record(principal, chosen, np.zeros((1, 4)), [0], 3.0, 200, request_id="r-7")
    core.logger.flush()
    core.router.flush()
    with core.backends.db.tenant_scope(principal.tenant_id, readonly=True) as s:
        row = s.scalar(select(PredictionLog).where(PredictionLog.request_id == "r-7"))
    assert (row.experiment_id, row.variant) == (info.id, chosen.variant)
    assert core.record_outcome(principal, info.id, "user-7", 1).variant == chosen.variant
    report = svc.status(me.principal, info.id)
    assert sum(v.assigned for v in report.variants) == 200
    assert {v.name: v.requests for v in report.variants}[chosen.variant] == 1
