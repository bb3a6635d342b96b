"""Loading training/evaluation data: scikit-learn's bundled sets, generated data, local CSV/Parquet.

Nothing is downloaded. Paths are user input: they are resolved (symlinks followed) and must lie inside
one of the caller's ``allowed_roots``; a relative path is taken relative to each root in turn.
Features always come back as ``float64`` arrays; the target keeps its labels (ints or strings).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from mlhub.domain.specs import DatasetSpec
from mlhub.errors import ValidationError

__all__ = ["MAX_CELLS", "MAX_CLASSES", "Dataset", "load_dataset", "load_table", "resolve_data_path"]

Task = Literal["classification", "regression"]
MAX_CLASSES = 50  # a CSV/Parquet target with at most this many distinct int/str values is a class label
MAX_CELLS = 50_000_000  # generated data larger than this (rows x features) is refused (400 MB of float64)
MAX_FILES = 10_000
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
_SKLEARN_TASKS: dict[str, Task] = {"iris": "classification", "digits": "classification",
                                   "wine": "classification", "breast_cancer": "classification",
                                   "diabetes": "regression"}


@dataclass
class Dataset:
    """A train/test split ready for an adapter.

    ``classes`` is the sorted list of labels (classification) or ``None`` (regression);
    ``fingerprint`` is a sha256 over the spec and the arrays, equal across runs for equal inputs.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    task: Task
    classes: list | None
    fingerprint: str = field(default="")

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


# --- paths ---------------------------------------------------------------------------------------------


def _roots(allowed_roots: Sequence[Path | str]) -> list[Path]:
    roots = [Path(r).resolve() for r in allowed_roots]
    if not roots:
        raise ValidationError("no data roots are configured: local dataset paths are not allowed")
    return roots


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def resolve_data_path(path: str | Path, allowed_roots: Sequence[Path | str]) -> Path:
    """Resolve a user-supplied path and require it to exist inside one of ``allowed_roots``.

    A relative path is tried against each root in order (the first that exists wins). Symlinks are
    followed before the check, so a link pointing out of a root is refused like ``../``.
    """
    raw = str(path)
    if not raw or "\x00" in raw:
        raise ValidationError("a data path must be a non-empty string without NUL")
    roots = _roots(allowed_roots)
    given = Path(raw)
    candidates = [given] if given.is_absolute() else [r / given for r in roots]
    shown = ", ".join(str(r) for r in roots)
    for cand in candidates:
        resolved = cand.resolve()
        if not _inside(resolved, roots):
            raise ValidationError(f"path {raw!r} is outside the allowed data roots ({shown})",
                                  details={"path": raw})
        if resolved.exists():
            return resolved
    raise ValidationError(f"data path {raw!r} does not exist (looked under {shown})", details={"path": raw})


