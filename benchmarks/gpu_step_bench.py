"""mlhub's per-step training throughput beside a plain hand-written PyTorch loop, on one device.

Both paths train the same model class (from ``mlhub/training/torch_models.py``, same seed, same initial
weights), with the same optimizer (Adam, lr 1e-3), batch size, shuffling and mixed-precision policy (bf16
autocast on CUDA where supported, else fp16 with a GradScaler; full precision on CPU), on the same
seeded synthetic classification data, already on the device. Each timed round runs ``--epochs`` epochs of
each path, the two paths alternating (plain first in even rounds, mlhub first in odd ones), after one
warm-up epoch of each; the table gives the median samples/s of ``--repeats`` rounds (at least 5) and the
epoch-time ratio against the plain loop (mlhub's aim: at most 1.05).

Needs only Python 3.11+, ``torch`` and ``numpy``: mlhub's two torch modules are loaded by file path, so
neither the ``mlhub`` package (pandas, pydantic, scikit-learn...) nor Ray is imported. Nothing is
downloaded.

    python3 benchmarks/gpu_step_bench.py [--device auto|cuda|cpu] [--samples 2000000] [--batch-size 4096]
        [--epochs 2] [--repeats 5] [--model mlp] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
MIN_REPEATS = 5


def load_module(name: str, path: Path) -> ModuleType:
    """Import one file as module ``name`` without importing the package it lives in."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_mlhub_torch() -> tuple[ModuleType, ModuleType]:
    """``(torch_models, torch_step)`` from this checkout, loaded by path (no ``mlhub`` package import)."""
    base = ROOT / "mlhub" / "training"
    return (load_module("_mlhub_torch_models", base / "torch_models.py"),
            load_module("_mlhub_torch_step", base / "torch_step.py"))


def synthetic(samples: int, features: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded classification data: Gaussian features, labels from a random linear teacher plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, features), dtype=np.float32)
    w = rng.standard_normal((features, classes), dtype=np.float32)
    logits = x @ w
    logits += rng.standard_normal(logits.shape, dtype=np.float32) * 0.5 * float(np.sqrt(features))
    return x, logits.argmax(axis=1).astype(np.int64)


