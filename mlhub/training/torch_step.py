"""The per-step PyTorch training code: loss, optimizer, device, mixed precision, one step, one epoch.

Imports only ``torch`` and ``numpy`` (no Ray, no store, no specs), so that the Ray Train adapter calls it
on each worker and ``benchmarks/gpu_step_bench.py`` loads it by file path on a GPU machine that has
PyTorch and nothing else. It never imports :mod:`mlhub.training.torch_models`: it takes any ``nn.Module``.

Mixed precision: on CUDA the forward pass and loss run under ``torch.autocast("cuda")`` in bfloat16 where
the GPU supports it, else float16 with a ``torch.amp.GradScaler``; on any other device everything stays
float32. ``mixed_precision=False`` turns it off on CUDA too.

    runner = StepRunner(build_model("mlp", 64, 10), task="classification", optimizer="adam", lr=1e-3)
    data = runner.prepare(x_train, y_train)      # device copies, reused across epochs
    for epoch in range(10):
        stats = runner.train_epoch(data, batch_size=256)   # {"loss", "samples", "seconds", "samples_per_s"}
    runner.evaluate(x_test, y_test)                        # {"loss", "samples", "accuracy"}
    payload = runner.save()                                # bytes of torch.save(state_dict)
    runner.load_state_dict(payload)                        # torch.load(..., weights_only=True)

Stored state is only ever read with ``weights_only=True``: a payload holding anything but tensors and
plain containers/numbers is refused with :class:`StateLoadError` (a ``ValueError``).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "OPTIMIZERS",
    "TASKS",
    "DeviceArrays",
    "StateLoadError",
    "StepRunner",
    "amp_dtype_for",
    "dump_state",
    "load_state",
    "make_loss",
    "make_optimizer",
    "resolve_device",
]

TASKS = ("classification", "regression")
OPTIMIZERS = ("adam", "adamw", "sgd")
_MAX_ERROR_CHARS = 400


class StateLoadError(ValueError):
    """A stored torch state was refused (not a weights-only payload) or is not a state dict."""


def make_loss(task: str) -> nn.Module:
    """``CrossEntropyLoss`` for classification (int class indices), ``MSELoss`` for regression."""
    if task == "classification":
        return nn.CrossEntropyLoss()
    if task == "regression":
        return nn.MSELoss()
    raise ValueError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the current CUDA device when there is one, else CPU. Asking for CUDA without one is a
    ValueError (rather than a silent fall back to CPU)."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!s} asked for but CUDA is not available here")
    return dev


def amp_dtype_for(device: torch.device, mixed_precision: bool | None = None) -> torch.dtype | None:
    """The autocast dtype for ``device``: bfloat16 (or float16 where bf16 is unsupported) on CUDA unless
    ``mixed_precision`` is False; ``None`` (full precision) on any other device."""
    if device.type != "cuda" or mixed_precision is False:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float = 1e-3, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """``adam``, ``adamw`` or ``sgd`` (with ``momentum``); ValueError for anything else or a bad number."""
    for key, v, lo_ok in (("lr", lr, False), ("weight_decay", weight_decay, True), ("momentum", momentum, True)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0 or (
                v == 0 and not lo_ok):
            raise ValueError(f"{key} must be a finite number {'>= 0' if lo_ok else '> 0'} (got {v!r})")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")


def dump_state(state: dict[str, Any]) -> bytes:
    """``torch.save(state)`` to bytes (tensors are copied to CPU first, so the bytes load anywhere)."""
    buf = io.BytesIO()
    torch.save(_to_cpu(state), buf)
    return buf.getvalue()


def load_state(payload: bytes, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read :func:`dump_state`'s bytes with ``torch.load(..., weights_only=True)``: tensors and plain
    containers/numbers only. Anything else (a pickled object, a ``__reduce__`` payload, not a torch file, not
    a dict) raises :class:`StateLoadError`; no object from the payload is ever constructed."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise StateLoadError(f"torch state must be bytes (got {type(payload).__name__})")
    try:
        state = torch.load(io.BytesIO(bytes(payload)), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad payloads
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StateLoadError(f"refused torch state (weights_only load failed): {msg[:_MAX_ERROR_CHARS]}") from exc
    if not isinstance(state, dict):
        raise StateLoadError(f"torch state must be a dict (got {type(state).__name__})")
    return state


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return type(obj)((k, _to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (so saved keys carry no ``module.`` prefix)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass
class DeviceArrays:
    """Features (float32) and targets (int64 labels, or float32 ``(N, k)`` values) already on the device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


