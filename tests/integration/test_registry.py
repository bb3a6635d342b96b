"""The model registry on SQLite and on PostgreSQL (row-level security on): versions, aliases and stages, gated
promotion with its history and audit, rollback, cached lookups (also through the real Redis), deletion rules,
garbage collection of model artifacts, comparison, and loading a ready model that checks its inputs. No Ray."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pytest

from mlhub.artifact_records import ArtifactService
from mlhub.artifacts.filesystem import FilesystemArtifactStore
from mlhub.audit import AuditLog
from mlhub.cache.memory import MemoryCache
from mlhub.errors import ConflictError, NotFoundError, PromotionRefused, ValidationError
from mlhub.registry.api import Models
from mlhub.registry.rows import MODEL_MEDIA_TYPES_BY_FORMAT
from mlhub.registry.service import RegistryService, register_version
from mlhub.store.models import Artifact, Deployment, Evaluation, RegisteredModel
from mlhub.store.types import utcnow
from mlhub.tenancy import TenantService
from tests.conftest import service_url


class Setup:
    def __init__(self, db, tmp_path, cache=None) -> None:
        self.db = db
        self.store = FilesystemArtifactStore(tmp_path / "artifacts")
        self.cache = cache if cache is not None else MemoryCache(1000, 60.0)
        self.registry = RegistryService(db, cache=self.cache, cache_ttl_s=60.0)
        tenants = TenantService(db)
        self.key = tenants.create_tenant(f"reg-{uuid.uuid4().hex[:8]}")[1]
        self.other_key = tenants.create_tenant(f"reg-{uuid.uuid4().hex[:8]}")[1]
        self.me, self.other = tenants.authenticate(self.key), tenants.authenticate(self.other_key)
        self.models = Models(self.registry, self.me, self.store)

    def version(self, name: str, metrics: dict, *, payload: bytes | None = None, fmt: str = "npz",
                framework: str = "baseline", principal=None, **kw) -> int:
        principal = principal or self.me
        payload = payload if payload is not None else uuid.uuid4().bytes * 8
        art = ArtifactService(self.db, self.store).upload(principal, payload, media_type=MODEL_MEDIA_TYPES_BY_FORMAT[fmt],
                                                          name=f"{name}.{fmt}")
        with self.db.tenant_scope(principal.tenant_id) as s:
            return register_version(s, principal.tenant_id, model_name=name, framework=framework, model_format=fmt,
                                    artifact_id=art.id, artifact_sha256=art.sha256, created_by="test",
                                    metrics=metrics, **kw).version

    def evaluate(self, name: str, version: int, dataset: str, metrics: dict) -> None:
        info = self.registry.resolve(self.me, f"{name}/{version}")
        with self.db.tenant_scope(self.me.tenant_id) as s:
            s.add(Evaluation(tenant_id=self.me.tenant_id, version_id=info.id, dataset=dataset, task="classification",
                             metrics=metrics))


@pytest.fixture
def reg(db, tmp_path):
    return Setup(db, tmp_path)


def test_versions_are_numbered_per_model_and_resolve_by_number_alias_and_latest(reg):
    assert [reg.version("iris", {"accuracy": a}, label="1.0.0" if a >= 0.9 else None)
            for a in (0.8, 0.85, 0.9)] == [1, 2, 3]
    assert reg.version("wine", {}) == 1
    assert reg.models.get("iris").version == 3 and reg.models.get("iris/3").label == "1.0.0"
    assert reg.models.get("iris/1").metrics == {"accuracy": 0.8}
    # lineage: each retrain descends from the version it follows
    assert [reg.models.get(f"iris/{n}").parent_version_id for n in (1, 2, 3)] == [
        None, reg.models.get("iris/1").id, reg.models.get("iris/2").id]
    reg.models.promote("iris", 2, to="challenger")
    assert reg.models.get("iris@challenger").version == 2
    assert reg.models.get("iris/2").aliases == ("challenger",)
    with pytest.raises(NotFoundError, match="no alias 'champion'"):
        reg.models.get("iris@champion")
    with pytest.raises(ValidationError):
        reg.models.get("iris@@x")
    summary = {m.name: m for m in reg.models.list()}
    assert summary["iris"].latest_version == 3 and summary["iris"].aliases == {"challenger": 2}


def test_a_failing_gate_refuses_with_the_numbers_changes_nothing_and_is_audited(reg):
    reg.version("iris", {"accuracy": 0.95})
    reg.version("iris", {"accuracy": 0.80})
    reg.models.set_gates("iris", ["accuracy >= 0.9"])
    assert reg.models.show("iris").gates == ["accuracy >= 0.9"]
    assert reg.models.promote("iris", 1, to="champion").gates[0].passed
    with pytest.raises(PromotionRefused) as refused:
        reg.models.promote("iris", 2, to="champion")
    assert "accuracy = 0.8" in refused.value.message and ">= 0.9" in refused.value.message
    assert refused.value.details["gates"][0]["observed"] == 0.8
    assert reg.models.get("iris@champion").version == 1  # nothing moved
    events = AuditLog(reg.db).list(reg.me, action="model.promote")
    assert [e.outcome for e in events] == ["failure", "success"]
    assert events[0].details["gates"][0]["observed"] == 0.8  # the refusal is audited with its numbers

    with pytest.raises(ValidationError, match="--reason"):
        reg.models.promote("iris", 2, to="champion", force=True)
    forced = reg.models.promote("iris", 2, to="champion", force=True, reason="hotfix for a data bug")
    assert forced.forced and forced.previous == 1 and not forced.gates[0].passed
    assert reg.models.get("iris@champion").version == 2
    record = reg.models.history("iris")[0]
    assert (record.action, record.from_version, record.to_version, record.forced, record.reason) == (
        "promote", 1, 2, True, "hotfix for a data bug")
    assert record.actor == reg.me.actor and record.gates[0]["passed"] is False
    assert AuditLog(reg.db).list(reg.me, action="model.promote")[0].details["force"] is True


def test_comparison_and_evaluation_gates_read_the_champion_and_the_evaluations(reg):
    for f1 in (0.80, 0.805, 0.85):
        reg.version("clf", {"f1_macro": f1})
    reg.models.set_gates("clf", ["f1_macro better than champion by 0.01", "evaluated on holdout"])
    reg.evaluate("clf", 1, "holdout", {"f1_macro": 0.8})
    reg.models.promote("clf", 1, to="champion")        # nobody to beat, evaluated
    reg.evaluate("clf", 2, "holdout", {"f1_macro": 0.805})
    verdicts = reg.models.check("clf", 2, "champion")
    assert [g.passed for g in verdicts] == [False, True] and "needs higher by >= 0.01" in verdicts[0].detail
    missing = reg.models.check("clf", 3, "champion")
    assert [g.passed for g in missing] == [True, False] and "no evaluation on holdout" in missing[1].detail
    reg.evaluate("clf", 3, "holdout", {"f1_macro": 0.85})
    assert reg.models.promote("clf", 3, to="champion").previous == 1
    # gates guard their targets only: a challenger needs none of them
    assert reg.models.promote("clf", 2, to="challenger").gates == []


def test_rollback_walks_back_one_real_promotion_at_a_time(reg):
    for _ in range(3):
        reg.version("m", {})
    with pytest.raises(ConflictError, match="no alias"):
        reg.models.rollback("m")
    for v in (1, 2, 3):
        reg.models.promote("m", v, to="champion")
    assert reg.models.rollback("m").version == 2
    assert reg.models.rollback("m", reason="bad latency").version == 1
    assert reg.models.get("m@champion").version == 1
    with pytest.raises(ConflictError, match="no earlier holder"):
        reg.models.rollback("m")
    actions = [(h.action, h.from_version, h.to_version) for h in reg.models.history("m", target="champion")]
    assert actions == [("rollback", 2, 1), ("rollback", 3, 2), ("promote", 2, 3), ("promote", 1, 2),
                       ("promote", None, 1)]


def test_production_holds_one_version_and_the_old_one_is_archived(reg):
    reg.version("p", {})
    reg.version("p", {})
    reg.models.promote("p", 1, to="production")
    reg.models.promote("p", 2, to="production")
    assert [(v.version, v.stage) for v in reg.models.versions("p")] == [(1, "archived"), (2, "production")]
    assert reg.models.show("p").stages == {"archived": [1], "production": [2]}
    assert reg.models.promote("p", 2, to="production").changed is False
    with pytest.raises(ValidationError, match="stage, not an alias"):
        reg.models.promote("p", 1, to="none")


def test_alias_lookups_are_cached_and_every_change_invalidates_them(reg):
    reg.version("c", {})
    reg.version("c", {})
    reg.models.promote("c", 1, to="champion")
    assert reg.models.get("c@champion").version == 1
    misses = reg.cache.stats["misses"]
    assert reg.models.get("c@champion").version == 1 and reg.cache.stats["misses"] == misses  # served cached
    reg.models.promote("c", 2, to="champion")
    assert reg.models.get("c@champion").version == 2            # visible at once
    reg.models.tag("c", 2, set_tags={"team": "vision"})
    assert reg.models.get("c@champion").tags == {"team": "vision"}
    assert reg.models.tag("c", 2, remove=["team"]) == {}
    reg.models.describe("c", "the second one", version=2)
    assert reg.models.get("c/2").description == "the second one"
    # a stage move shows through the alias entry too, and the version that lost the alias says so
    reg.models.promote("c", 2, to="production")
    assert reg.models.get("c@champion").stage == "production"
    reg.models.promote("c", 1, to="champion")
    assert reg.models.get("c/2").aliases == () and reg.models.get("c@champion").version == 1


def test_a_lookup_racing_a_promotion_cannot_put_the_old_answer_back(reg):
    """A lookup reads the database, a promotion commits and invalidates, then the lookup writes its (old)
    answer into the cache: that entry must never be served."""
    from mlhub.cache import keys

    reg.version("race", {})
    reg.version("race", {})
    reg.models.promote("race", 1, to="champion")
    t = reg.me.tenant_id
    generation = (reg.cache.get(keys.registry_model(t, "race")) or b"0").decode()  # read before its query
    stale = reg.models.get("race@champion")                  # its (soon old) answer
    reg.models.promote("race", 2, to="champion")             # commits and invalidates
    reg.cache.set_json(keys.registry_alias(t, "race", "champion"),  # the late write
                       {"generation": generation, "info": stale.to_doc()})
    assert reg.models.get("race@champion").version == 2


@pytest.mark.redis
def test_a_promotion_through_one_process_is_seen_at_once_by_another_sharing_redis(db, tmp_path):
    from mlhub.cache.redis_cache import RedisCache

    url = service_url("redis")
    writer = Setup(db, tmp_path, cache=RedisCache(url, default_ttl_s=60.0, timeout_s=2.0))
    reader = RegistryService(db, cache=RedisCache(url, default_ttl_s=60.0, timeout_s=2.0), cache_ttl_s=60.0)
    try:
        writer.version("r", {})
        writer.version("r", {})
        writer.models.promote("r", 1, to="champion")
        assert reader.resolve(writer.me, "r@champion").version == 1   # cached in Redis now
        assert reader.cache.stats["misses"] >= 1
        writer.models.promote("r", 2, to="champion")
        assert reader.resolve(writer.me, "r@champion").version == 2
    finally:
        writer.cache.close()
        reader.cache.close()


def test_delete_is_refused_while_an_alias_or_a_deployment_uses_the_version(reg):
    for _ in range(3):
        reg.version("d", {})
    reg.models.promote("d", 1, to="champion")
    with pytest.raises(ConflictError, match="holds alias champion"):
        reg.models.delete("d", 1)
    info = reg.models.get("d/2")
    with reg.db.tenant_scope(reg.me.tenant_id) as s:
        model_id = s.query(RegisteredModel.id).filter_by(name="d").scalar()
        s.add(Deployment(tenant_id=reg.me.tenant_id, name="d-live", model_id=model_id, version_id=info.id,
                         status="running", config={}))
    with pytest.raises(ConflictError, match="d-live"):
        reg.models.delete("d", 2)
    with pytest.raises(ConflictError, match="d-live"):
        reg.models.delete("d")
    reg.models.delete("d", 3)
    with pytest.raises(NotFoundError, match="was deleted"):
        reg.models.get("d/3")
    assert reg.models.get("d").version == 2                            # latest live version
    assert reg.version("d", {}) == 4                                    # numbers are never reused
    assert [v.version for v in reg.models.versions("d", include_deleted=True)] == [1, 2, 3, 4]


def test_experiments_using_a_version_block_its_deletion(reg):
    from mlhub.store.models import Experiment, ExperimentVariant

    reg.version("ab", {})
    reg.version("ab", {})
    info = reg.models.get("ab/2")
    with reg.db.tenant_scope(reg.me.tenant_id) as s:
        model_id = s.query(RegisteredModel.id).filter_by(tenant_id=reg.me.tenant_id, name="ab").scalar()
        exp = Experiment(tenant_id=reg.me.tenant_id, name="ab-test", status="running", model_id=model_id)
        s.add(exp)
        s.flush()
        s.add(ExperimentVariant(tenant_id=reg.me.tenant_id, experiment_id=exp.id, name="b", version_id=info.id,
                                weight=0.5))
    with pytest.raises(ConflictError, match="experiment ab-test"):
        reg.models.delete("ab", 2)
    with pytest.raises(ConflictError, match="experiment ab-test"):
        reg.models.delete("ab")
    reg.models.delete("ab", 1)  # not in the experiment


def test_gc_spares_bytes_uploaded_again_for_a_new_version(reg):
    """A retrain that produces the very bytes of a deleted version reuses its artifact record: gc must not take
    it away between that upload and the new version's registration."""
    same = b"deterministic model bytes" * 4
    reg.version("det", {}, payload=same)
    reg.models.delete("det", 1)
    with reg.db.tenant_scope(reg.me.tenant_id) as s:  # the old record is old
        s.query(Artifact).filter_by(tenant_id=reg.me.tenant_id).update(
            {"created_at": utcnow() - timedelta(hours=3)})
    again = ArtifactService(reg.db, reg.store).upload(reg.me, same, media_type="application/x-npz", name="det.npz")
    assert reg.models.gc(older_than_s=3600).removed == 0
    assert reg.store.exists(reg.me.tenant_id, again.sha256)