def plain_amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class PlainLoop:
    """The hand-written reference: what a PyTorch user would write for the same training."""

    def __init__(self, model: nn.Module, device: torch.device, amp_dtype: torch.dtype | None, lr: float,
                 seed: int) -> None:
        self.model = model.to(device)
        self.device = device
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.loss_fn = nn.CrossEntropyLoss()
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        self.gen = torch.Generator().manual_seed(seed)

    def epoch(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        model, opt, loss_fn, scaler = self.model, self.opt, self.loss_fn, self.scaler
        model.train()
        n = x.shape[0]
        order = torch.randperm(n, generator=self.gen).to(self.device)
        losses, sizes = [], []
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            ctx = (torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
                   if self.amp_dtype is not None else contextlib.nullcontext())
            with ctx:
                loss = loss_fn(model(xb), yb)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            losses.append(loss.detach())
            sizes.append(xb.shape[0])
        weights = torch.tensor(sizes, dtype=torch.float32).to(self.device)
        mean_loss = float((torch.stack(losses).float() * weights).sum().item()) / n
        seconds = time.perf_counter() - start
        return {"loss": mean_loss, "samples": n, "seconds": seconds}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} torch threads)"


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print("  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--model", default="mlp", choices=["mlp", "tabular", "cnn"])
    p.add_argument("--samples", type=int, default=2_000_000)
    p.add_argument("--features", type=int, default=64, help="input features (cnn: a square, 64 = 8x8)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--hidden", type=int, default=512, help="mlp layer width / tabular width")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=2, help="epochs per timed round and path")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"timed rounds, at least {MIN_REPEATS}")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--no-amp", action="store_true", help="full precision on CUDA too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    argv = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(argv)
    a.argv = argv
    if a.repeats < MIN_REPEATS:
        p.error(f"--repeats must be at least {MIN_REPEATS} (the median of fewer rounds is noise)")
    for key in ("samples", "features", "classes", "hidden", "batch_size", "epochs"):
        if getattr(a, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    if a.classes < 2:
        p.error("--classes must be >= 2")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False (use --device auto or cpu)")
    return a


def model_params(name: str, hidden: int) -> dict:
    return {"mlp": {"hidden": [hidden, hidden]}, "tabular": {"width": hidden}, "cnn": {}}[name]


def run(args: argparse.Namespace) -> dict:
    torch_models, torch_step = load_mlhub_torch()
    device = torch_step.resolve_device(args.device)
    params = model_params(args.model, args.hidden)
    problems = torch_models.model_problems(args.model, args.features, args.classes, params)
    if problems:
        raise SystemExit("bad settings: " + "; ".join(problems))

    t0 = time.perf_counter()
    x_np, y_np = synthetic(args.samples, args.features, args.classes, args.seed)
    gen_s = time.perf_counter() - t0

    def fresh_model() -> nn.Module:
        torch.manual_seed(args.seed)
        return torch_models.build_model(args.model, args.features, args.classes, **params)

    plain = PlainLoop(fresh_model(), device, plain_amp_dtype(device, not args.no_amp), args.lr, args.seed)
    runner = torch_step.StepRunner(fresh_model(), task="classification", optimizer="adam", lr=args.lr,
                                   device=device, mixed_precision=not args.no_amp, seed=args.seed)
    if plain.amp_dtype != runner.amp_dtype:
        raise SystemExit(f"AMP policies differ: plain {plain.amp_dtype} vs mlhub {runner.amp_dtype}")
    x_dev = torch.from_numpy(x_np).to(device)
    y_dev = torch.from_numpy(y_np).to(device)
    data = runner.prepare(x_np, y_np)
    n_params = sum(p.numel() for p in runner.model.parameters())

    def time_plain() -> tuple[float, float]:
        stats = [plain.epoch(x_dev, y_dev, args.batch_size) for _ in range(args.epochs)]
        return sum(s["samples"] for s in stats) / sum(s["seconds"] for s in stats), stats[-1]["loss"]

    def time_mlhub() -> tuple[float, float]:
        stats = [runner.train_epoch(data, batch_size=args.batch_size) for _ in range(args.epochs)]
        return sum(s["samples"] for s in stats) / sum(s["seconds"] for s in stats), stats[-1]["loss"]

    paths = {"plain PyTorch loop": time_plain, "mlhub StepRunner.train_epoch": time_mlhub}
    t0 = time.perf_counter()
    plain.epoch(x_dev, y_dev, args.batch_size)  # warm-up: allocator, cuBLAS handles, kernel selection
    runner.train_epoch(data, batch_size=args.batch_size)
    warm_s = time.perf_counter() - t0

    rates: dict[str, list[float]] = {k: [] for k in paths}
    last_loss: dict[str, float] = {}
    t0 = time.perf_counter()
    for r in range(args.repeats):
        order = list(paths) if r % 2 == 0 else list(reversed(paths))
        for name in order:
            rate, last_loss[name] = paths[name]()
            rates[name].append(rate)
    timed_s = time.perf_counter() - t0

    med = {k: statistics.median(v) for k, v in rates.items()}
    base = med["plain PyTorch loop"]
    rows = [[name, f"{med[name]:,.0f}", f"{min(v):,.0f} .. {max(v):,.0f}", f"{base / med[name]:.3f}",
             f"{last_loss[name]:.4f}"] for name, v in rates.items()]
    amp = runner.amp
    script = os.path.relpath(Path(__file__).resolve(), Path.cwd())
    exe = sys.executable or "python3"
    if Path(exe).is_relative_to(Path.cwd()):
        exe = os.path.relpath(exe, Path.cwd())
    rerun = " ".join(shlex.quote(a) for a in [exe, script, *args.argv])

    print(f"device: {device_name(device)}  (torch {torch.__version__}, Python {platform.python_version()})")
    print(f"mixed precision: {'on, ' + amp if amp != 'off' else 'off (full float32)'}"
          f"{'  [GradScaler]' if runner.scaler is not None else ''}")
    print(f"model: {args.model} {params or ''} ({n_params:,} parameters), {args.features} features -> "
          f"{args.classes} classes; optimizer adam lr {args.lr}")
    print(f"data: {args.samples:,} synthetic samples (seed {args.seed}, made in {gen_s:.1f} s), batch "
          f"{args.batch_size}, {math.ceil(args.samples / args.batch_size)} steps/epoch; {args.epochs} epoch(s) "
          f"per round, {args.repeats} rounds interleaved after 1 warm-up epoch each ({warm_s:.1f} s), "
          f"timed part {timed_s:.1f} s")
    print()
    print_table(["path", "samples/s (median)", "range", "epoch time vs plain", "last epoch loss"], rows)
    print()
    ratio = base / med["mlhub StepRunner.train_epoch"]
    print(f"mlhub epoch time / plain epoch time = {ratio:.3f} (aim: at most 1.05)")
    print(f"rerun: {rerun}")
    return {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "python": platform.python_version(), "amp": amp, "model": args.model, "params": params,
            "n_parameters": n_params, "samples": args.samples, "batch_size": args.batch_size,
            "epochs": args.epochs, "repeats": args.repeats,
            "samples_per_s": rates, "median_samples_per_s": med, "time_ratio_vs_plain": ratio,
            "last_epoch_loss": last_loss, "rerun": rerun}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
