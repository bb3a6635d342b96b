"""The inference app's pure parts: error answers, outcome bodies, batch scoring per model."""

from __future__ import annotations

import numpy as np
import pytest

from mlhub.errors import (
    AuthenticationError,
    BackendUnavailable,
    ModelLoadError,
    NotFoundError,
    ValidationError,
)
from mlhub.serving.payload import PayloadError
from serve_apps.inference import _outcome_items, _score_batch, error_body


@pytest.mark.parametrize("exc, status, code", [
    (PayloadError("x", status=413), 413, "bad_payload"),
    (ValidationError("x", details={"errors": []}), 422, "validation_failed"),
    (AuthenticationError("x"), 401, "unauthenticated"),
    (NotFoundError("x"), 404, "not_found"),
    (BackendUnavailable("x"), 503, "backend_unavailable"),
    (ModelLoadError("x"), 503, "model_load_failed"),  # the server's problem, not the caller's
    (RuntimeError("secret detail"), 500, "internal"),
])
def test_errors_become_json_with_their_status(exc, status, code):
    got_status, body = error_body(exc)
    assert got_status == status and body["error"]["code"] == code
    assert "secret detail" not in str(body)


def test_outcome_bodies_one_or_many_and_refused_when_malformed():
    assert _outcome_items(b'{"key": "a", "value": 1}') == [("a", 1.0)]
    assert _outcome_items(b'{"outcomes": [{"key": 7, "value": true}, {"key": "b", "value": 0.5}]}') == [
        ("7", 1.0), ("b", 0.5)]
    for raw in (b"{", b"[]", b'{"outcomes": []}', b'{"key": "a"}', b'{"key": "a", "value": "x"}',
                b'{"key": "a", "value": NaN}', b'{"key": "", "value": 1}', b'{"key": "a", "value": 1, "x": 2}'):
        with pytest.raises(PayloadError):
            _outcome_items(raw)


class Doubler:
    def __init__(self) -> None:
        self.calls = 0

    def predict(self, x):
        self.calls += 1
        return x[:, 0] * 2


class Ready:
    def __init__(self, model) -> None:
        self.model = model


def test_a_batch_scores_each_model_once_and_splits_the_answers_back():
    a, b = Ready(Doubler()), Ready(Doubler())
    items = [(a, np.array([[1.0], [2.0]]), False), (b, np.array([[5.0]]), False), (a, np.array([[3.0]]), False)]
    out = _score_batch(items)
    assert [o.tolist() for o in out] == [[2.0, 4.0], [10.0], [6.0]]
    assert a.model.calls == 1 and b.model.calls == 1
    broken = Ready(object())  # no predict: its requests get the error, the others their answers
    out = _score_batch([(broken, np.array([[1.0]]), False), (a, np.array([[1.0]]), False)])
    assert isinstance(out[0], AttributeError) and out[1].tolist() == [2.0]
