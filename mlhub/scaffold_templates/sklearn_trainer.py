"""TRAINER_NAME: a scikit-learn training loop for mlhub, written by `mlhub scaffold trainer`. Edit it freely.

Run it (the spec TRAINER_NAME.yaml names this module as its entrypoint):

    mlhub train TRAINER_NAME.yaml --wait          # packs this folder, trains in the job, registers the model

mlhub calls ``train_loop(session)`` in the job's process (scikit-learn trains on one worker). The session
gives you ``session.spec`` (epochs, params, dataset), ``session.dataset()`` (x_train, y_train, x_test, y_test,
task, classes), ``session.resume`` (None, or ``{"epoch": N, "files": {name: bytes}}``),
``session.report(epoch, metrics, state=..., final_model=...)`` and ``session.log(...)``.

How the model is stored: as a skops archive, loaded by the registry with an explicit allow-list of types
(never pickle): one of mlhub's estimators (``mlhub.training.sklearn_models.ESTIMATORS``), alone or after a
``StandardScaler`` in a ``Pipeline``. The spec's ``model`` names that estimator (``sgd`` here) and its
``params`` are checked against it when the job is submitted. This loop makes one ``partial_fit`` pass per
epoch, so it reports after each epoch and can resume from a checkpoint.
"""

from __future__ import annotations

import numpy as np


def build_model(task: str, params: dict):
    """The estimator: SGD (logistic loss for classification, squared error for regression)."""
    from sklearn.linear_model import SGDClassifier, SGDRegressor

    settings = {"random_state": 0, **params}
    if task == "classification":
        return SGDClassifier(**{"loss": "log_loss", **settings})
    return SGDRegressor(**settings)


def train_loop(session) -> None:
    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from mlhub.training.adapters import split_metrics

    spec = session.spec
    data = session.dataset()
    scaler = StandardScaler().fit(data.x_train)  # standardise with the training split's statistics
    x_train, x_test = scaler.transform(data.x_train), scaler.transform(data.x_test)
    classification = data.task == "classification"
    extra = {"classes": np.asarray(data.classes)} if classification else {}

    est = build_model(data.task, dict(spec.params))
    start = 0
    if session.resume:  # continue after the last checkpoint
        est = _load_estimator(session.resume["files"]["estimator.skops"])
        start = session.resume["epoch"]
        session.log(f"resumed after epoch {start}")

    rng = np.random.default_rng(spec.dataset.seed)
    for epoch in range(start, spec.epochs):
        order = rng.permutation(len(x_train))
        est.partial_fit(x_train[order], data.y_train[order], **extra)  # one pass over the training rows
        proba = est.predict_proba(x_test) if hasattr(est, "predict_proba") else None
        test = split_metrics(data.task, data.y_test, est.predict(x_test), proba, data.classes)
        metrics = {f"val_{k}": v for k, v in test.items()}

        last = epoch == spec.epochs - 1
        final = None
        if last:  # the stored model: scaler + estimator, as one Pipeline
            model = Pipeline([("scale", scaler), ("model", est)])
            final = (sio.dumps(model), "skops", {"metrics": test, "params": dict(spec.params)})
        session.report(epoch, metrics, state={"estimator.skops": sio.dumps(est)}, final_model=final,
                       samples=len(x_train))


def _load_estimator(payload: bytes):
    """A checkpointed estimator, read with only the types mlhub trusts (never ``trusted=True``)."""
    import skops.io as sio

    from mlhub.training.serialization import allowed_skops_types

    untrusted = set(sio.get_untrusted_types(data=payload))
    outside = untrusted - allowed_skops_types()
    if outside:
        raise ValueError(f"checkpoint holds untrusted types: {', '.join(sorted(outside))}")
    return sio.loads(payload, trusted=sorted(untrusted))