def test_gc_removes_only_model_artifacts_no_live_version_references(reg):
    shared = b"same bytes" * 10
    reg.version("g", {}, payload=shared)
    reg.version("g", {}, payload=shared)          # the same artifact, deduplicated
    reg.version("g", {})                          # its own artifact
    reg.version("g", {})
    doomed = reg.models.get("g/3").artifact_sha256
    reg.models.delete("g", 1)                     # its artifact is still used by version 2
    reg.models.delete("g", 3)
    ArtifactService(reg.db, reg.store).upload(reg.me, b"a plot", media_type="image/png", name="plot.png")
    assert reg.models.gc(older_than_s=3600).removed == 0  # too young
    dry = reg.models.gc(older_than_s=0, dry_run=True)
    assert dry.per_tenant == {reg.me.tenant_id: [doomed]} and reg.store.exists(reg.me.tenant_id, doomed)
    report = reg.models.gc(older_than_s=0)
    assert report.per_tenant == {reg.me.tenant_id: [doomed]}
    assert not reg.store.exists(reg.me.tenant_id, doomed)
    with reg.db.tenant_scope(reg.me.tenant_id, readonly=True) as s:
        kinds = sorted(a.media_type for a in s.query(Artifact).filter_by(tenant_id=reg.me.tenant_id))
    assert kinds == ["application/x-npz", "application/x-npz", "image/png"]
    assert reg.store.exists(reg.me.tenant_id, reg.models.get("g/2").artifact_sha256)
    assert reg.store.exists(reg.me.tenant_id, reg.models.get("g/4").artifact_sha256)


