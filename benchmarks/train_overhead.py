"""Training overhead: steady-state epoch time of mlhub torch jobs beside plain PyTorch and plain DDP.

Every side trains the same model (``build_model("mlp", 20, 3, hidden=[256, 256])``, same seed), with Adam
(lr 1e-3), the same batch size per process, on the same standardised synthetic data (mlhub's own loader and
standardisation), one torch thread per process (Ray sets ``OMP_NUM_THREADS=1`` in its workers), and every
epoch ends, as mlhub's loop does, with a validation pass over the whole test split (loss and accuracy):

- **plain PyTorch**: a hand-written single-process loop in this process.
- **torch DDP, 2 processes**: ``torch.multiprocessing`` + ``DistributedDataParallel`` on gloo, each rank on
  every 2nd training row (mlhub's sharding), the epoch loss averaged with one ``all_reduce``.
- **mlhub job, 1 and 2 workers**: real training jobs submitted through :class:`mlhub.client.Hub` to an
  orchestrator on a local 2-CPU Ray session, run by ``train_on_ray`` on Ray Train (TorchTrainer, DDP on gloo
  for 2 workers), with every per-epoch cost a job has: progress and metric rows written by rank 0, output
  captured to the job's logs, ``ray.train.report`` with a checkpoint every epoch (``checkpoint_every=1``) or
  only at the end (``checkpoint_every=0``).

The epoch time of an mlhub job is measured inside the job: the interval between consecutive per-epoch
progress events that rank 0 writes (each event's ``created_at``, stamped in the worker), so it covers the
whole epoch cycle (train, validation, recording, checkpoint/report). Plain and DDP loops stamp the end of
each epoch the same way. Epochs 0 and 1 (warm-up) and the last one (the final model is produced there) are
left out; a run's figure is the median of its remaining epochs, the table's the median over repetitions.
Start-up is reported separately: from submit (mlhub) or from process start (plain, DDP) to the end of epoch
0, minus one steady-state epoch. All variants alternate within each repetition, in this one process tree.

    .venv/bin/python -m benchmarks.train_overhead [--repeats 5] [--epochs 7] [--samples 160000]
        [--batch-size 128] [--no-checkpoint-compare] [--database-url postgresql+psycopg://...]

The embedded default (SQLite in a temporary MLHUB_HOME) is the database unless ``--database-url`` names a
PostgreSQL server, on which a temporary database is created and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MIN_REPEATS = 5
N_FEATURES = 20
N_CLASSES = 3
HIDDEN = [256, 256]
LR = 1e-3
SEED = 0


def dataset_spec(samples: int) -> dict[str, Any]:
    return {"source": "synthetic", "task": "classification", "n_samples": samples, "n_features": N_FEATURES,
            "n_classes": N_CLASSES, "seed": 1}


def prepared_data(samples: int):
    """mlhub's data for the job, standardised and label-encoded exactly as ``torch_loop`` does."""
    import numpy as np

    from mlhub.domain.specs import DatasetSpec
    from mlhub.training.datasets import load_dataset
    from mlhub.training.torch_adapter import standardizer

    data = load_dataset(DatasetSpec(**dataset_spec(samples)), allowed_roots=[])
    mean, std = standardizer(np.asarray(data.x_train, dtype=np.float32))
    x_train = (np.asarray(data.x_train, dtype=np.float32) - mean) / std
    x_test = (np.asarray(data.x_test, dtype=np.float32) - mean) / std
    y_train = np.searchsorted(data.classes, data.y_train)
    y_test = np.searchsorted(data.classes, data.y_test)
    return x_train, y_train, x_test, y_test


# --- the plain loops ---------------------------------------------------------------------------------

def _plain_epochs(model, x, y, x_test, y_test, batch_size: int, epochs: int, rank: int = 0, world: int = 1):
    """Train ``epochs`` epochs; the end-of-epoch timestamps (after the validation pass)."""
    import torch
    import torch.distributed as dist

    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED + rank)
    ends = []
    n = x.shape[0]
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        losses, sizes = [], []
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            sizes.append(idx.shape[0])
        epoch_loss = float((torch.stack(losses) * torch.tensor(sizes, dtype=torch.float32)).sum().item()) / n
        if world > 1:
            t = torch.tensor([epoch_loss], dtype=torch.float64)
            dist.all_reduce(t)
            epoch_loss = float(t.item()) / world
        model.eval()
        with torch.inference_mode():
            out = model(x_test)
            val_loss = float(loss_fn(out, y_test).item())
            val_acc = float((out.argmax(dim=1) == y_test).float().mean().item())
        ends.append(time.time())
        assert val_loss == val_loss and 0 <= val_acc <= 1 and epoch_loss == epoch_loss
    return ends


