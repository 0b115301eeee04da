"""Train the XGBoost model (hist) from a training-set table and a TrainingSpec.

Models are saved in XGBoost's own UBJSON format, never pickled; the feature list
travels inside the model (booster.feature_names), so scoring cannot reorder columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from ratchet.errors import MissingColumnError, RatchetError
from ratchet.train.spec import TrainingSpec

LABEL_COLUMN = "label"


@dataclass(frozen=True)
class TrainResult:
    """A trained booster and the facts needed to rebuild it."""

    booster: xgb.Booster
    features: tuple[str, ...]
    rows: int
    positives: int
    seconds: float


def feature_matrix(frame: pd.DataFrame, features: tuple[str, ...] | list[str]) -> np.ndarray:
    """The features as a float32 matrix in the given order; a missing one is named."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise MissingColumnError(
            f"the scoring data lacks feature column(s) {', '.join(missing)}; "
            "it must come from the training-set job with the same spec features"
        )
    return frame.loc[:, list(features)].to_numpy(dtype=np.float32, na_value=np.nan)


def train_model(frame: pd.DataFrame, spec: TrainingSpec) -> TrainResult:
    """Fit XGBoost (hist) on the train window; refuses a table without both labels."""
    if LABEL_COLUMN not in frame.columns:
        raise MissingColumnError(f"the training set has no '{LABEL_COLUMN}' column")
    y = frame[LABEL_COLUMN].to_numpy(dtype=np.float32)
    positives = int(y.sum())
    if len(y) == 0 or positives in (0, len(y)):
        raise RatchetError(
            f"cannot train on {len(y)} rows with {positives} positives: the training window "
            "needs both labels; widen windows.train_days or check the data"
        )
    started = time.perf_counter()
    dtrain = xgb.DMatrix(feature_matrix(frame, spec.features), label=y, feature_names=list(spec.features))
    booster = xgb.train(dict(spec.xgboost.params), dtrain, num_boost_round=spec.xgboost.num_boost_round)
    return TrainResult(booster, tuple(spec.features), len(y), positives, time.perf_counter() - started)


def predict(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """Scores (fraud probability) for each row, using the booster's own feature names."""
    names = booster.feature_names
    if not names:
        raise RatchetError("the model carries no feature names; it was not trained by ratchet")
    dm = xgb.DMatrix(feature_matrix(frame, names), feature_names=list(names))
    return booster.predict(dm)


def save_model(booster: xgb.Booster, path: str | Path) -> Path:
    """Write the booster in XGBoost's UBJSON format (path gets a .ubj suffix)."""
    p = Path(path)
    if p.suffix != ".ubj":
        p = p.with_suffix(".ubj")
    p.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(p))
    return p


def load_model(path: str | Path) -> xgb.Booster:
    """Read a booster saved by save_model."""
    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster
