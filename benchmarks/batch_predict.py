"""Batch prediction: Ray Data actor pool vs a single-process loop, and a fully cached rerun vs the first run.

The model: a scikit-learn RBF-kernel SVC (mlhub's sklearn adapter, ``svm``, trained on ``--train-rows``
synthetic rows, stored with skops like every mlhub model): its ``predict`` is CPU-bound (libsvm, one thread,
every row against every support vector: about 40 us a row here with the default 4,000 training rows). The
input: ``--rows`` rows of ``--features`` float features in one Parquet file.

1. Throughput (rows/s), interleaved, ``--repeats`` times each, medians:
   - ``loop``: one process reads the Parquet file, and loops ``model.predict`` over the same batches of
     ``--batch-size`` rows, writes the Parquet output (the strongest baseline: no validation, no cache);
   - ``mlhub, Ray Data``: :func:`mlhub.batch.predict_table` (the job's path after reading: validation, ids)
     with ``num_workers=--workers`` actors of 1 CPU, no cache, start-up (actor pool, imports, model load per
     actor) included. Aim: at least 1.3x the loop on 2 cores (2.0 is the limit);
   - with ``--with-local``, also ``mlhub, 1 process``: the same with ``num_workers=1``.
   ``OMP_NUM_THREADS=1`` for every process, as Ray sets in its workers.
2. Cache: the Ray Data job with the prediction cache (SQLite under a fresh ``MLHUB_HOME`` per repetition)
   run once (empty cache: every row predicted and written) and then rerun (every row served from the cache).
   Aim: the rerun at least 5x faster.

Each side reads the input and writes its output. The per-row costs the cache adds (hashing, SQLite reads
and writes) are measured on their own and printed below the tables.

    flock /tmp/mlhub-heavy.lock .venv/bin/python -m benchmarks.batch_predict [--rows 1000000]
        [--train-rows 4000] [--repeats 5] [--workers 2] [--with-local]
"""

from __future__ import annotations

import argparse
import os

os.environ["OMP_NUM_THREADS"] = "1"  # before numpy/sklearn load: the loop gets Ray workers' thread count
os.environ.setdefault("RAY_AUTH_MODE", "token")

import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks._common import interleaved, median, print_table, rerun_hint  # noqa: E402