def plain_run(samples: int, batch_size: int, epochs: int) -> dict[str, Any]:
    import torch

    from mlhub.training.torch_models import build_model

    start = time.time()
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = prepared_data(samples)
    torch.manual_seed(SEED)
    model = build_model("mlp", N_FEATURES, N_CLASSES, hidden=HIDDEN)
    ends = _plain_epochs(model, torch.as_tensor(x_train), torch.as_tensor(y_train), torch.as_tensor(x_test),
                         torch.as_tensor(y_test), batch_size, epochs)
    return {"start": start, "ends": ends, "end": ends[-1]}


def _ddp_worker(rank: int, world: int, port: int, samples: int, batch_size: int, epochs: int, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mlhub.training.torch_models import build_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x_train, y_train, x_test, y_test = prepared_data(samples)
        n = len(x_train) // world * world  # mlhub's shard: every world-th row from rank
        xs, ys = x_train[rank:n:world], y_train[rank:n:world]
        torch.manual_seed(SEED)
        model = DistributedDataParallel(build_model("mlp", N_FEATURES, N_CLASSES, hidden=HIDDEN))
        ends = _plain_epochs(model, torch.as_tensor(xs), torch.as_tensor(ys), torch.as_tensor(x_test),
                             torch.as_tensor(y_test), batch_size, epochs, rank, world)
        if rank == 0:
            Path(out).write_text(json.dumps(ends))
    finally:
        dist.destroy_process_group()


def ddp_run(samples: int, batch_size: int, epochs: int, world: int = 2) -> dict[str, Any]:
    import torch.multiprocessing as mp

    out = tempfile.mktemp(prefix="mlhub-ddp-", suffix=".json")
    start = time.time()
    mp.spawn(_ddp_worker, args=(world, _free_port(), samples, batch_size, epochs, out), nprocs=world, join=True)
    end = time.time()
    ends = json.loads(Path(out).read_text())
    os.unlink(out)
    return {"start": start, "ends": ends, "end": end}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- mlhub jobs --------------------------------------------------------------------------------------

class MlhubJobs:
    """A throw-away deployment: Ray (2 CPUs), an orchestrator, and a Hub as one tenant."""

    def __init__(self, database_url: str | None) -> None:
        import ray

        from actors import orchestrator as orch
        from mlhub.client import Hub
        from mlhub.config import load_settings

        home = Path(tempfile.mkdtemp(prefix="mlhub-bench-"))
        self.settings = load_settings(home=home, database_url=database_url, redis_url=None, mongodb_uri=None,
                                      ray_address=None, api_key=None, max_concurrent_jobs=1)
        self.hub = Hub(self.settings, source="cli")
        if database_url is not None:
            from mlhub.store.database import Database
            from mlhub.tenancy import TenantService

            db = Database(self.settings.effective_database_url)
            _, key = TenantService(db).create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
            db.dispose()
            self.hub.close()
            self.hub = Hub(self.settings, api_key=key)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 namespace="mlhub", _temp_dir=tempfile.mkdtemp(prefix="mlhub-ray-"))
        self.actor = orch.start(self.settings.to_document(), name=f"bench-{uuid.uuid4().hex[:6]}")
        ray.get(self.actor.ping.remote(), timeout=120)
        self._n = 0

    def run(self, workers: int, checkpoint_every: int, samples: int, batch_size: int, epochs: int) -> dict[str, Any]:
        from sqlalchemy import select

        from mlhub.store.models import JobEvent

        self._n += 1
        handle = self.hub.train({
            "name": f"overhead-{workers}w-c{checkpoint_every}-{self._n}", "framework": "torch", "model": "mlp",
            "num_workers": workers, "params": {"hidden": HIDDEN, "lr": LR, "batch_size": batch_size,
                                               "optimizer": "adam", "seed": SEED},
            "dataset": dataset_spec(samples), "epochs": epochs, "checkpoint_every": checkpoint_every,
            "retry": {"max_attempts": 1}})
        info = handle.wait(timeout=900)
        with self.hub.backends.db.tenant_scope(self.hub.principal.tenant_id, readonly=True) as s:
            rows = s.execute(select(JobEvent.created_at, JobEvent.data).where(
                JobEvent.job_id == handle.id, JobEvent.type == "progress").order_by(JobEvent.id)).all()
        by_epoch = {int(d["epoch"]): _ts(t) for t, d in rows if "epoch" in (d or {})}
        if sorted(by_epoch) != list(range(1, epochs + 1)):
            raise SystemExit(f"job {handle.id}: progress events for epochs {sorted(by_epoch)}, expected 1..{epochs}")
        return {"start": _ts(info.created_at), "ends": [by_epoch[e] for e in range(1, epochs + 1)],
                "end": _ts(info.finished_at)}

    def close(self) -> None:
        import ray

        self.hub.close()
        ray.kill(self.actor, no_restart=True)
        ray.shutdown()


def _ts(t: datetime) -> float:
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


# --- analysis ----------------------------------------------------------------------------------------

def steady_epoch(run: dict[str, Any]) -> float:
    """Median epoch time over epochs 2 .. E-2 (epoch k lasts from the end of k-1 to the end of k)."""
    ends = run["ends"]
    return statistics.median(ends[k] - ends[k - 1] for k in range(2, len(ends) - 1))


