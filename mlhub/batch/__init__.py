"""Batch prediction: whole tables scored in one process or on a Ray Data actor pool, with a prediction
cache that outlives the job (SQLite under ``$MLHUB_HOME``, or Redis)."""

from mlhub.batch.cache import PredictionCache, PredictionCacheConfig, decode_predictions, encode_predictions
from mlhub.batch.pipeline import DEFAULT_RAY_MIN_ROWS, BatchOutcome, ModelBytes, predict_table
from mlhub.batch.scoring import BatchScorer, CachedRows, look_up

__all__ = ["DEFAULT_RAY_MIN_ROWS", "BatchOutcome", "BatchScorer", "CachedRows", "ModelBytes", "PredictionCache",
           "PredictionCacheConfig", "decode_predictions", "encode_predictions", "look_up",
           "predict_table"]
