"""Training, evaluation and batch prediction: pure library code (no Ray, no store).

A Ray task calls these; the caller persists what they return. See :mod:`mlhub.training.adapters` for
the adapter interface, :mod:`mlhub.training.serialization` for safe model loading.
"""

from mlhub.training.adapters import (
    Adapter,
    EpochReport,
    TrainedModel,
    available_frameworks,
    get_adapter,
    validate_training_spec,
)
from mlhub.training.batch import predict_frame, row_hashes
from mlhub.training.datasets import Dataset, load_dataset, load_table, resolve_data_path
from mlhub.training.evaluation import EvaluationResult, evaluate, plot_confusion_matrix
from mlhub.training.schema import RowError, input_schema, reference_stats, validate_rows
from mlhub.training.serialization import LoadedModel, load_model

__all__ = [
    "Adapter",
    "Dataset",
    "EpochReport",
    "EvaluationResult",
    "LoadedModel",
    "RowError",
    "TrainedModel",
    "available_frameworks",
    "evaluate",
    "get_adapter",
    "input_schema",
    "load_dataset",
    "load_model",
    "load_table",
    "plot_confusion_matrix",
    "predict_frame",
    "reference_stats",
    "resolve_data_path",
    "row_hashes",
    "validate_rows",
    "validate_training_spec",
]
