"""Promotion gates: what a model version must show before it may take an alias or a stage.

A model declares gates; ``mlhub models promote NAME VERSION --to champion`` checks every gate that applies to
the target and refuses with the numbers when one fails. Three kinds, each also written as one line of text:

- threshold:   ``accuracy >= 0.9``                       (``>=``, ``>``, ``<=``, ``<``, ``==``)
- comparison:  ``f1_macro better than champion by 0.01`` (``better``: higher, or lower for loss/error
  metrics such as ``rmse``; ``higher than`` / ``lower than`` say it explicitly; ``by`` defaults to 0)
- evaluation:  ``evaluated on iris``                     (an evaluation job on that dataset exists)

A threshold or comparison may end with ``on DATASET``: its metric is then read from the newest evaluation of
the version on that dataset (which must exist), else from the version's own metrics (its held-out training
metrics), else from its newest evaluation that has the metric. Every gate may end with ``for T1,T2``: the
targets (aliases or stages) it guards; by default ``champion`` and ``production``.

Pure code: no database, no Ray. The registry gathers the :class:`Evidence` and calls :func:`check_gates`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticError

from mlhub.domain.enums import ModelStage
from mlhub.errors import ValidationError

__all__ = ["DEFAULT_TARGETS", "Evidence", "Gate", "GateResult", "check_gates", "finite_number", "lower_is_better",
           "parse_gate", "parse_gates", "validate_alias"]

DEFAULT_TARGETS = ("champion", "production")
ALIAS_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
METRIC_RE = r"^[A-Za-z0-9_.\-/]{1,128}$"
DATASET_RE = r"^[A-Za-z0-9_.\-/ ]{1,256}$"
MAX_GATES = 32
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_LOWER_HINTS = ("loss", "error", "mae", "mse", "rmse", "mape", "log_loss", "latency", "brier", "perplexity", "wer",
                "cer")
_STAGES = frozenset(s.value for s in ModelStage) - {ModelStage.NONE.value}


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is the better one (losses, errors), judged by its name."""
    leaf = metric.rsplit(".", 1)[-1].rsplit(":", 1)[-1].lower()
    if leaf.startswith("neg_"):  # scikit-learn's negated scores (neg_log_loss, ...): higher is better
        return False
    return any(leaf == h or leaf.endswith("_" + h) or leaf.startswith(h + "_") for h in _LOWER_HINTS)


def validate_alias(alias: str) -> str:
    """An alias name: 1-64 of letters, digits, ``_``, ``-``, and not a stage name."""
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias):
        raise ValidationError(f"invalid alias {alias!r}: 1-64 of letters, digits, '_' or '-'")
    if alias in _STAGES or alias == ModelStage.NONE.value:
        raise ValidationError(f"{alias!r} is a stage, not an alias name")
    return alias