def _data_files(path: Path, suffixes: tuple[str, ...], roots: list[Path]) -> list[Path]:
    """The data files at ``path``: the file itself, or the matching files below a folder (sorted)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValidationError(f"data path {path} is neither a file nor a folder")
    files: list[Path] = []
    for p in sorted(path.rglob("*")):
        if any(part.startswith((".", "_")) for part in p.relative_to(path).parts):
            continue  # hidden files, _SUCCESS markers, _temporary folders
        if not p.name.lower().endswith(suffixes) or not p.is_file():
            continue
        real = p.resolve()
        if not _inside(real, roots):  # a symlink inside the folder pointing elsewhere
            raise ValidationError(f"file {p.name!r} in {path} links outside the allowed data roots")
        files.append(real)
        if len(files) > MAX_FILES:
            raise ValidationError(f"folder {path} holds more than {MAX_FILES} data files")
    if not files:
        raise ValidationError(f"folder {path} holds no {'/'.join(suffixes)} files")
    return files


def _read_files(files: list[Path], fmt: str) -> pd.DataFrame:
    frames = []
    for f in files:
        try:
            if fmt == "csv":
                frames.append(pd.read_csv(f, sep="\t" if f.name.lower().endswith(".tsv") else ","))
            else:
                frames.append(pd.read_parquet(f))
        except (OSError, ValueError, pd.errors.ParserError, ImportError) as exc:
            raise ValidationError(f"cannot read {fmt} file {f.name}: {exc}") from None
    if len(frames) == 1:
        return frames[0]
    columns = list(frames[0].columns)
    for f, df in zip(files[1:], frames[1:], strict=True):
        if list(df.columns) != columns:
            raise ValidationError(f"{f.name} has columns {list(df.columns)}, expected {columns} as in "
                                  f"{files[0].name}")
    return pd.concat(frames, ignore_index=True)


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise ValidationError(f"{path.name}: expected a CSV ({', '.join(CSV_SUFFIXES)}) or Parquet "
                          f"({', '.join(PARQUET_SUFFIXES)}) file")


def load_table(path: str | Path, allowed_roots: Sequence[Path | str]) -> pd.DataFrame:
    """Read a CSV/Parquet file, or a folder of them (one format, same columns), inside ``allowed_roots``.

    The format comes from the file names; a folder must hold files of one format only.
    """
    roots = _roots(allowed_roots)
    resolved = resolve_data_path(path, roots)
    if resolved.is_file():
        return _read_files([resolved], _format_of(resolved))
    files = _data_files(resolved, CSV_SUFFIXES + PARQUET_SUFFIXES, roots)
    formats = {_format_of(f) for f in files}
    if len(formats) > 1:
        raise ValidationError(f"folder {path} mixes CSV and Parquet files; keep one format per folder")
    return _read_files(files, formats.pop())


# --- tables to arrays ----------------------------------------------------------------------------------


def _features_from_frame(df: pd.DataFrame, target: str) -> tuple[np.ndarray, list[str]]:
    feats = df.drop(columns=[target])
    if feats.shape[1] == 0:
        raise ValidationError(f"the table has no feature columns besides the target {target!r}")
    bad = [str(c) for c in feats.columns
           if not (pd.api.types.is_numeric_dtype(feats[c]) or pd.api.types.is_bool_dtype(feats[c]))
           or pd.api.types.is_complex_dtype(feats[c])]
    if bad:
        raise ValidationError(f"non-numeric feature columns: {', '.join(bad)} (encode them as numbers "
                              f"or drop them)", details={"columns": bad})
    x = feats.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = {str(c): int(n) for c, n in zip(feats.columns, (~np.isfinite(x)).sum(axis=0), strict=True) if n}
    if missing:
        shown = ", ".join(f"{c} ({n} rows)" for c, n in missing.items())
        raise ValidationError(f"feature columns with missing or infinite values: {shown}; impute or drop "
                              f"them first", details={"columns": missing})
    return x, [str(c) for c in feats.columns]


def _infer_task(y: pd.Series) -> Task:
    integral = pd.api.types.is_integer_dtype(y) or pd.api.types.is_bool_dtype(y)
    textual = pd.api.types.is_string_dtype(y) or pd.api.types.is_object_dtype(y) or isinstance(
        y.dtype, pd.CategoricalDtype)
    if (integral or textual) and y.nunique() <= MAX_CLASSES:
        return "classification"
    return "regression"


def _target_from_frame(df: pd.DataFrame, target: str, task: Task | None) -> tuple[np.ndarray, Task]:
    y = df[target]
    if y.isna().any():
        raise ValidationError(f"target column {target!r} has {int(y.isna().sum())} missing values")
    task = task or _infer_task(y)
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise ValidationError(f"target column {target!r} is not numeric: it cannot be a regression target")
        arr = y.to_numpy(dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValidationError(f"target column {target!r} has infinite values")
        return arr, task
    if pd.api.types.is_bool_dtype(y):
        return y.to_numpy(dtype=np.int64), task
    if pd.api.types.is_numeric_dtype(y):
        return y.to_numpy(), task
    return y.astype(str).to_numpy(dtype=str), task  # plain unicode, never an object array


def _from_table(spec: DatasetSpec, roots: list[Path]) -> tuple[np.ndarray, np.ndarray, list[str], Task]:
    assert spec.path and spec.target  # guaranteed by DatasetSpec
    resolved = resolve_data_path(spec.path, roots)
    suffixes = CSV_SUFFIXES if spec.source == "csv" else PARQUET_SUFFIXES
    df = _read_files(_data_files(resolved, suffixes, roots), spec.source)
    if spec.target not in df.columns:
        raise ValidationError(f"target column {spec.target!r} not found; columns are: "
                              f"{', '.join(map(str, df.columns))}")
    if len(df) < 2:
        raise ValidationError(f"{spec.path} holds {len(df)} rows; at least 2 are needed to split")
    x, names = _features_from_frame(df, spec.target)
    y, task = _target_from_frame(df, spec.target, spec.task)
    return x, y, names, task


def _from_sklearn(name: str) -> tuple[np.ndarray, np.ndarray, list[str], Task]:
    from sklearn import datasets as skd

    loader = {"iris": skd.load_iris, "digits": skd.load_digits, "wine": skd.load_wine,
              "breast_cancer": skd.load_breast_cancer, "diabetes": skd.load_diabetes}[name]
    bunch = loader()
    names = [str(n) for n in getattr(bunch, "feature_names", [])] or [f"x{i}" for i in
                                                                      range(bunch.data.shape[1])]
    task = _SKLEARN_TASKS[name]
    y = bunch.target.astype(np.float64 if task == "regression" else np.int64)
    return np.asarray(bunch.data, dtype=np.float64), y, names, task


def _from_synthetic(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, list[str], Task]:
    from sklearn.datasets import make_classification, make_regression

    if spec.n_samples * spec.n_features > MAX_CELLS:
        raise ValidationError(f"synthetic data of {spec.n_samples} x {spec.n_features} is too large "
                              f"(at most {MAX_CELLS:,} values)")
    names = [f"x{i}" for i in range(spec.n_features)]
    if spec.task == "regression":
        x, y = make_regression(n_samples=spec.n_samples, n_features=spec.n_features,
                               n_informative=max(1, min(spec.n_features, 10)), noise=spec.noise,
                               random_state=spec.seed)
        return x.astype(np.float64), y.astype(np.float64), names, "regression"
    need = max(1, math.ceil(math.log2(spec.n_classes)))
    if spec.n_features < need:
        raise ValidationError(f"{spec.n_classes} classes need at least {need} features (got {spec.n_features})")
    informative = min(spec.n_features, max(need, spec.n_features // 2, 2))
    if spec.n_samples < 2 * spec.n_classes:
        raise ValidationError(f"{spec.n_classes} classes need at least {2 * spec.n_classes} samples")
    x, y = make_classification(n_samples=spec.n_samples, n_features=spec.n_features, n_informative=informative,
                               n_redundant=min(2, spec.n_features - informative), n_repeated=0,
                               n_classes=spec.n_classes, n_clusters_per_class=1,
                               flip_y=min(spec.noise, 0.5), random_state=spec.seed)
    return x.astype(np.float64), y.astype(np.int64), names, "classification"


# --- split and fingerprint -----------------------------------------------------------------------------


def _split(x: np.ndarray, y: np.ndarray, task: Task, test_size: float, seed: int):
    from sklearn.model_selection import train_test_split

    n_test = math.ceil(test_size * len(y))
    if n_test < 1 or len(y) - n_test < 1:
        raise ValidationError(f"{len(y)} rows cannot be split with test_size={test_size}")
    stratify = None
    if task == "classification":
        _, counts = np.unique(y, return_counts=True)
        # stratify when every class can appear on both sides; else a plain shuffled split
        if counts.min() >= 2 and n_test >= len(counts) and len(y) - n_test >= len(counts):
            stratify = y
    return train_test_split(x, y, test_size=test_size, random_state=seed, stratify=stratify)


def _fingerprint(spec: DatasetSpec, names: list[str], arrays: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode())
    h.update(json.dumps(names).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_dataset(spec: DatasetSpec, *, allowed_roots: Sequence[Path | str]) -> Dataset:
    """Load and split the data a :class:`DatasetSpec` describes.

    Raises :class:`ValidationError` for paths outside ``allowed_roots``, missing files, unknown target
    columns, non-numeric or missing feature values, and data too small to split.
    """
    if spec.source == "sklearn":
        x, y, names, task = _from_sklearn(spec.name or "")
    elif spec.source == "synthetic":
        x, y, names, task = _from_synthetic(spec)
    else:
        x, y, names, task = _from_table(spec, _roots(allowed_roots))
    classes: list | None = None
    if task == "classification":
        uniq = np.unique(y)
        if len(uniq) < 2:
            raise ValidationError(f"classification needs at least 2 classes; the target has {len(uniq)}")
        classes = uniq.tolist()
    x_train, x_test, y_train, y_test = _split(x, y, task, spec.test_size, spec.seed)
    return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, feature_names=names,
                   task=task, classes=classes,
                   fingerprint=_fingerprint(spec, names, (x_train, y_train, x_test, y_test)))
