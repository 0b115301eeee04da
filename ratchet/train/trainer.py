"""Train the XGBoost model (hist) from a training-set table and a TrainingSpec.

Models are saved in XGBoost's own UBJSON format, never pickled; the feature list
travels inside the model (booster.feature_names), so scoring cannot reorder columns.

The spec may ask for more than a fixed number of rounds (xgboost.* in ratchet.train.spec):

- class_weight: balanced sets scale_pos_weight to negatives / positives of the whole
  train window (a number sets it as given);
- early_stopping: the train window is split by time, (ts, transaction_id) order, into the
  fitting rows and a validation tail of its latest rows (the last validation_days days, or
  the last validation_fraction of the rows); boosting stops once eval_metric on the tail
  has not improved for `rounds` rounds, and best_iteration is kept;
- search: each trial of the grid (declared order; a grid larger than max_trials is sampled
  by the spec's seed, never by the clock) is fitted the same way, and the trial with the
  best validation score wins (the first one on a tie).

- censoring (data that logs the production policy's decisions, ratchet.data.logged):
  explored: inverse_propensity weights each labelled row by 1 / propensity, so an explored
  payment stands for the would-be blocks like it; censored: genuine rows (blocked payments
  trained on as genuine) weigh censoring.censored_weight.

The released model is then refitted on the whole train window, in the order it was given,
with the chosen parameters and best_iteration + 1 rounds: the latest days, the ones closest
to what the model will score, are not left out of it. So the model is exactly the one a
spec with those parameters and num_boost_round, without early stopping or search, trains:
TrainResult.training records all of it (validation tail, every trial's score, the chosen
parameters, rounds and scale_pos_weight), and the train step logs it with the version.
Every fit is seeded and uses the spec's fixed nthread, so the same spec, data and seed give
the same model bytes.

    result = train_model(pd.read_parquet("out/train.parquet"), load_spec("specs/fraud.yaml"))
    save_model(result.booster, "out/model.ubj"); print(result.training["rounds"])
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from ratchet.data.columns import CENSORED as CENSORED_COLUMN
from ratchet.data.columns import PROPENSITY as PROPENSITY_COLUMN
from ratchet.data.spec import Censoring
from ratchet.errors import MissingColumnError, RatchetError
from ratchet.train.spec import EarlyStopping, Search, TrainingSpec

LABEL_COLUMN = "label"
TS_COLUMN = "ts"
#: XGBoost's rule (xgboost.callback.EarlyStopping): metrics named so are maximised, others minimised.
_MAXIMISED = ("auc", "pre", "map", "ndcg")


@dataclass(frozen=True)
class TrainResult:
    """A trained booster and the facts needed to rebuild it.

    training: what the spec's options decided (JSON-ready): rounds and scale_pos_weight
    always; with early stopping the validation tail, metric, best_iteration, the trials and
    the chosen parameters (see the module docstring)."""

    booster: xgb.Booster
    features: tuple[str, ...]
    rows: int
    positives: int
    seconds: float
    training: dict[str, Any] = field(default_factory=dict)


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
    x = spec.xgboost
    params = dict(x.params)
    weight = scale_pos_weight(x.class_weight, positives, len(y))
    if weight is not None:
        params["scale_pos_weight"] = weight
    rounds, record = x.num_boost_round, {}
    if x.early_stopping is not None:
        record = _validate(frame, spec, params)
        params.update(record["chosen"])
        rounds = record["best_iteration"] + 1
    w = sample_weights(frame, spec.censoring)
    dtrain = xgb.DMatrix(feature_matrix(frame, spec.features), label=y, weight=w, feature_names=list(spec.features))
    booster = xgb.train(params, dtrain, num_boost_round=rounds)
    training = {"rounds": rounds, "class_weight": x.class_weight, "scale_pos_weight": weight, **record}
    if w is not None:
        training["sample_weight"] = {"explored": spec.censoring.explored, "censored": spec.censoring.censored,
                                     "weighted_rows": int((w != 1.0).sum()), "total_weight": float(w.sum()),
                                     "max_weight": float(w.max())}
    return TrainResult(booster, tuple(spec.features), len(y), positives, time.perf_counter() - started, training)


def sample_weights(frame: pd.DataFrame, censoring: Censoring) -> np.ndarray | None:
    """Row weights from the spec's censoring options (None: every row weighs 1).

    explored: inverse_propensity: 1 / propensity for labelled rows (propensity of the allow);
    censored: genuine: censored_weight for the blocked rows trained on as genuine."""
    w = np.ones(len(frame), dtype=np.float32)
    used = False
    censored = (frame[CENSORED_COLUMN].to_numpy() == 1) if CENSORED_COLUMN in frame.columns else np.zeros(len(frame), bool)
    if censoring.explored == "inverse_propensity":
        if PROPENSITY_COLUMN not in frame.columns:
            raise MissingColumnError(
                "censoring.explored: inverse_propensity needs each payment's propensity, and the training set has "
                f"no '{PROPENSITY_COLUMN}' column: map the data's propensity column under dataset.columns "
                "(propensity: YOUR_COLUMN), or set censoring.explored: none")
        p = frame[PROPENSITY_COLUMN].to_numpy(dtype=np.float64)
        ok = ~censored & np.isfinite(p) & (p > 0)
        w[ok] = (1.0 / p[ok]).astype(np.float32)
        used = True
    if censoring.censored == "genuine" and censoring.censored_weight != 1.0 and censored.any():
        w[censored] = censoring.censored_weight
        used = True
    return w if used else None


def scale_pos_weight(class_weight: str | float | None, positives: int, rows: int) -> float | None:
    """The spec's class_weight as XGBoost's scale_pos_weight (None: not set)."""
    if class_weight is None:
        return None
    if class_weight == "balanced":
        return (rows - positives) / positives
    return float(class_weight)


def validation_split(frame: pd.DataFrame, es: EarlyStopping) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fitting rows, validation tail): the frame in (ts, transaction_id) order, cut so the
    tail holds its latest rows (the last validation_days days, else validation_fraction)."""
    if TS_COLUMN not in frame.columns or not pd.api.types.is_datetime64_any_dtype(frame[TS_COLUMN]):
        raise MissingColumnError(f"xgboost.early_stopping needs the training set's '{TS_COLUMN}' timestamp column; "
                                 "it must come from the training-set job")
    keys = [TS_COLUMN] + (["transaction_id"] if "transaction_id" in frame.columns else [])
    ordered = frame.sort_values(keys, kind="stable", ignore_index=True)
    ts = ordered[TS_COLUMN]
    if es.validation_days is not None:
        cut = int(np.searchsorted(ts.to_numpy(), (ts.iloc[-1] - pd.Timedelta(days=es.validation_days)).to_datetime64(),
                                  side="right"))
    else:
        cut = len(ordered) - max(1, round(len(ordered) * float(es.validation_fraction or 0)))
    return ordered.iloc[:cut].reset_index(drop=True), ordered.iloc[cut:].reset_index(drop=True)