class Gate(BaseModel):
    """One gate. Exactly one kind: ``metric`` + ``op`` + ``value`` (threshold), ``metric`` + ``better_than``
    (comparison with the version holding that alias), or ``dataset`` alone (a required evaluation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str | None = Field(None, pattern=METRIC_RE)
    op: Literal[">=", ">", "<=", "<", "=="] | None = None
    value: float | None = None
    better_than: str | None = Field(None, pattern=ALIAS_RE.pattern, description="alias of the incumbent")
    by: float = Field(0.0, ge=0.0, description="comparison: the margin the candidate must win by")
    direction: Literal["higher", "lower"] | None = Field(None, description="comparison: which way is better "
                                                          "(default: lower for loss/error metrics, else higher)")
    dataset: str | None = Field(None, pattern=DATASET_RE, description="read the metric from the newest "
                                "evaluation on this dataset (required to exist)")
    targets: tuple[str, ...] = Field(DEFAULT_TARGETS, min_length=1, max_length=16)

    @model_validator(mode="after")
    def _one_kind(self) -> Gate:
        if self.metric is None:
            if self.op is not None or self.value is not None or self.better_than is not None:
                raise ValueError("a gate with op, value or better_than needs a metric")
            if self.dataset is None:
                raise ValueError("a gate needs a metric (threshold or comparison) or a dataset (evaluation)")
        elif self.better_than is not None:
            if self.op is not None or self.value is not None:
                raise ValueError("a comparison gate (better_than) takes no op or value")
        elif self.op is None or self.value is None:
            raise ValueError(f"gate on {self.metric!r} needs op and value, or better_than")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError("gate value must be finite")
        if not math.isfinite(self.by):
            raise ValueError("gate margin must be finite")
        for t in self.targets:
            if not ALIAS_RE.fullmatch(t):
                raise ValueError(f"invalid gate target {t!r}")
        return self

    @property
    def kind(self) -> str:
        if self.metric is None:
            return "evaluation"
        return "comparison" if self.better_than is not None else "threshold"

    @property
    def better(self) -> str:
        if self.direction:
            return self.direction
        return "lower" if self.metric and lower_is_better(self.metric) else "higher"

    def applies_to(self, target: str) -> bool:
        return target in self.targets

    def __str__(self) -> str:
        on = f" on {self.dataset}" if self.dataset else ""
        for_ = "" if tuple(self.targets) == DEFAULT_TARGETS else f" for {','.join(self.targets)}"
        if self.kind == "evaluation":
            return f"evaluated on {self.dataset}{for_}"
        if self.kind == "threshold":
            return f"{self.metric} {self.op} {_num(self.value)}{on}{for_}"
        how = f"{self.direction} than" if self.direction else "better than"
        by = f" by {_num(self.by)}" if self.by else ""
        return f"{self.metric} {how} {self.better_than}{by}{on}{for_}"


_TEXT = re.compile(
    r"^\s*(?:"
    r"evaluated\s+on\s+(?P<eval_ds>.+?)"
    r"|(?P<metric>[A-Za-z0-9_.\-/]+)\s*(?:"
    r"(?P<op>>=|<=|==|>|<)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|\s(?P<how>better|higher|lower)\s+than\s+(?P<alias>[A-Za-z0-9_\-]+)"
    r"(?:\s+by\s+(?P<by>[+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))?"
    r")(?:\s+on\s+(?P<ds>.+?))?"
    r")(?:\s+for\s+(?P<targets>[A-Za-z0-9_\-]+(?:\s*,\s*[A-Za-z0-9_\-]+)*))?\s*$"
)


def parse_gate(text: str | Mapping[str, Any] | Gate) -> Gate:
    """A gate from its one-line text (see the module doc), a dict of :class:`Gate` fields, or a Gate."""
    if isinstance(text, Gate):
        return text
    try:
        if isinstance(text, Mapping):
            return Gate.model_validate(dict(text))
        if not isinstance(text, str) or len(text) > 512:
            raise ValidationError(f"a gate is a line of text or a mapping, got {type(text).__name__}")
        m = _TEXT.fullmatch(text)
        if m is None:
            raise ValidationError(
                f"cannot read gate {text!r}: write 'METRIC >= VALUE', 'METRIC better than ALIAS [by MARGIN]' or "
                "'evaluated on DATASET', each optionally followed by 'on DATASET' and 'for TARGET,...'")
        doc: dict[str, Any] = {}
        if m["targets"]:
            doc["targets"] = tuple(t.strip() for t in m["targets"].split(","))
        if m["eval_ds"]:
            return Gate(dataset=m["eval_ds"].strip(), **doc)
        doc.update(metric=m["metric"], dataset=m["ds"].strip() if m["ds"] else None)
        if m["op"]:
            return Gate(op=m["op"], value=float(m["value"]), **doc)
        return Gate(better_than=m["alias"], by=float(m["by"] or 0.0),
                    direction=None if m["how"] == "better" else m["how"], **doc)
    except PydanticError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'gate'}: {e['msg']}" for e in exc.errors())
        raise ValidationError(f"invalid gate {text!r}: {problems}") from None


def parse_gates(items: Sequence[str | Mapping[str, Any] | Gate]) -> list[Gate]:
    """Every gate of a list, or one ValidationError naming every bad one."""
    if len(items) > MAX_GATES:
        raise ValidationError(f"at most {MAX_GATES} gates per model, got {len(items)}")
    gates, problems = [], []
    for i, item in enumerate(items):
        try:
            gates.append(parse_gate(item))
        except ValidationError as exc:
            problems.append(f"gate {i + 1}: {exc.message}")
    if problems:
        raise ValidationError("; ".join(problems), details={"errors": problems})
    return gates


@dataclass(frozen=True)
class Evidence:
    """What is known of one version: its own metrics and its newest evaluation per dataset (newest first)."""

    version: int
    metrics: Mapping[str, Any] = field(default_factory=dict)
    evaluations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def metric_from(self, name: str, source: str) -> float | None:
        """The metric from one named source: ``"training metrics"`` or ``"evaluation on DATASET"``."""
        if source == "training metrics":
            return finite_number(self.metrics.get(name))
        dataset = source.removeprefix("evaluation on ")
        return finite_number((self.evaluations.get(dataset) or {}).get(name))

    def metric(self, name: str, dataset: str | None) -> tuple[float | None, str]:
        """``(value, where it came from)``; value None when the version has no such number."""
        if dataset is not None:
            ev = self.evaluations.get(dataset)
            if ev is None:
                return None, f"no evaluation on {dataset}"
            return finite_number(ev.get(name)), f"evaluation on {dataset}"
        own = finite_number(self.metrics.get(name))
        if own is not None:
            return own, "training metrics"
        for ds, ev in self.evaluations.items():
            v = finite_number(ev.get(name))
            if v is not None:
                return v, f"evaluation on {ds}"
        return None, "no such metric"


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    detail: str
    observed: float | None = None
    required: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "detail": self.detail, "observed": self.observed,
                "required": self.required}


def check_gates(gates: Sequence[Gate], target: str, candidate: Evidence,
                incumbents: Mapping[str, Evidence | None]) -> list[GateResult]:
    """The verdict of every gate that guards ``target``. ``incumbents`` maps each alias a comparison gate
    names to the evidence of the version holding it (None: nobody holds it, and the comparison passes)."""
    return [_check(g, candidate, incumbents) for g in gates if g.applies_to(target)]


def _check(g: Gate, cand: Evidence, incumbents: Mapping[str, Evidence | None]) -> GateResult:
    name = str(g)
    if g.kind == "evaluation":
        ev = cand.evaluations.get(g.dataset or "")
        if ev is None:
            return GateResult(name, False, f"version {cand.version} has no evaluation on {g.dataset}: run "
                                           f"`mlhub evaluate` on it first")
        return GateResult(name, True, f"version {cand.version} was evaluated on {g.dataset}")
    value, source = cand.metric(g.metric or "", g.dataset)
    if value is None:
        return GateResult(name, False, f"version {cand.version} has no {g.metric} ({source})")
    if g.kind == "threshold":
        ok = _OPS[g.op or ">="](value, g.value)
        return GateResult(name, bool(ok), f"{g.metric} = {_num(value)} ({source}), needs {g.op} {_num(g.value)}",
                          observed=value, required=g.value)
    holder = incumbents.get(g.better_than or "")
    if holder is None:
        return GateResult(name, True, f"nobody holds {g.better_than}: nothing to beat", observed=value)
    if holder.version == cand.version:
        return GateResult(name, True, f"version {cand.version} already holds {g.better_than}", observed=value)
    theirs = holder.metric_from(g.metric or "", source)  # like with like: the same source on both sides
    if theirs is None:
        return GateResult(name, False, f"{g.metric} = {_num(value)} ({source}), but {g.better_than} (version "
                                       f"{holder.version}) has no {g.metric} from {source} to compare with: "
                                       f"evaluate it the same way, or change the gate", observed=value)
    gain = value - theirs if g.better == "higher" else theirs - value
    need = theirs + g.by if g.better == "higher" else theirs - g.by
    return GateResult(name, gain >= g.by - 1e-12,
                      f"{g.metric} = {_num(value)} vs {_num(theirs)} for {g.better_than} (version "
                      f"{holder.version}): {'+' if gain >= 0 else ''}{_num(gain)}, needs {g.better} by "
                      f">= {_num(g.by)}", observed=value, required=need)


def finite_number(v: Any) -> float | None:
    """``v`` as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _num(v: float | None) -> str:
    return "?" if v is None else f"{v:.6g}"