def test_compare_puts_versions_side_by_side_with_their_evaluations(reg):
    reg.version("cmp", {"accuracy": 0.9, "log_loss": 0.3})
    reg.version("cmp", {"accuracy": 0.95, "log_loss": 0.4})
    reg.evaluate("cmp", 2, "holdout", {"accuracy": 0.91})
    reg.models.promote("cmp", 1, to="champion")
    out = reg.models.compare(["cmp@champion", "cmp/2"])
    assert [v.version for v in out.versions] == [1, 2]
    assert out.rows["accuracy"] == [0.9, 0.95] and out.best["accuracy"] == 1
    assert out.best["log_loss"] == 0                 # lower is better
    assert out.rows["eval:holdout:accuracy"] == [None, 0.91] and out.best["eval:holdout:accuracy"] is None
    with pytest.raises(ValidationError):
        reg.models.compare(["cmp/1"])


def test_another_tenant_sees_none_of_it(reg):
    reg.version("secret", {"accuracy": 1.0})
    reg.models.promote("secret", 1, to="champion")
    theirs = Models(reg.registry, reg.other, reg.store)
    for call in (lambda: theirs.get("secret@champion"), lambda: theirs.get("secret/1"),
                 lambda: theirs.promote("secret", 1, to="x"), lambda: theirs.delete("secret", 1),
                 lambda: theirs.history("secret")):
        with pytest.raises(NotFoundError):
            call()
    assert theirs.list() == []


