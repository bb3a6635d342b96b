"""Hyperparameter search on Ray Tune.

- :mod:`mlhub.hpo.space`: an :class:`~mlhub.domain.specs.HpoSpec` translated into Tune's objects (search
  space, search algorithm, scheduler, TuneConfig, per-trial resources) and a trial's config applied to the
  trainer spec. Pure code: nothing here starts Ray.
- :mod:`mlhub.hpo.validation`: every problem with an HPO spec at once (submit time).
- :mod:`mlhub.hpo.trainable`: the Tune trainable, one trial trained in-process by the framework adapter.
- :mod:`mlhub.hpo.driver`: one attempt of an HPO job: a new Tune experiment or the interrupted one resumed,
  trials recorded in ``hpo_trials`` (and one run per trial) as they run.
- :mod:`mlhub.hpo.trials`: reading trials and their curves back from the store; :mod:`mlhub.hpo.plot`: the PNG.

Search-space keys name trainer ``params`` (``lr``, ``n_estimators`` ...); the one exception is ``epochs``,
which sets the trainer's top-level ``epochs`` (see :data:`mlhub.hpo.space.TOP_LEVEL_KEYS`).
"""
