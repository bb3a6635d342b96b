"""TRAINER_NAME: a PyTorch training loop for mlhub, written by `mlhub scaffold trainer`. Edit it freely.

Run it (the spec TRAINER_NAME.yaml names this module as its entrypoint):

    mlhub train TRAINER_NAME.yaml --wait          # packs this folder, runs on Ray Train, registers the model

mlhub calls ``train_loop(session)`` in one process or on every Ray Train worker (``num_workers`` in the
spec, DDP between them). The session gives you:

    session.spec              the job spec (epochs, params, dataset, ...)
    session.dataset()         the dataset: x_train, y_train, x_test, y_test, task, classes, feature_names
    session.shard(x, y)       this worker's rows (every worker gets an equal share)
    session.rank / world_size this worker's number and how many there are
    session.device            where to train ("cpu", "cuda:0", or "auto" outside Ray)
    session.prepare_model(m)  the model wrapped for data-parallel training (DDP); unchanged in one process
    session.resume            None, or {"epoch": N, "files": {name: bytes}} of the last checkpoint
    session.should_checkpoint(epoch)  whether this epoch's state becomes a checkpoint
    session.report(epoch, metrics, state=..., final_model=..., samples=...)
    session.log(message)

How the model is stored: mlhub keeps torch models as weights plus the name of one of its built-in
architectures (``mlp``, ``cnn``, ``tabular`` in ``mlhub.training.torch_models``). That lets the registry,
evaluation, batch prediction and serving rebuild the model and load it weights-only, without ever importing
this file. So the model below is built from those building blocks (change its sizes with the spec's
``params``: ``hidden``, ``dropout``); before the job finishes, the saved model is loaded back exactly as the
registry will load it, and an architecture it cannot rebuild fails the job with a clear message instead of
registering a model nobody can load. A fully custom ``nn.Module`` trains fine here, but cannot be registered
that way (see the README, "Custom training code").
"""

from __future__ import annotations

import numpy as np

# The stored model's architecture: one of mlhub's built-ins, rebuilt from these names when it is loaded.
ARCHITECTURE = "mlp"
MODEL_PARAM_NAMES = ("hidden", "dropout")  # spec params that shape the model (the rest are training params)


def build_model(n_features: int, n_outputs: int, model_params: dict):
    """The network. ``MLP(in, out, hidden=[...], dropout=...)`` is mlhub's ``mlp``: Linear+ReLU layers."""
    from mlhub.training.torch_models import MLP

    return MLP(n_features, n_outputs, hidden=model_params.get("hidden", [64, 64]),
               dropout=model_params.get("dropout", 0.0))


def train_loop(session) -> None:
    import torch

    from mlhub.errors import ModelLoadError, ValidationError
    from mlhub.training.adapters import split_metrics
    from mlhub.training.serialization import load_model
    from mlhub.training.torch_step import dump_state, load_state, resolve_device

    spec = session.spec
    params = dict(spec.params)
    lr = float(params.get("lr", 1e-3))
    batch_size = int(params.get("batch_size", 64))
    seed = int(params.get("seed", spec.dataset.seed))
    model_params = {k: v for k, v in params.items() if k in MODEL_PARAM_NAMES}

    # --- data: standardise with the training split's statistics (saved with the model) ---------------------
    data = session.dataset()
    classification = data.task == "classification"
    classes = list(data.classes or [])
    x_train = np.asarray(data.x_train, dtype=np.float32)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    x_train = (x_train - mean) / std
    x_test = (np.asarray(data.x_test, dtype=np.float32) - mean) / std
    if classification:  # class labels -> indices 0..C-1
        y_train = np.searchsorted(classes, data.y_train)
        y_test = np.searchsorted(classes, data.y_test)
    else:
        y_train = np.asarray(data.y_train, dtype=np.float32).reshape(-1, 1)
        y_test = np.asarray(data.y_test, dtype=np.float32).reshape(-1, 1)
    n_outputs = len(classes) if classification else 1
    x_shard, y_shard = session.shard(x_train, y_train)  # this worker's rows

    # --- model, optimizer, loss --------------------------------------------------------------------------
    device = resolve_device(session.device)
    torch.manual_seed(seed)  # the same initial weights on every worker
    net = build_model(x_train.shape[1], n_outputs, model_params).to(device)
    model = session.prepare_model(net)  # DDP on Ray Train with several workers; `net` stays the plain module
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss() if classification else torch.nn.MSELoss()

    start = 0
    if session.resume:  # a restarted worker group or a retried attempt: continue after the last checkpoint
        state = load_state(session.resume["files"]["state.pt"], map_location=device)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = session.resume["epoch"]
        session.log(f"resumed after epoch {start}")

    xs = torch.as_tensor(x_shard).to(device)
    ys = torch.as_tensor(y_shard).to(device)
    xt = torch.as_tensor(x_test).to(device)
    yt = torch.as_tensor(y_test).to(device)
    for epoch in range(start, spec.epochs):
        # --- one epoch over this worker's shard ----------------------------------------------------------
        model.train()
        order = torch.randperm(len(xs), generator=torch.Generator().manual_seed(seed + epoch)).to(device)
        total = 0.0
        for i in range(0, len(xs), batch_size):
            idx = order[i:i + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(xs[idx]), ys[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        # --- validation on the test split --------------------------------------------------------------
        net.eval()
        with torch.no_grad():
            out = net(xt)
            metrics = {"loss": total / len(xs), "val_loss": float(loss_fn(out, yt))}
            if classification:
                metrics["val_accuracy"] = float((out.argmax(dim=1) == yt).float().mean())
            else:
                metrics["val_rmse"] = float(((out - yt) ** 2).mean().sqrt())

        # --- report: metrics every epoch, a checkpoint when due, the model after the last epoch ---------
        last = epoch == spec.epochs - 1
        state = final = None
        if session.rank == 0 and (last or session.should_checkpoint(epoch)):
            state = {"state.pt": dump_state({"model": net.state_dict(), "optimizer": optimizer.state_dict()})}
        if session.rank == 0 and last:
            final = _final_model(net, out.cpu().numpy(), data, classes, mean, std, model_params, params,
                                 split_metrics, dump_state)
            try:  # load it back exactly as the registry will: an architecture it cannot rebuild fails here
                load_model("torch", "pt", final[0])
            except ModelLoadError as exc:
                raise ValidationError(f"the trained model cannot be stored as mlhub's {ARCHITECTURE!r}: "
                                      f"{exc.message}") from None
        session.report(epoch, metrics, state=state, final_model=final, samples=len(xs))


def _final_model(net, outputs, data, classes, mean, std, model_params, params, split_metrics, dump_state):
    """(payload, "pt", info): the ``mlhub-torch/1`` document the registry loads weights-only."""
    import torch

    if data.task == "classification":
        proba = torch.softmax(torch.as_tensor(outputs), dim=1).numpy()
        metrics = split_metrics("classification", data.y_test, np.asarray(classes)[outputs.argmax(axis=1)],
                                proba, classes)
    else:
        metrics = split_metrics("regression", data.y_test, outputs[:, 0])
    payload = dump_state({
        "format": "mlhub-torch/1", "model": ARCHITECTURE, "model_params": model_params,
        "in_features": int(mean.shape[0]), "out_features": len(classes) if classes else 1, "task": data.task,
        "classes": [c.item() if hasattr(c, "item") else c for c in classes],
        "x_mean": torch.as_tensor(mean), "x_std": torch.as_tensor(std), "state_dict": net.state_dict(),
    })
    return payload, "pt", {"metrics": metrics, "params": params}