def trials(search: Search | None, seed: int) -> list[dict[str, Any]]:
    """The parameter sets to fit: the grid in declared order, or max_trials of it drawn by
    the seed when larger ([{}]: no search, one fit with the spec's parameters)."""
    if search is None:
        return [{}]
    names = [k for k, _ in search.grid]
    grid = [dict(zip(names, values)) for values in itertools.product(*(v for _, v in search.grid))]
    if len(grid) <= search.max_trials:
        return grid
    picked = np.random.default_rng(seed).choice(len(grid), size=search.max_trials, replace=False)
    return [grid[i] for i in sorted(int(i) for i in picked)]


def best_trial(done: list[dict[str, Any]], maximise: bool) -> dict[str, Any]:
    """The trial with the best validation score; a tie keeps the earlier one (declared order)."""
    best = done[0]
    for t in done[1:]:
        if (t["score"] > best["score"]) if maximise else (t["score"] < best["score"]):
            best = t
    return best


def _metric(params: dict[str, Any]) -> str:
    metric = params.get("eval_metric", "logloss")
    return str(metric[-1] if isinstance(metric, (list, tuple)) else metric)  # XGBoost stops on the last one


def _validate(frame: pd.DataFrame, spec: TrainingSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Early stopping (and the search) on the validation tail: the record of what was chosen."""
    x, es = spec.xgboost, spec.xgboost.early_stopping
    assert es is not None
    fit, tail = validation_split(frame, es)
    key = "validation_days" if es.validation_days is not None else "validation_fraction"
    for part, name in ((fit, "fitting rows"), (tail, "validation tail")):
        pos = int(part[LABEL_COLUMN].sum())
        if len(part) == 0 or pos in (0, len(part)):
            raise RatchetError(
                f"early stopping's {name} hold {len(part)} rows with {pos} positives; both labels are needed: "
                f"change xgboost.early_stopping.{key} ({getattr(es, key)}) or widen windows.train_days")
    dfit, dval = (xgb.DMatrix(feature_matrix(p, spec.features), label=p[LABEL_COLUMN].to_numpy(dtype=np.float32),
                              weight=sample_weights(p, spec.censoring), feature_names=list(spec.features))
                  for p in (fit, tail))
    metric = _metric(params)
    maximise = metric.startswith(_MAXIMISED)
    done: list[dict[str, Any]] = []
    for overrides in trials(x.search, spec.seed):
        b = xgb.train({**params, **overrides}, dfit, num_boost_round=x.num_boost_round,
                      evals=[(dval, "validation")], early_stopping_rounds=es.rounds, verbose_eval=False)
        done.append({"params": overrides, "best_iteration": int(b.best_iteration), "score": float(b.best_score)})
    best = best_trial(done, maximise)
    return {"metric": metric, "best_iteration": best["best_iteration"], "best_score": best["score"],
            "stopped_early": best["best_iteration"] + 1 < x.num_boost_round, "chosen": dict(best["params"]),
            "validation": {key: getattr(es, key), "rounds": es.rounds, "rows": len(tail),
                           "positives": int(tail[LABEL_COLUMN].sum()), "fit_rows": len(fit),
                           "from": str(tail[TS_COLUMN].iloc[0]), "to": str(tail[TS_COLUMN].iloc[-1])},
            "search": None if x.search is None else {"max_trials": x.search.max_trials,
                                                     "grid_size": int(np.prod([len(v) for _, v in x.search.grid])),
                                                     "trials": done},
            "refit": "whole train window"}


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
