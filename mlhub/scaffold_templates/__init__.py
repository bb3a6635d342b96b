"""Templates of ``mlhub scaffold trainer``: one training module per framework and its spec.

The modules beside this file are real, importable Python (so they are linted and tested as they are); the
scaffold copies their text with ``TRAINER_NAME`` replaced by the trainer's name.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import sys
from importlib import resources
from pathlib import Path

__all__ = ["FRAMEWORKS", "TOKEN", "render_module", "render_spec", "trainer_name_problem"]

TOKEN = "TRAINER_NAME"
FRAMEWORKS = ("torch", "tensorflow", "sklearn")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

_SPECS = {
    "torch": """\
# TRAINER_NAME.yaml: a training job that runs TRAINER_NAME.py's train_loop (written by `mlhub scaffold trainer`).
#   mlhub train TRAINER_NAME.yaml --wait      # sends this folder with the job, trains on Ray Train
kind: training
name: TRAINER_NAME
framework: torch
entrypoint: TRAINER_NAME:train_loop      # module:function in this folder (the folder is packed with the job)
model: mlp                               # the architecture the model is stored as; params are checked against it
dataset: {source: sklearn, name: iris}   # or {source: csv, path: data/x.csv, target: label} under MLHUB_DATA_ROOTS
epochs: 10
params: {lr: 0.01, batch_size: 32, hidden: [64, 64], dropout: 0.0}
num_workers: 1                           # Ray Train workers (DDP between them); each takes 1 CPU
checkpoint_every: 1                      # a checkpoint every N epochs: a retried job resumes from it
""",
    "tensorflow": """\
# TRAINER_NAME.yaml: a training job that runs TRAINER_NAME.py's train_loop (written by `mlhub scaffold trainer`).
#   mlhub train TRAINER_NAME.yaml --wait      # sends this folder with the job, trains on Ray Train
kind: training
name: TRAINER_NAME
framework: tensorflow                    # needs the extra: pip install 'mlhub[tensorflow]'
entrypoint: TRAINER_NAME:train_loop      # module:function in this folder (the folder is packed with the job)
model: mlp                               # params are checked against mlhub's tensorflow mlp at submit
dataset: {source: sklearn, name: iris}   # or {source: csv, path: data/x.csv, target: label} under MLHUB_DATA_ROOTS
epochs: 10
params: {lr: 0.01, batch_size: 32, hidden: [64, 64], dropout: 0.0}
num_workers: 1                           # Ray Train workers (MultiWorkerMirroredStrategy between them)
checkpoint_every: 1                      # a checkpoint every N epochs: a retried job resumes from it
""",
    "sklearn": """\
# TRAINER_NAME.yaml: a training job that runs TRAINER_NAME.py's train_loop (written by `mlhub scaffold trainer`).
#   mlhub train TRAINER_NAME.yaml --wait      # sends this folder with the job, trains in the job's process
kind: training
name: TRAINER_NAME
framework: sklearn
entrypoint: TRAINER_NAME:train_loop      # module:function in this folder (the folder is packed with the job)
model: sgd                               # the estimator the loop trains; params are checked against it
dataset: {source: sklearn, name: iris}   # or {source: csv, path: data/x.csv, target: label} under MLHUB_DATA_ROOTS
epochs: 10
params: {alpha: 0.0001}
""",
}


def trainer_name_problem(name: str, directory: Path | None = None) -> str | None:
    """Why ``name`` cannot name a trainer module (and job) written into ``directory``, or None."""
    if not _NAME.fullmatch(name or ""):
        return (f"trainer name {name!r} must be a Python identifier of 1-64 letters, digits and '_', starting "
                "with a letter (it names the module NAME.py and the job)")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"trainer name {name!r} is a Python keyword"
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return f"trainer name {name!r} would shadow Python's own module {name}; pick another"
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    mine = found is not None and found.origin and directory is not None and \
        Path(found.origin).resolve().parent == Path(directory).resolve()  # an earlier scaffold of the same name
    if found is not None and found.origin not in (None, "frozen") and not mine:
        return f"trainer name {name!r} would shadow the installed module {name} ({found.origin}); pick another"
    return None


def render_module(framework: str, name: str) -> str:
    return resources.files(__name__).joinpath(f"{framework}_trainer.py").read_text(encoding="utf-8").replace(
        TOKEN, name)


def render_spec(framework: str, name: str) -> str:
    return _SPECS[framework].replace(TOKEN, name)
