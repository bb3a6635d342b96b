"""The registry as the Python API gives it: ``Hub().models``.

::

    hub = Hub()
    model = hub.models.load("iris@champion")     # a ReadyModel: verified bytes, safe format, its schema
    model.predict([[5.1, 3.5, 1.4, 0.2]])         # rows checked against model.input_schema first
    hub.models.promote("iris", 3, to="champion")  # through the model's gates (PromotionRefused if one fails)
    hub.models.rollback("iris", alias="champion")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlhub.audit import Principal
from mlhub.errors import ValidationError
from mlhub.registry.rows import VersionInfo

__all__ = ["Models", "ReadyModel"]

_SHOWN_ERRORS = 10


class ReadyModel:
    """A registered model version loaded and ready to predict. Inputs (a DataFrame matched by column name, a
    list of rows, a 2-D array, or a dict of columns) are checked against ``input_schema`` first: a wrong width,
    a missing column, text, NaN where the feature is not nullable or an infinity raises
    :class:`~mlhub.errors.ValidationError` naming the rows, and nothing is predicted."""

    def __init__(self, info: VersionInfo, model: Any) -> None:
        self.info = info
        self.model = model

    @property
    def version(self) -> int:
        return self.info.version

    @property
    def input_schema(self) -> dict[str, Any] | None:
        return self.info.input_schema

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in (self.input_schema or {}).get("features", [])]

    @property
    def classes(self) -> list | None:
        return getattr(self.model, "classes", None)

    def __repr__(self) -> str:
        return (f"ReadyModel({self.info.model}/{self.info.version}, {self.info.framework}, "
                f"features={len(self.feature_names)})")

    def validate(self, rows: Any) -> np.ndarray:
        """The rows as a float matrix in schema order; ValidationError listing the bad rows otherwise."""
        from mlhub.training.schema import check_rows

        if self.input_schema is None or "features" not in self.input_schema:
            return _plain_matrix(rows, self.info.ref)
        fast = _clean_rows(rows, len(self.input_schema["features"]))
        if fast is not None:
            return fast
        if isinstance(rows, Mapping):
            import pandas as pd

            try:
                rows = pd.DataFrame(dict(rows))
            except ValueError as exc:
                raise ValidationError(f"columns of different lengths: {exc}") from None
        errors, bad, x = check_rows(self.input_schema, rows)
        if x is None or bad.any():
            shown = "; ".join(str(e) for e in errors[:_SHOWN_ERRORS])
            more = f" (and {len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
            raise ValidationError(f"input does not match the schema of {self.info.ref}: {shown}{more}",
                                  details={"errors": [e.to_dict() for e in errors[:100]],
                                           "features": self.feature_names})
        return x

    def predict(self, rows: Any) -> np.ndarray:
        return np.asarray(self.model.predict(self.validate(rows)))

    def predict_proba(self, rows: Any) -> np.ndarray:
        if not hasattr(self.model, "predict_proba"):
            raise ValidationError(f"{self.info.ref} ({self.info.framework}) gives no probabilities")
        return np.asarray(self.model.predict_proba(self.validate(rows)))


def _clean_rows(rows: Any, width: int) -> np.ndarray | None:
    """The common case on a serving path, without the per-column checks: a list of rows of ``width`` plain
    numbers, all finite. Anything else (``None`` returned) goes through the full check, which names bad cells."""
    if not isinstance(rows, list) or not rows:
        return None
    try:
        for row in rows:  # exact types, tested in C: bools, strings, None and numpy scalars go to the full check
            if type(row) is not list or len(row) != width or not _PLAIN_NUMBERS.issuperset(map(type, row)) \
                    or not math.isfinite(sum(row)):  # a NaN or an infinity makes the sum one (so may overflow)
                return None
        return np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer past float64's range: the full check reports it
        return None


_PLAIN_NUMBERS = frozenset({float, int})


def _plain_matrix(rows: Any, ref: str) -> np.ndarray:
    """Rows for a version registered without a schema: still a finite 2-D float matrix, or a ValidationError."""
    try:
        x = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"input for {ref} is not a table of numbers: {exc}") from None
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise ValidationError(f"input for {ref} must be rows of numbers (2-D), got {x.ndim}-D")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ValidationError(f"input for {ref}: rows {', '.join(map(str, bad[:10]))} hold NaN or infinite values")
    return x


class Models:
    """The registry, acting as one tenant (``Hub().models``). Every method is a thin call of
    :class:`~mlhub.registry.service.RegistryService` with the hub's principal."""

    def __init__(self, service, principal: Principal, artifacts) -> None:
        self.service = service
        self.principal = principal
        self.artifacts = artifacts

    def list(self):
        return self.service.list_models(self.principal)

    def show(self, name: str):
        return self.service.show(self.principal, name)

    def versions(self, name: str, *, include_deleted: bool = False) -> list[VersionInfo]:
        return self.service.versions(self.principal, name, include_deleted=include_deleted)

    def get(self, ref: str) -> VersionInfo:
        """``name``, ``name@alias`` or ``name/VERSION`` -> the version record (cached lookups)."""
        return self.service.resolve(self.principal, ref)

    def load(self, ref: str) -> ReadyModel:
        info, model = self.service.load(self.principal, ref, self.artifacts)
        return ReadyModel(info, model)

    def evaluations(self, ref: str, *, dataset: str | None = None):
        return self.service.evaluations(self.principal, ref, dataset=dataset)

    def set_gates(self, name: str, gates: Sequence[str | dict]):
        return self.service.set_gates(self.principal, name, gates)

    def check(self, name: str, version: int, to: str):
        return self.service.check_promotion(self.principal, name, version, to)

    def promote(self, name: str, version: int, to: str, *, reason: str | None = None, force: bool = False):
        return self.service.promote(self.principal, name, version, to, reason=reason, force=force)

    def rollback(self, name: str, alias: str = "champion", *, reason: str | None = None):
        return self.service.rollback(self.principal, name, alias, reason=reason)

    def history(self, name: str, *, target: str | None = None, limit: int = 100):
        return self.service.history(self.principal, name, target=target, limit=limit)

    def tag(self, name: str, version: int | None = None, *, set_tags: Mapping[str, Any] | None = None,
            remove: Sequence[str] = ()):
        return self.service.tag(self.principal, name, version, set_tags=set_tags, remove=remove)

    def describe(self, name: str, text: str, version: int | None = None) -> None:
        self.service.describe(self.principal, name, text, version)

    def delete(self, name: str, version: int | None = None):
        if version is None:
            return self.service.delete_model(self.principal, name)
        return self.service.delete_version(self.principal, name, version)

    def compare(self, refs: Sequence[str]):
        return self.service.compare(self.principal, list(refs))

    def gc(self, *, older_than_s: float = 3600.0, dry_run: bool = False):
        """Remove this tenant's model artifacts that no live version references."""
        return self.service.collect_garbage(self.artifacts, older_than_s=older_than_s, dry_run=dry_run,
                                            tenant_id=self.principal.tenant_id)
