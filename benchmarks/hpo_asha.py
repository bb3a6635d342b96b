"""HPO on Ray Tune: ASHA's efficiency and Tune's scheduling overhead, on a local 2-CPU Ray session.

1. ASHA efficiency: the same sampled configurations (``--configs``, at least 40: baseline logistic
   regression, ``lr`` log-uniform and ``l2`` from a list, on a synthetic classification set) run once with
   random search (every trial runs all ``--epochs`` epochs: Tune's FIFO scheduler) and once with mlhub's ASHA
   (:func:`mlhub.hpo.space.scheduler`). Reported: the trial-epochs ASHA spends, in the order results arrive,
   until one of its trials reaches the best score random search finds, as a fraction of random search's
   total trial-epochs (aim: at most 0.4). Training is deterministic, so this is a count, not a timing.
2. Scheduling overhead: ``--trials`` trials that each sleep 1 s and report once, 2 at a time, with mlhub's
   TuneConfig (``reuse_actors=True``); wall time of ``Tuner.fit()`` / ideal (N x 1 s / 2), median of
   ``--repeats`` (aim: at most 1.2), with Tune's default experiment-state saving and with the HPO driver's
   period, interleaved. The fixed start-up and the steady state are printed beside it, not instead of it.
   ``--skip-asha`` runs only this part.

    .venv/bin/python -m benchmarks.hpo_asha [--configs 40] [--epochs 27] [--trials 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "token")

from benchmarks._common import median, print_table, rerun_hint  # noqa: E402

CONCURRENCY = 2


def _spec(scheduler: str, epochs: int, n: int):
    from mlhub.domain.specs import parse_spec

    return parse_spec({
        "kind": "hpo", "name": "bench", "metric": "val_loss", "mode": "min", "num_samples": n,
        "max_concurrent_trials": CONCURRENCY, "scheduler": scheduler,
        "trainer": {"name": "t", "framework": "baseline", "model": "logistic", "epochs": epochs,
                    "dataset": {"source": "synthetic", "task": "classification", "n_samples": 2000,
                                "n_features": 20, "seed": 3}},
        "search_space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1.0},
                         "l2": {"type": "choice", "values": [0.0, 0.001, 0.01, 0.1]}}})


def _indexed_trial(config, *, configs, **kw):
    from mlhub.hpo.trainable import run_trial

    run_trial(configs[config["i"]], **kw)


def _run_configs(spec, configs, storage: str) -> list[tuple[str, int, float]]:
    """Run exactly ``configs`` under ``spec``'s scheduler; results (trial, iteration, val_loss) in arrival order."""
    from ray import tune

    from mlhub.hpo.space import scheduler, trial_resources
    from mlhub.training.datasets import load_dataset

    data = load_dataset(spec.trainer.dataset, allowed_roots=[])
    trainable = tune.with_resources(tune.with_parameters(
        _indexed_trial, configs=configs, trainer_doc=spec.trainer.model_dump(mode="json", exclude_none=True),
        data=data, metric=spec.metric), trial_resources(spec.trainer))
    seen: list[tuple[str, int, float]] = []

    class Collect(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            seen.append((trial.trial_id, int(result["training_iteration"]), float(result["val_loss"])))

    tune.Tuner(trainable, param_space={"i": tune.grid_search(list(range(len(configs))))},
               tune_config=tune.TuneConfig(metric="val_loss", mode="min", scheduler=scheduler(spec),
                                           max_concurrent_trials=CONCURRENCY, reuse_actors=True),
               run_config=tune.RunConfig(storage_path=storage, verbose=0, callbacks=[Collect()])).fit()
    return seen


def bench_asha(n: int, epochs: int, storage: str) -> list[list[object]]:
    from ray.tune.search.sample import Categorical

    from mlhub.hpo.space import param_space

    spec = _spec("asha", epochs, n)
    space = param_space(spec)
    import random

    rng = random.Random(0)
    configs = [{k: (rng.choice(d.categories) if isinstance(d, Categorical) else d.sample(random_state=rng.randint(0, 10**6)))
                for k, d in space.items()} for _ in range(n)]
    rnd = _run_configs(_spec("none", epochs, n), configs, storage)
    asha = _run_configs(spec, configs, storage)
    best = min(v for _, _, v in rnd)
    spent, reached = 0, None
    for _, _, v in asha:
        spent += 1
        if v <= best + 1e-12:
            reached = spent
            break
    total = len(rnd)
    asha_total = len(asha)
    frac = f"{reached / total:.2f}" if reached else "never reached"
    return [["random search (FIFO)", n, total, f"{best:.5f}", "1.00"],
            ["ASHA, epochs until random's best", n, reached or asha_total,
             f"{min(v for _, _, v in asha):.5f}", frac],
            ["ASHA, all its epochs", n, asha_total, f"{min(v for _, _, v in asha):.5f}", f"{asha_total / total:.2f}"]]


def _sleepy(config):
    from ray import tune

    time.sleep(1.0)
    tune.report({"score": 1.0})


def bench_overhead(n: int, repeats: int, storage: str) -> list[list[object]]:
    """Wall time of ``Tuner.fit()`` over ``n`` 1-second trials / ideal, as measured before (Tune's default
    experiment-state saving), interleaved with the same run under the HPO driver's experiment-state period
    (:data:`mlhub.hpo.driver.EXPERIMENT_CHECKPOINT_S`, what a resumable mlhub job runs with). Beside it, split
    out: the fixed start-up (``fit()`` called -> first trial running: experiment set-up, placement groups, the
    trial actors' processes) and the steady state (first trial running -> last trial done, over the ideal)."""
    from ray import tune

    from benchmarks._common import interleaved
    from mlhub.hpo.driver import EXPERIMENT_CHECKPOINT_S
    from mlhub.hpo.space import search_algorithm

    spec = _spec("none", 1, n)
    ideal = n * 1.0 / CONCURRENCY
    parts: dict[str, list[tuple[float, float]]] = {}

    class Times(tune.Callback):
        def __init__(self, t0: float) -> None:
            self.t0, self.first, self.last = t0, None, 0.0

        def on_trial_start(self, iteration, trials, trial, **info):
            if self.first is None:
                self.first = time.perf_counter() - self.t0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.last = time.perf_counter() - self.t0

    def once(name: str, checkpoint_s: str | None) -> float:
        if checkpoint_s is None:
            os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S", None)
        else:
            os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = checkpoint_s
        t0 = time.perf_counter()
        times = Times(t0)
        tune.Tuner(tune.with_resources(_sleepy, {"cpu": 1}), param_space={"x": tune.uniform(0, 1)},
                   tune_config=tune.TuneConfig(num_samples=n, search_alg=search_algorithm(spec), reuse_actors=True),
                   run_config=tune.RunConfig(storage_path=storage, verbose=0, callbacks=[times])).fit()
        wall = time.perf_counter() - t0
        parts.setdefault(name, []).append((times.first or 0.0, times.last - (times.first or 0.0)))
        return wall

    variants = {"Tune's default state saving": lambda: once("default", None),
                f"driver's (state saved every {EXPERIMENT_CHECKPOINT_S} s)":
                    lambda: once("driver", str(EXPERIMENT_CHECKPOINT_S))}
    walls = interleaved(variants, repeats)
    os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S", None)
    rows = []
    for (label, ws), key in zip(walls.items(), ("default", "driver"), strict=True):
        startup = median([p[0] for p in parts[key]])
        steady = median([p[1] for p in parts[key]])
        rows.append([f"{n} trials x 1 s, {CONCURRENCY} at a time, {label}", f"{ideal:.1f}", f"{median(ws):.1f}",
                     f"{median(ws) / ideal:.2f}", f"{startup:.2f}", f"{steady / ideal:.2f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=27)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-asha", action="store_true", help="measure only the scheduling overhead")
    args = ap.parse_args()
    import ray

    ray.init(address="local", num_cpus=CONCURRENCY, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    storage = tempfile.mkdtemp(prefix="mlhub-bench-tune-")
    try:
        if not args.skip_asha:
            rows = bench_asha(args.configs, args.epochs, storage)
            print(f"\nASHA efficiency: {args.configs} configurations, {args.epochs} epochs each at most")
            print_table(["strategy", "configs", "trial-epochs", "best val_loss", "epochs / random's"], rows)
        rows = bench_overhead(args.trials, args.repeats, storage)
        print(f"\nTune scheduling overhead (median of {args.repeats}, interleaved, reuse_actors=True); start-up: "
              "fit() called -> first trial running; steady: first trial running -> last done, / ideal")
        print_table(["workload", "ideal s", "wall s", "wall / ideal", "start-up s", "steady / ideal"], rows)
        print("\n" + rerun_hint())
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