class StepRunner:
    """Holds a model, its optimizer, loss, device and mixed-precision policy, and trains it.

    ``model`` is any ``nn.Module`` (moved to ``device``; a DDP-wrapped one works, its inner module is what
    :meth:`state_dict` saves). ``task`` picks the loss (:func:`make_loss`). ``seed`` fixes the shuffling
    order. ``amp`` says what mixed precision is on: ``"bf16"``, ``"fp16"`` (with a GradScaler) or ``"off"``.
    """

    def __init__(self, model: nn.Module, *, task: str = "classification", optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.9,
                 device: str | torch.device = "auto", mixed_precision: bool | None = None,
                 seed: int | None = None) -> None:
        self.task = task
        self.loss_fn = make_loss(task)
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.optimizer = make_optimizer(optimizer, self.model.parameters(), lr=lr, weight_decay=weight_decay,
                                        momentum=momentum)
        self.amp_dtype = amp_dtype_for(self.device, mixed_precision)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self.epochs_done = 0
        self.steps_done = 0

    # --- properties ------------------------------------------------------------------------------------

    @property
    def amp(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "off")  # type: ignore[arg-type]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's precision context: ``torch.autocast`` on CUDA with AMP on, else a no-op."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # --- data ------------------------------------------------------------------------------------------

    def _features(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(self.device, dtype=torch.float32, non_blocking=True)
        return torch.as_tensor(np.asarray(x, dtype=np.float32)).to(self.device)

    def _targets(self, y: Any) -> torch.Tensor:
        if self.task == "classification":
            t = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
            if t.is_floating_point() and not bool(torch.all(t == t.round())):
                raise ValueError("classification targets must be integer class indices 0..C-1")
            return t.to(self.device, dtype=torch.long, non_blocking=True)
        t = (y.to(dtype=torch.float32) if isinstance(y, torch.Tensor)
             else torch.as_tensor(np.asarray(y, dtype=np.float32)))
        t = t.to(self.device, non_blocking=True)
        return t.unsqueeze(1) if t.dim() == 1 else t

    def prepare(self, x: Any, y: Any) -> DeviceArrays:
        """Copy arrays (numpy, lists or tensors) to the device once, for reuse across epochs."""
        if isinstance(x, DeviceArrays):
            return x
        xt, yt = self._features(x), self._targets(y)
        if xt.dim() < 2 or xt.shape[0] == 0:
            raise ValueError(f"features must be a non-empty (N, ...) array (got shape {tuple(xt.shape)})")
        if yt.shape[0] != xt.shape[0]:
            raise ValueError(f"features have {xt.shape[0]} rows but targets have {yt.shape[0]}")
        return DeviceArrays(xt, yt)

    def _batches(self, data: Any, batch_size: int, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(data, DeviceArrays) or (isinstance(data, tuple) and len(data) == 2):
            arrays = data if isinstance(data, DeviceArrays) else self.prepare(*data)
            n = len(arrays)
            if shuffle:
                order = torch.randperm(n, generator=self._generator).to(self.device)
                for i in range(0, n, batch_size):
                    idx = order[i:i + batch_size]
                    yield arrays.x[idx], arrays.y[idx]
            else:
                for i in range(0, n, batch_size):
                    yield arrays.x[i:i + batch_size], arrays.y[i:i + batch_size]
            return
        for xb, yb in data:  # a DataLoader or any iterable of (x, y) batches
            yield self._features(xb), self._targets(yb)

    # --- training --------------------------------------------------------------------------------------

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on a device batch; returns the detached loss (no host sync)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.loss_fn(self.model(x), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.steps_done += 1
        return loss.detach()

    def train_step(self, x: Any, y: Any) -> float:
        """One optimizer step on one batch (arrays or tensors); the batch's loss."""
        self.model.train()
        return float(self._step(self._features(x), self._targets(y)).item())

    def train_epoch(self, data: Any, batch_size: int = 256, shuffle: bool = True) -> dict[str, float]:
        """One pass over ``data``: ``(x, y)`` arrays, :meth:`prepare`'s :class:`DeviceArrays` (no copy per
        epoch), or an iterable of ``(x, y)`` batches (a DataLoader; ``batch_size``/``shuffle`` are then its
        own). The loss is read back once, at the end, so steps never wait on the host.

        Returns ``{"loss": mean loss per sample, "samples", "seconds", "samples_per_s"}``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1 (got {batch_size!r})")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        self.model.train()
        losses: list[torch.Tensor] = []
        sizes: list[int] = []
        for xb, yb in self._batches(data, batch_size, shuffle):
            losses.append(self._step(xb, yb))
            sizes.append(int(xb.shape[0]))
        if not sizes:
            raise ValueError("train_epoch got no data")
        weights = torch.tensor(sizes, dtype=torch.float32).to(self.device)
        samples = sum(sizes)
        loss = float((torch.stack(losses).float() * weights).sum().item()) / samples  # the one host sync
        seconds = time.perf_counter() - start
        self.epochs_done += 1
        return {"loss": loss, "samples": samples, "seconds": seconds,
                "samples_per_s": samples / seconds if seconds > 0 else float("inf")}

    # --- inference -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), self.autocast():
                yield
        finally:
            self.model.train(was_training)

    def predict(self, x: Any, batch_size: int = 8192) -> np.ndarray:
        """Model outputs (logits for classification, values for regression) as a float32 numpy array."""
        xt = x.x if isinstance(x, DeviceArrays) else self._features(x)
        outs = []
        with self._eval_mode():
            for i in range(0, xt.shape[0], batch_size):
                outs.append(self.model(xt[i:i + batch_size]).float().cpu())
        return torch.cat(outs).numpy() if outs else np.zeros((0,), dtype=np.float32)

    def evaluate(self, x: Any, y: Any = None, batch_size: int = 8192) -> dict[str, float]:
        """Mean loss and metrics over ``(x, y)`` (or a :class:`DeviceArrays` as ``x``): ``accuracy`` for
        classification, ``rmse`` and ``mae`` for regression; plus ``samples``."""
        data = self.prepare(x, y)
        n = len(data)
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        abs_err = torch.zeros((), dtype=torch.float64, device=self.device)
        with self._eval_mode():
            for i in range(0, n, batch_size):
                xb, yb = data.x[i:i + batch_size], data.y[i:i + batch_size]
                out = self.model(xb).float()
                total_loss += self.loss_fn(out, yb).double() * xb.shape[0]
                if self.task == "classification":
                    correct += (out.argmax(dim=1) == yb).sum()
                else:
                    abs_err += (out - yb).abs().mean(dim=1).sum().double()
        loss = float(total_loss.item()) / n
        if self.task == "classification":
            return {"loss": loss, "accuracy": float(correct.item()) / n, "samples": n}
        return {"loss": loss, "rmse": math.sqrt(loss), "mae": float(abs_err.item()) / n, "samples": n}

    # --- state -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and scaler state plus the epoch/step counters (tensors and plain values only)."""
        return {"model": _unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "epochs_done": self.epochs_done, "steps_done": self.steps_done}

    def save(self) -> bytes:
        """:meth:`state_dict` as bytes (:func:`dump_state`), e.g. for a checkpoint or the artifact store."""
        return dump_state(self.state_dict())

    def set_hyperparams(self, *, lr: float, weight_decay: float, momentum: float) -> None:
        """Put these values in every optimizer param group: a state restored from another run (a PBT exploit)
        carries that run's learning rate and regularisation, which the new run's replace."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = weight_decay
            if "momentum" in group:
                group["momentum"] = momentum

    def load_state_dict(self, state: dict[str, Any] | bytes) -> None:
        """Restore :meth:`state_dict` or :meth:`save`'s bytes (read with ``weights_only=True``).
        A bare model state dict (no ``"model"`` key) restores just the weights."""
        if not isinstance(state, dict):
            state = load_state(state, map_location=self.device)
        if "model" not in state:
            _unwrap(self.model).load_state_dict(state)
            return
        _unwrap(self.model).load_state_dict(state["model"])
        if state.get("optimizer"):
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epochs_done = int(state.get("epochs_done", 0))
        self.steps_done = int(state.get("steps_done", 0))
