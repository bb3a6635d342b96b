"""Traffic routing of experiments, as pure functions: sticky hash buckets, weighted choice, variant
specifications, and the canary ramp with its rollback rule.

Assignment: a request key falls into bucket ``u = sha256("<experiment id>:<key>")[:8] / 2**64`` in ``[0, 1)``,
the same in every process and after every restart; the live variants own consecutive slices of ``[0, 1)``
in proportion to their weights (in the order given), and ``u`` picks the slice. Shadow variants own no slice:
they get a copy of every request and their answers are discarded.

Canary: the canary variant owns ``[0, share)`` and the others split ``[share, 1)`` by their weights, so raising
the share only ever moves keys from the stable variants onto the canary, never back, and never between stable
variants: a key stays sticky through the whole ramp. The ramp advances one step when the current step has run
``step_s`` seconds with at least ``min_requests`` requests on the canary and no breach; it rolls back as soon as
the canary's error rate or p99 latency over the current step breaches its threshold (judged once the step has
``min_requests`` requests); after the last step has run its time cleanly the rollout is complete.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["CanaryDecision", "CanaryHealth", "CanaryPolicy", "VariantSpec", "bucket", "canary_weights", "choose",
           "decide_canary", "parse_variant", "p99_rank", "validate_variants"]

VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
WEIGHT_TOLERANCE = 1e-6
_SPEC = re.compile(r"^(?P<name>[^=]+)=(?P<version>[0-9]+)(?::(?P<weight>[0-9]*\.?[0-9]+(?:[eE]-?[0-9]+)?))?$")


def bucket(experiment_id: int, key: str) -> float:
    """The key's stable position in ``[0, 1)`` for this experiment (sha256: the same in every process)."""
    digest = hashlib.sha256(f"{experiment_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def choose(slices: Sequence[tuple[str, float]], u: float) -> str:
    """The variant whose slice holds ``u``; ``slices`` are ``(name, weight)`` with weights summing to 1."""
    if not slices:
        raise ValueError("no live variant to choose from")
    edge = 0.0
    for name, weight in slices:
        edge += weight
        if u < edge:
            return name
    # u lies in the last sliver lost to rounding: the last variant with any weight
    return next(name for name, weight in reversed(slices) if weight > 0)


# --- variant specifications ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantSpec:
    """A variant as a user declares it: a name, a version number of the experiment's model, a weight (None:
    an equal share of what the others leave), and whether it only shadows traffic."""

    name: str
    version: int
    weight: float | None = None
    shadow: bool = False


def parse_variant(text: str) -> VariantSpec:
    """``NAME=VERSION`` or ``NAME=VERSION:WEIGHT`` (e.g. ``control=3``, ``treatment=4:0.5``)."""
    m = _SPEC.match(text.strip())
    if m is None:
        raise ValueError(f"bad variant {text!r}: use NAME=VERSION or NAME=VERSION:WEIGHT, e.g. control=3 or "
                         "treatment=4:0.5")
    weight = float(m["weight"]) if m["weight"] is not None else None
    return VariantSpec(m["name"].strip(), int(m["version"]), weight)


def validate_variants(specs: Sequence[VariantSpec]) -> list[VariantSpec]:
    """Check names, versions and weights; return the variants with every weight filled in.

    Live variants' weights must sum to 1: variants without a weight share what the others leave equally.
    Shadow variants get weight 0 (they receive copies). At least two variants, at least one of them live.
    """
    if len(specs) < 2:
        raise ValueError("an experiment needs at least two variants")
    seen: set[str] = set()
    for s in specs:
        if not isinstance(s.name, str) or not VARIANT_NAME.match(s.name):
            raise ValueError(f"invalid variant name {s.name!r}: 1-64 lowercase letters, digits, '-' or '_'")
        if s.name in seen:
            raise ValueError(f"variant {s.name!r} is named twice")
        seen.add(s.name)
        if isinstance(s.version, bool) or not isinstance(s.version, int) or s.version < 1:
            raise ValueError(f"variant {s.name!r}: version must be a positive integer, got {s.version!r}")
        if s.weight is not None and (not math.isfinite(s.weight) or not 0 <= s.weight <= 1):
            raise ValueError(f"variant {s.name!r}: weight must be between 0 and 1, got {s.weight}")
        if s.shadow and s.weight:
            raise ValueError(f"variant {s.name!r} shadows traffic: it takes no weight")
    live = [s for s in specs if not s.shadow]
    if not live:
        raise ValueError("an experiment needs at least one live (non-shadow) variant")
    given = sum(s.weight for s in live if s.weight is not None)
    unset = [s for s in live if s.weight is None]
    if given > 1 + WEIGHT_TOLERANCE:
        raise ValueError(f"the live variants' weights sum to {given:g}, more than 1")
    if not unset and abs(given - 1) > WEIGHT_TOLERANCE:
        raise ValueError(f"the live variants' weights sum to {given:g}: they must sum to 1")
    share = (1 - given) / len(unset) if unset else 0.0
    if unset and share <= 0:
        raise ValueError(f"variants {', '.join(s.name for s in unset)} have no weight left (the others take 1)")
    return [VariantSpec(s.name, s.version, 0.0 if s.shadow else (s.weight if s.weight is not None else share),
                        s.shadow) for s in specs]


# --- canary --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryPolicy:
    """The ramp (``steps``: the canary's share at each step, increasing, in (0, 1]), how long each step lasts,
    and the thresholds that roll it back: the canary's error rate (share of answers >= 500) and p99 latency."""

    variant: str
    steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)
    step_s: float = 300.0
    max_error_rate: float = 0.05
    max_p99_ms: float | None = None
    min_requests: int = 20

    def __post_init__(self) -> None:
        steps = tuple(float(s) for s in self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps:
            raise ValueError("a canary needs at least one step")
        if any(not math.isfinite(s) or not 0 < s <= 1 for s in steps):
            raise ValueError(f"canary steps are shares in (0, 1], got {list(steps)}")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"canary steps must increase, got {list(steps)}")
        if not math.isfinite(self.step_s) or self.step_s < 0:
            raise ValueError(f"step_s must be >= 0 seconds, got {self.step_s}")
        if not 0 <= self.max_error_rate < 1:
            raise ValueError(f"max_error_rate must be in [0, 1), got {self.max_error_rate}")
        if self.max_p99_ms is not None and not (math.isfinite(self.max_p99_ms) and self.max_p99_ms > 0):
            raise ValueError(f"max_p99_ms must be a positive number of milliseconds, got {self.max_p99_ms}")
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int) or self.min_requests < 1:
            raise ValueError(f"min_requests must be a positive integer, got {self.min_requests!r}")

    def to_doc(self) -> dict:
        return {"variant": self.variant, "steps": list(self.steps), "step_s": self.step_s,
                "max_error_rate": self.max_error_rate, "max_p99_ms": self.max_p99_ms,
                "min_requests": self.min_requests}

    @classmethod
    def from_doc(cls, doc: dict) -> CanaryPolicy:
        return cls(doc["variant"], tuple(doc.get("steps") or ()), float(doc.get("step_s", 300.0)),
                   float(doc.get("max_error_rate", 0.05)),
                   None if doc.get("max_p99_ms") is None else float(doc["max_p99_ms"]),
                   int(doc.get("min_requests", 20)))