def _model(train_rows: int, features: int):
    from mlhub.batch import ModelBytes
    from mlhub.domain.specs import parse_spec
    from mlhub.training.adapters import get_adapter
    from mlhub.training.datasets import load_dataset

    spec = parse_spec({"kind": "training", "name": "svm", "framework": "sklearn", "model": "svm", "params": {},
                       "dataset": {"source": "synthetic", "task": "classification", "n_samples": train_rows,
                                   "n_features": features, "seed": 1}})
    data = load_dataset(spec.dataset, allowed_roots=[])
    trained = get_adapter("sklearn").train(spec, data, lambda r: None)
    return ModelBytes("sklearn", "skops", trained.payload), trained.input_schema, data.feature_names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--train-rows", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=16_384)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--with-local", action="store_true", help="also time mlhub's single-process path")
    args = ap.parse_args()

    import ray

    from mlhub.batch import PredictionCacheConfig, predict_table
    from mlhub.batch.cache import encode_predictions
    from mlhub.training.batch import row_digests

    t0 = time.perf_counter()
    model, schema, names = _model(args.train_rows, args.features)
    print(f"model: RBF SVC on {args.train_rows:,} rows, {len(model.payload):,} bytes of skops "
          f"({time.perf_counter() - t0:.1f} s to train)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="mlhub-bench-batch-"))
    source = tmp / "input.parquet"
    x_all = np.random.default_rng(7).normal(size=(args.rows, args.features))
    pd.DataFrame(x_all, columns=names).to_parquet(source, index=False)
    del x_all
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             _temp_dir=tempfile.mkdtemp(prefix="mlhub-rb-"))
    counter = iter(range(10**9))

    def read() -> pd.DataFrame:
        return pd.read_parquet(source)

    def write(out: pd.DataFrame) -> None:
        out.to_parquet(tmp / "out.parquet", index=False)

    def loop() -> float:
        start = time.perf_counter()
        frame = read()
        x = frame[names].to_numpy(dtype=np.float64)
        m = model.__class__(model.framework, model.model_format, model.payload).load()
        preds = [m.predict(x[i:i + args.batch_size]) for i in range(0, len(x), args.batch_size)]
        write(pd.DataFrame({"row": np.arange(len(x)), "prediction": np.concatenate(preds)}))
        return args.rows / (time.perf_counter() - start)

    def job(workers: int, cache: PredictionCacheConfig | None = None) -> tuple[float, int]:
        start = time.perf_counter()
        fresh = model.__class__(model.framework, model.model_format, model.payload)  # loaded afresh each run
        out = predict_table(read(), schema, fresh, tenant_id="bench", version_id=1, batch_size=args.batch_size,
                            num_workers=workers, cache=cache, ray_min_rows=0)
        write(out.frame)
        assert len(out.frame) == args.rows
        return args.rows / (time.perf_counter() - start), out.cached_rows

    print("warm-up (one Ray Data run, not measured) ...", flush=True)
    job(args.workers)
    variants = {"loop": loop, "ray": lambda: job(args.workers)[0]}
    if args.with_local:
        variants["one"] = lambda: job(1)[0]
    runs = interleaved(variants, args.repeats)
    loop_rate = median(runs["loop"])
    print()
    print(f"Batch prediction throughput: {args.rows:,} rows x {args.features} features, batches of "
          f"{args.batch_size:,}, OMP_NUM_THREADS=1, {args.workers} CPUs, medians of {args.repeats}")
    labels = {"loop": "single-process loop", "one": "mlhub, 1 process",
              "ray": f"mlhub, Ray Data ({args.workers} actors)"}
    print_table(["path", "rows/s", "ratio to loop", "runs (rows/s)"], [
        [labels[k], f"{median(rs):,.0f}", f"{median(rs) / loop_rate:.2f}", " ".join(f"{r:,.0f}" for r in rs)]
        for k, rs in runs.items()])

    first, rerun = [], []
    for _ in range(args.repeats):
        cfg = PredictionCacheConfig(sqlite_path=tmp / f"home-{next(counter)}" / "cache" / "predictions.sqlite")
        rate, cached = job(args.workers, cfg)
        assert cached == 0
        first.append(args.rows / rate)
        rate, cached = job(args.workers, cfg)
        assert cached == args.rows, cached
        rerun.append(args.rows / rate)
    print()
    print(f"Prediction cache (SQLite under MLHUB_HOME), the Ray Data job, medians of {args.repeats}")
    print_table(["run", "seconds", "rows/s", "speed-up", "runs (s)"], [
        ["first run (empty cache)", f"{median(first):.2f}", f"{args.rows / median(first):,.0f}", "1.00",
         " ".join(f"{s:.2f}" for s in first)],
        ["rerun (every row cached)", f"{median(rerun):.2f}", f"{args.rows / median(rerun):,.0f}",
         f"{median(first) / median(rerun):.2f}", " ".join(f"{s:.2f}" for s in rerun)],
    ])

    # where the time goes: the Ray Data job's fixed cost (two batches: start-up, imports, model load per
    # actor), and the per-row costs of the cache, in this process
    small = pd.read_parquet(source).iloc[:2 * args.batch_size]
    fixed = []
    for _ in range(3):
        t = time.perf_counter()
        predict_table(small, schema, model.__class__(model.framework, model.model_format, model.payload),
                      tenant_id="bench", version_id=1, batch_size=args.batch_size, num_workers=args.workers,
                      ray_min_rows=0)
        fixed.append(time.perf_counter() - t)
    x = pd.read_parquet(source).to_numpy(dtype=np.float64)[:200_000]
    t = time.perf_counter()
    digests = row_digests(x)
    hash_s = time.perf_counter() - t
    values = encode_predictions(np.zeros(len(x)))
    cache = PredictionCacheConfig(sqlite_path=tmp / "probe" / "p.sqlite").open()
    t = time.perf_counter()
    cache.set_many("bench", 1, list(zip(digests, values, strict=True)))
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    cache.get_many("bench", 1, digests)
    read_s = time.perf_counter() - t
    m = model.load()
    t = time.perf_counter()
    m.predict(x[:10_000])
    predict_s = (time.perf_counter() - t) * 100
    print()
    print(f"Ray Data job on {len(small):,} rows (its fixed cost): median {median(fixed):.1f} s of "
          f"{' '.join(f'{f:.1f}' for f in fixed)}")
    print(f"per million rows, one process: sha256 row hashes {hash_s * 5:.2f} s, SQLite cache write "
          f"{write_s * 5:.2f} s, read {read_s * 5:.2f} s; the model's predict {predict_s:.1f} s")
    print(rerun_hint())
    ray.shutdown()


if __name__ == "__main__":
    main()
