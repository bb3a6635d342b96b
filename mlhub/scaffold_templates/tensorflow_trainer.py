"""TRAINER_NAME: a TensorFlow (tf-keras) training loop for mlhub, written by `mlhub scaffold trainer`. Edit it.

Run it (the spec TRAINER_NAME.yaml names this module as its entrypoint):

    mlhub train TRAINER_NAME.yaml --wait          # packs this folder, runs on Ray Train, registers the model

mlhub calls ``train_loop(session)`` in one process or on every Ray Train worker (``num_workers`` in the spec;
MultiWorkerMirroredStrategy between them). The session gives you ``session.spec``, ``session.dataset()``
(x_train, y_train, x_test, y_test, task, classes), ``session.shard(x, y)`` (this worker's rows),
``session.rank``/``world_size``, ``session.resume`` (None, or ``{"epoch": N, "files": {name: bytes}}`` of the
last checkpoint), ``session.should_checkpoint(epoch)``, ``session.report(...)`` and ``session.log(...)``.

How the model is stored: as a ``.keras`` archive that the registry loads with ``safe_mode`` and an
allow-list of layer classes (Dense, Dropout, Normalization, BatchNormalization, Conv2D, MaxPooling2D,
Flatten, Reshape, ReLU, Activation, Add, Rescaling: ``mlhub.training.tf_models.KERAS_LAYERS``). Any
functional model made of those layers can be registered, so ``build_model`` below is yours to change;
custom layer classes or Lambda layers are refused when loading. Before the job finishes the saved model is
loaded back exactly as the registry will load it, so a refused model fails the job instead of registering.
"""

from __future__ import annotations

import io

import numpy as np


def build_model(keras, prepared, model_params: dict):
    """The network (a functional Keras model): standardisation inside the model, then Dense layers."""
    layers = keras.layers
    inputs = keras.Input(shape=(prepared.n_features,), name="features")
    x = layers.Normalization(mean=prepared.feature_mean, variance=prepared.feature_var, name="standardize")(inputs)
    dropout = float(model_params.get("dropout", 0.0))
    for i, width in enumerate(model_params.get("hidden", [64, 64])):
        x = layers.Dense(int(width), activation="relu", name=f"dense_{i}")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
    out = layers.Dense(prepared.n_outputs, name="output")(x)  # logits, or one value for regression
    if prepared.task == "regression":  # predict in the target's units
        out = layers.Rescaling(scale=prepared.target_std, offset=prepared.target_mean, name="target_scale")(out)
    return keras.Model(inputs, out, name="TRAINER_NAME")


def train_loop(session) -> None:
    from mlhub.errors import ModelLoadError, ValidationError
    from mlhub.training.serialization import load_model
    from mlhub.training.tf_adapter import compile_model, epoch_callback, finish, keras_outputs, prepare
    from mlhub.training.tf_models import import_keras, import_tf

    spec = session.spec
    params = dict(spec.params)  # lr, batch_size, optimizer, ... (compile_model reads them) and hidden, dropout
    tf = import_tf()
    keras = import_keras()
    # several workers: MultiWorkerMirroredStrategy, created before any other TensorFlow operation
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if session.world_size > 1 else tf.distribute.get_strategy()
    seed = int(params.get("seed", spec.dataset.seed))
    tf.random.set_seed(seed)  # the same initial weights on every worker

    # --- data: float32 features, class indices or (N, 1) targets, standardisation statistics -------------
    data = session.dataset()
    prepared = prepare(data)
    with strategy.scope():
        model = compile_model(build_model(keras, prepared, params), data.task, params)
    # the model saved at the end is a plain copy made here, outside the strategy (rank 0 only)
    plain = build_model(keras, prepared, params) if session.rank == 0 else None

    start = 0
    if session.resume:  # continue after the last checkpoint: weights and optimizer state
        files = session.resume["files"]
        model.set_weights(_arrays(files["weights.npz"]))
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
        model.optimizer.set_weights(_arrays(files["optimizer.npz"]))
        start = int(session.resume["epoch"])
        session.log(f"resumed after epoch {start}")
    if start >= spec.epochs:
        return

    x, y = session.shard(prepared.x_train, prepared.y_train)  # this worker's rows
    batch_size = int(params.get("batch_size", 64))

    def dataset_fn(_context):  # batches of this worker's shard, reshuffled every epoch
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed + session.rank)
        return ds.batch(batch_size).repeat()

    train_ds = strategy.distribute_datasets_from_function(dataset_fn)

    def on_epoch(epoch: int, metrics: dict) -> None:  # after every epoch (a Keras callback calls it)
        metrics.update(_val_metrics(keras_outputs(model, prepared.x_val), prepared))  # plain numpy: no collective
        last = epoch == spec.epochs - 1
        state = final = None
        if session.rank == 0 and (last or session.should_checkpoint(epoch)):
            state = {"weights.npz": _npz(model.get_weights()),
                     "optimizer.npz": _npz([v.numpy() for v in model.optimizer.variables])}
        if session.rank == 0 and last:
            plain.set_weights(model.get_weights())
            trained = finish("TRAINER_NAME", plain, data, prepared, params)  # test metrics + .keras payload
            try:  # load it back exactly as the registry will
                load_model("tensorflow", "keras", trained.payload)
            except ModelLoadError as exc:
                raise ValidationError(f"the trained model cannot be stored: {exc.message}") from None
            final = (trained.payload, trained.model_format, {"metrics": trained.metrics, "params": params})
        session.report(epoch, metrics, state=state, final_model=final, samples=len(x))

    model.fit(train_ds, epochs=spec.epochs, initial_epoch=start, steps_per_epoch=max(1, -(-len(x) // batch_size)),
              verbose=0, callbacks=[epoch_callback(on_epoch, len(x))])


def _val_metrics(out: np.ndarray, prepared) -> dict:
    """Loss and accuracy (or RMSE) on the test split from the model's outputs."""
    if prepared.task == "classification":
        z = out - out.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        idx = prepared.y_val.astype(np.int64)
        return {"val_loss": float(-log_p[np.arange(len(idx)), idx].mean()),
                "val_accuracy": float(np.mean(out.argmax(axis=1) == idx))}
    mse = float(np.mean((out[:, 0] - prepared.y_val[:, 0]) ** 2))
    return {"val_loss": mse, "val_rmse": mse ** 0.5}


def _npz(arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, *[np.asarray(a) for a in arrays])
    return buf.getvalue()


def _arrays(payload: bytes) -> list:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]
