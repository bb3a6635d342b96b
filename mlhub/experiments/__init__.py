"""A/B, canary and shadow experiments between versions of one registered model.

- :mod:`mlhub.experiments.service`: create, start, stop, status (statistics), outcomes, promote.
- :mod:`mlhub.experiments.canary`: the canary ramp's evaluation over the prediction log (advance, complete,
  roll back) as idempotent conditional updates.
- :mod:`mlhub.experiments.router`: what the inference server asks per request (:class:`ExperimentRouter`).

The statistics and routing rules themselves are pure functions in :mod:`mlhub.domain.abstats` and
:mod:`mlhub.domain.routing`.
"""