def canary_weights(slices: Sequence[tuple[str, float]], canary: str, share: float) -> list[tuple[str, float]]:
    """The slices at a canary share: the canary first with ``share``, the others (in order) splitting the rest
    by their declared weights (equally when those are all 0)."""
    others = [(n, w) for n, w in slices if n != canary]
    if len(others) == len(slices):
        raise ValueError(f"canary variant {canary!r} is not a live variant")
    if not others:
        return [(canary, 1.0)]
    total = sum(w for _, w in others)
    rest = 1.0 - share
    spread = [(n, rest * (w / total if total > 0 else 1 / len(others))) for n, w in others]
    return [(canary, share), *spread]


@dataclass(frozen=True)
class CanaryHealth:
    """What the canary did during the current step (from the prediction log)."""

    requests: int
    errors: int
    p99_ms: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class CanaryDecision:
    action: Literal["hold", "advance", "complete", "rollback"]
    step: int        # the step the experiment is at after this decision
    reason: str


def p99_rank(n: int) -> int:
    """The 1-based rank FROM THE TOP of the nearest-rank 99th percentile of ``n`` values (1 for n <= 100)."""
    if n < 1:
        raise ValueError("no values")
    return n - (99 * n + 99) // 100 + 1  # ceil(0.99 n) in integers (0.99 * 100 is not 99 in floats)


def decide_canary(policy: CanaryPolicy, step: int, elapsed_s: float, health: CanaryHealth) -> CanaryDecision:
    """What to do at ``step`` after ``elapsed_s`` seconds in it, given the canary's health over that step."""
    if not 0 <= step < len(policy.steps):
        raise ValueError(f"step {step} is outside the ramp of {len(policy.steps)} steps")
    share = f"{policy.steps[step]:.0%}"
    if health.requests >= policy.min_requests:
        rate = health.error_rate or 0.0
        if rate > policy.max_error_rate:
            return CanaryDecision("rollback", step, f"error rate {rate:.3f} > {policy.max_error_rate:g} over "
                                  f"{health.requests} requests at step {step + 1} ({share})")
        if policy.max_p99_ms is not None and health.p99_ms is not None and health.p99_ms > policy.max_p99_ms:
            return CanaryDecision("rollback", step, f"p99 latency {health.p99_ms:.1f} ms > {policy.max_p99_ms:g} "
                                  f"ms over {health.requests} requests at step {step + 1} ({share})")
    if elapsed_s < policy.step_s:
        return CanaryDecision("hold", step, f"step {step + 1} ({share}) runs {policy.step_s:g} s")
    if health.requests < policy.min_requests:
        return CanaryDecision("hold", step, f"step {step + 1} ({share}) waits for {policy.min_requests} requests "
                              f"on the canary (has {health.requests})")
    if step + 1 < len(policy.steps):
        return CanaryDecision("advance", step + 1, f"step {step + 1} ({share}) healthy over {health.requests} "
                              f"requests: ramp to {policy.steps[step + 1]:.0%}")
    return CanaryDecision("complete", step, f"last step ({share}) healthy over {health.requests} requests")