def test_load_gives_a_ready_model_that_checks_inputs_against_its_schema(reg):
    from mlhub.domain.specs import parse_spec
    from mlhub.training import get_adapter, load_dataset

    spec = parse_spec({"kind": "training", "name": "iris", "framework": "sklearn", "model": "logistic_regression",
                       "dataset": {"source": "sklearn", "name": "iris"}})
    data = load_dataset(spec.dataset, allowed_roots=[])
    trained = get_adapter("sklearn").train(spec, data, lambda r: None)
    reg.version("iris", trained.metrics, payload=trained.payload, fmt=trained.model_format, framework="sklearn",
                input_schema=trained.input_schema)
    reg.models.promote("iris", 1, to="champion")
    model = reg.models.load("iris@champion")
    assert model.version == 1 and model.feature_names == [f["name"] for f in trained.input_schema["features"]]
    x = np.asarray(data.x_test[:5])
    assert model.predict(x).tolist() == model.model.predict(x).tolist()
    cols = {n: x[:, i].tolist() for i, n in enumerate(model.feature_names)}
    assert model.predict(cols).tolist() == model.model.predict(x).tolist()
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValidationError, match="row 3"):
        model.predict(bad)
    with pytest.raises(ValidationError, match="expected 4"):
        model.predict([[1.0, 2.0]])


def test_a_version_without_a_schema_still_refuses_bad_input_with_a_typed_error(reg):
    from mlhub.registry.api import ReadyModel

    reg.version("bare", {})
    ready = ReadyModel(reg.models.get("bare/1"), model=None)
    for rows, message in (([["a", "b"]], "not a table of numbers"), ([[1.0, 2.0], [3.0]], "not a table"),
                          ([[1.0, float("nan")]], "rows 0 hold NaN")):
        with pytest.raises(ValidationError, match=message):
            ready.validate(rows)
    assert ready.validate([1.0, 2.0]).shape == (1, 2)
