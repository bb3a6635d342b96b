"""Cache keys: tenant-namespaced, and no two different inputs ever share a key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlhub.cache import keys
from mlhub.errors import ValidationError

tenant_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
# Names a user could type, with the characters that matter for forging keys made frequent.
names = st.text(
    alphabet=st.sampled_from(["a", "b", ":", "%", "3", "A", "/", " ", "é"]), min_size=1
) | st.text(min_size=1)
ids = st.integers(min_value=0, max_value=2**63)


def test_every_key_lives_under_its_tenant_prefix():
    made = [
        keys.registry_model("acme", "churn"),
        keys.registry_alias("acme", "churn", "prod"),
        keys.registry_version("acme", "churn", 3),
        keys.job_status("acme", 42),
        keys.prediction("acme", 7, "ab12"),
    ]
    assert keys.tenant_prefix("acme") == "mlhub:v1:t:acme:"
    assert all(k.startswith("mlhub:v1:t:acme:") for k in made)
    assert len(set(made)) == len(made)


def test_separators_in_user_names_are_encoded():
    assert keys.registry_alias("acme", "a:b", "c") == "mlhub:v1:t:acme:reg:alias:a%3Ab:c"
    assert keys.registry_alias("acme", "a", "b:c") == "mlhub:v1:t:acme:reg:alias:a:b%3Ac"
    # "%" itself is encoded, so a name cannot spell out a pre-encoded separator.
    assert keys.registry_alias("acme", "a%3Ab", "c") == "mlhub:v1:t:acme:reg:alias:a%253Ab:c"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("acme", "a:b", "c"), ("acme", "a", "b:c")),
        (("acme", "a%3Ab", "c"), ("acme", "a:b", "c")),
        (("acme", "x", "y:reg:alias:x"), ("acme", "x:y", "reg:alias:x")),
        (("a", "b:reg:alias:m", "x"), ("a", "b", "reg:alias:m:x")),
    ],
)
def test_adversarial_names_do_not_collide(first, second):
    assert keys.registry_alias(*first) != keys.registry_alias(*second)


def test_a_model_name_cannot_reach_into_another_tenant():
    # Tenant "a" naming its model to look like tenant "a:evil"'s path stays under "a"'s prefix only.
    key = keys.registry_model("a", "x:mlhub:v1:t:evil:reg:model:m")
    assert key.startswith(keys.tenant_prefix("a"))
    assert key.count(":") == keys.registry_model("a", "m").count(":")


@pytest.mark.parametrize("bad", ["", "a:b", "-a", "_a", "a b", "a" * 65, "acme\n", "é", None, 7])
def test_invalid_tenant_ids_are_refused(bad):
    with pytest.raises(ValidationError):
        keys.tenant_prefix(bad)
    with pytest.raises(ValidationError):
        keys.registry_alias(bad, "m", "prod")


@pytest.mark.parametrize("bad", [-1, True, "3", 1.0, None])
def test_numeric_components_must_be_non_negative_ints(bad):
    with pytest.raises(ValidationError):
        keys.registry_version("acme", "m", bad)
    with pytest.raises(ValidationError):
        keys.job_status("acme", bad)


@pytest.mark.parametrize("bad", ["", None, b"m", "\ud800"])
def test_names_must_be_non_empty_text(bad):
    with pytest.raises(ValidationError):
        keys.registry_model("acme", bad)


@given(tenant_ids, names, names, tenant_ids, names, names)
def test_distinct_alias_triples_never_share_a_key(t1, m1, a1, t2, m2, a2):
    if (t1, m1, a1) != (t2, m2, a2):
        assert keys.registry_alias(t1, m1, a1) != keys.registry_alias(t2, m2, a2)


@given(tenant_ids, names, names)
def test_keys_split_back_into_their_components(tenant, model, alias):
    # Injectivity made visible: the only ":" are separators, so the parts are recoverable.
    from urllib.parse import unquote

    parts = keys.registry_alias(tenant, model, alias).split(":")
    assert parts[:4] == ["mlhub", "v1", "t", tenant]
    assert [unquote(p) for p in parts[6:]] == [model, alias]
    assert len(parts) == 8


@given(tenant_ids, tenant_ids, names, ids, ids, names)
def test_keys_of_one_tenant_never_fall_under_another_tenants_prefix(t1, t2, model, version, job, digest):
    made = [
        keys.registry_model(t1, model),
        keys.registry_alias(t1, model, model),
        keys.registry_version(t1, model, version),
        keys.job_status(t1, job),
        keys.prediction(t1, version, digest),
    ]
    for key in made:
        assert key.startswith(keys.tenant_prefix(t1))
        if t1 != t2:
            assert not key.startswith(keys.tenant_prefix(t2))


@given(tenant_ids, names, ids, ids, names)
def test_different_kinds_never_share_a_key(tenant, model, version, job, digest):
    made = [
        keys.registry_model(tenant, model),
        keys.registry_alias(tenant, model, str(version)),
        keys.registry_version(tenant, model, version),
        keys.job_status(tenant, job),
        keys.prediction(tenant, version, digest),
    ]
    assert len(set(made)) == len(made)