def startup(run: dict[str, Any]) -> float:
    return run["ends"][0] - run["start"] - steady_epoch(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"repetitions, at least {MIN_REPEATS}")
    ap.add_argument("--epochs", type=int, default=7, help="epochs per run (at least 4: 0, 1 and the last are "
                    "left out)")
    ap.add_argument("--samples", type=int, default=160_000, help="synthetic rows (80%% train, 20%% test)")
    ap.add_argument("--batch-size", type=int, default=128, help="per process")
    ap.add_argument("--no-checkpoint-compare", action="store_true",
                    help="skip the checkpoint_every=0 jobs (about 40%% of the run time)")
    ap.add_argument("--smoke", action="store_true", help="allow fewer repetitions (a check, not a result)")
    ap.add_argument("--database-url", default=None, help="a PostgreSQL server to create a temporary database on "
                    "(default: SQLite, the embedded default)")
    args = ap.parse_args()
    if args.repeats < MIN_REPEATS and not args.smoke:
        ap.error(f"--repeats must be at least {MIN_REPEATS} (or pass --smoke)")
    if args.epochs < 4:
        ap.error("--epochs must be at least 4")
    if args.database_url:
        from benchmarks._common import temporary_pg_database

        with temporary_pg_database(args.database_url) as url:
            from mlhub.store.database import Database

            db = Database(url)
            db.upgrade()
            db.dispose()
            measure(args, url)
    else:
        measure(args, None)


def measure(args: argparse.Namespace, database_url: str | None) -> None:
    from benchmarks._common import print_table

    e, n, b = args.epochs, args.samples, args.batch_size
    jobs = MlhubJobs(database_url)
    variants = {
        "plain PyTorch, 1 process": lambda: plain_run(n, b, e),
        "mlhub job, 1 worker, checkpoint every epoch": lambda: jobs.run(1, 1, n, b, e),
        "mlhub job, 1 worker, checkpoint at the end": lambda: jobs.run(1, 0, n, b, e),
        "torch DDP, 2 processes (gloo)": lambda: ddp_run(n, b, e),
        "mlhub job, 2 workers, checkpoint every epoch": lambda: jobs.run(2, 1, n, b, e),
        "mlhub job, 2 workers, checkpoint at the end": lambda: jobs.run(2, 0, n, b, e),
    }
    if args.no_checkpoint_compare:
        variants = {k: v for k, v in variants.items() if "at the end" not in k}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    began = time.perf_counter()
    try:
        for r in range(args.repeats):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                runs[name].append(variants[name]())
                print(f"  rep {r + 1}/{args.repeats} {name}: epoch {steady_epoch(runs[name][-1]):.3f} s, "
                      f"start-up {startup(runs[name][-1]):.1f} s", flush=True)
    finally:
        jobs.close()
    epoch = {k: statistics.median(steady_epoch(x) for x in v) for k, v in runs.items()}
    start = {k: statistics.median(startup(x) for x in v) for k, v in runs.items()}
    total = {k: statistics.median(x["end"] - x["start"] for x in v) for k, v in runs.items()}
    spread = {k: (min(steady_epoch(x) for x in v), max(steady_epoch(x) for x in v)) for k, v in runs.items()}
    rows = []
    for name in runs:
        base = "plain PyTorch, 1 process" if ("1 worker" in name or "plain" in name) else "torch DDP, 2 processes (gloo)"
        lo, hi = spread[name]
        rows.append([name, f"{epoch[name]:.3f}", f"{lo:.3f} .. {hi:.3f}", f"{epoch[name] / epoch[base]:.3f}",
                     f"{start[name]:.1f}", f"{total[name]:.1f}"])
    train_rows = int(n * 0.8)
    print(f"\nTraining overhead: mlp {HIDDEN} ({N_FEATURES} -> {N_CLASSES}), Adam lr {LR}, batch {b} per process, "
          f"{train_rows:,} train / {n - train_rows:,} validation rows, {e} epochs per run (epochs 0, 1 and the "
          f"last left out), 1 torch thread per process, {args.repeats} repetitions interleaved, medians; "
          f"database: {'PostgreSQL' if database_url else 'SQLite (embedded)'}; {time.perf_counter() - began:.0f} s "
          "in all\n")
    print_table(["variant", "epoch s", "range", "vs plain / DDP", "start-up s", "submit to done s"], rows)
    for w in ("1 worker", "2 workers"):
        every, end = (f"mlhub job, {w}, checkpoint every epoch", f"mlhub job, {w}, checkpoint at the end")
        if every in epoch and end in epoch:
            print(f"checkpoint every epoch, {w}: {1000 * (epoch[every] - epoch[end]):+.0f} ms per epoch "
                  f"({epoch[every] / epoch[end]:.3f}x the epoch that only checkpoints at the end)")
    print("aim: mlhub at most 1.05 of plain PyTorch (1 worker) and of torch DDP (2 workers)")
    print("rerun: .venv/bin/python -m benchmarks.train_overhead " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
