"""load_model never runs code from a payload: pickle is refused in every format, skops only loads allow-listed
types (passed as an explicit list), npz is read without pickle. Each hostile payload is first shown to be live."""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile

import numpy as np
import pytest
import skops.io as sio
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mlhub.errors import ModelLoadError
from mlhub.training.serialization import allowed_skops_types, load_model

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
Y = np.array([0, 1, 0, 1])


class _Boom:
    """Unpickling this runs ``exec``, which writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class _Setter:
    """skops restores this through ``__setstate__``, which writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        with open(state["marker"], "w") as f:
            f.write("pwned")
        self.__dict__.update(state)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "marker"


def _pickle_payload(marker, wrap):
    raw = pickle.dumps(_Boom(marker))
    pickle.loads(raw)  # the payload is live: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    return gzip.compress(raw) if wrap == "gzip" else raw


FORMATS = [("baseline", "npz"), ("sklearn", "skops"), ("sklearn", "pickle"), ("sklearn", "joblib"),
           ("baseline", "pkl"), ("sklearn", "npz"), ("baseline", "skops"), ("torch", "pt"),
           ("tensorflow", "keras"), ("sklearn", "cloudpickle"), ("sklearn", "")]


@pytest.mark.parametrize("wrap", ["plain", "gzip"])
@pytest.mark.parametrize(("framework", "fmt"), FORMATS)
def test_pickle_is_refused_in_every_format(marker, wrap, framework, fmt):
    payload = _pickle_payload(marker, wrap)
    with pytest.raises(ModelLoadError):
        load_model(framework, fmt, payload)
    assert not marker.exists()


def test_npz_with_a_pickled_object_array_is_refused(marker):
    buf = io.BytesIO()
    np.savez(buf, kind=np.array("logistic"), weights=np.array([_Boom(marker)], dtype=object), bias=np.zeros(2),
             mean=np.zeros(2), std=np.ones(2), classes=np.array([0, 1]))
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=True) as z:
        z["weights"]  # live with pickle allowed
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelLoadError, match="cannot read npz model"):
        load_model("baseline", "npz", buf.getvalue())
    assert not marker.exists()


def _live_skops(obj, marker) -> bytes:
    payload = sio.dumps(obj)
    sio.loads(payload, trusted=sio.get_untrusted_types(data=payload))  # live when trusted
    assert marker.exists()
    marker.unlink()
    return payload


def test_skops_archive_with_an_untrusted_type_is_refused(marker):
    payload = _live_skops(_Setter(marker), marker)
    with pytest.raises(ModelLoadError, match="outside the allow-list: .*_Setter") as e:
        load_model("sklearn", "skops", payload)
    assert any(t.endswith("_Setter") for t in e.value.details["untrusted_types"])
    assert not marker.exists()


def test_untrusted_type_nested_in_an_allowed_estimator_is_refused(marker):
    est = LogisticRegression().fit(X, Y)
    est.extra = _Setter(marker)
    payload = _live_skops(est, marker)
    with pytest.raises(ModelLoadError, match="_Setter"):
        load_model("sklearn", "skops", payload)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [KMeans(n_clusters=2, n_init=1).fit(X), FunctionTransformer(func=eval),
                                 Pipeline([("pca", PCA(1)), ("model", LogisticRegression())]).fit(X, Y)],
                         ids=["kmeans", "eval-function", "pca-pipeline"])
def test_types_outside_mlhubs_allow_list_are_refused_even_if_skops_trusts_them(obj):
    with pytest.raises(ModelLoadError, match="outside the allow-list"):
        load_model("sklearn", "skops", sio.dumps(obj))


def test_loads_gets_an_explicit_trusted_list(monkeypatch):
    from sklearn.ensemble import RandomForestClassifier

    seen = []
    real = sio.loads

    def spy(data, trusted=None):
        seen.append(trusted)
        return real(data, trusted=trusted)

    monkeypatch.setattr(sio, "loads", spy)
    model = load_model("sklearn", "skops", sio.dumps(RandomForestClassifier(n_estimators=2).fit(X, Y)))
    assert seen == [["sklearn.tree._tree.Tree"]]
    assert model.predict(X).shape == (4,)
    assert all(isinstance(t, str) for t in allowed_skops_types())
    assert not any(t.startswith(("builtins.eval", "builtins.exec", "os.", "posix.", "subprocess."))
                   for t in allowed_skops_types())


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("payload", [b"", b"not a model", b"PK\x03\x04garbage", _zip({"x.txt": b"hi"}),
                                     _zip({"schema.json": b"{not json"})],
                         ids=["empty", "text", "bad-zip", "no-schema", "bad-schema"])
def test_corrupt_skops_is_a_model_load_error(payload):
    with pytest.raises(ModelLoadError):
        load_model("sklearn", "skops", payload)


def test_truncated_skops_is_a_model_load_error():
    payload = sio.dumps(LogisticRegression().fit(X, Y))
    with pytest.raises(ModelLoadError):
        load_model("sklearn", "skops", payload[: len(payload) // 2])


def _npz(**arrays) -> bytes:
    base = {"kind": np.array("logistic"), "weights": np.zeros((2, 2)), "bias": np.zeros(2), "mean": np.zeros(2),
            "std": np.ones(2), "classes": np.array([0, 1])}
    base.update(arrays)
    buf = io.BytesIO()
    np.savez(buf, **{k: v for k, v in base.items() if v is not None})
    return buf.getvalue()


def test_well_formed_npz_loads_and_bad_ones_do_not():
    model = load_model("baseline", "npz", _npz())
    assert model.predict(X).shape == (4,) and model.predict_proba(X).shape == (4, 2)
    for bad, match in [(_npz(extra=np.zeros(1)), "expected"), (_npz(bias=None), "expected"),
                       (_npz(weights=np.zeros((3, 2))), "inconsistent shapes"),
                       (_npz(kind=np.array("tree")), "unknown baseline model kind"),
                       (_npz(mean=np.zeros(2, dtype=np.int64)), "plain float arrays")]:
        with pytest.raises(ModelLoadError, match=match):
            load_model("baseline", "npz", bad)


def test_non_bytes_payload_is_refused():
    with pytest.raises(ModelLoadError, match="must be bytes"):
        load_model("baseline", "npz", "PK")  # type: ignore[arg-type]
