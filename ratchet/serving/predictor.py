"""Single-row scoring without XGBoost's per-call overhead: the booster's trees compiled
into flat arrays and walked by a numba kernel.

One `booster.inplace_predict` of one row costs 110-330 us here (argument checks, a
proxy DMatrix, thread set-up); 150 trees of depth 6 are ~1,000 comparisons, a few
microseconds. `compile_booster` reads the loaded booster's own JSON (the model is still
loaded from MLflow in XGBoost's format; this is derived from it) and returns a
`CompiledTrees` whose `predict(x)` matches `booster.inplace_predict(x)` (float32 in,
float32 probabilities out; a split sends a row left when `x < split_condition`, NaN
goes the node's default direction, base_score is a probability for binary:logistic).
The kernel runs without the GIL (`nogil`), so a batch scored by the shadow thread
does not stall the request path.

Anything it does not reproduce exactly -- another objective, multi-output, categorical
splits, dart, a best_iteration that would limit the trees -- returns None with the
reason, and the caller keeps using the booster.

    >>> ct, why = compile_booster(booster)
    >>> ct.predict(np.array([[12.5, np.nan, 3.0]], dtype=np.float32))
    array([0.0312], dtype=float32)
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _predict(x, left, right, feature, cond, default_left, roots, base_margin, out):  # noqa: ANN001, ANN202
    n_trees = roots.shape[0]
    for i in range(x.shape[0]):
        # XGBoost accumulates margins in float32, tree by tree, starting from the base margin
        acc = np.float32(base_margin)
        for t in range(n_trees):
            node = roots[t]
            while left[node] != -1:
                v = x[i, feature[node]]
                if np.isnan(v):
                    node = left[node] if default_left[node] else right[node]
                elif v < cond[node]:
                    node = left[node]
                else:
                    node = right[node]
            acc = np.float32(acc + cond[node])  # a leaf's split_condition holds its value
        out[i] = np.float32(1.0) / (np.float32(1.0) + np.exp(-acc))  # float32, as XGBoost
    return out


class CompiledTrees:
    """A binary:logistic gbtree as flat node arrays (node ids are global across trees)."""

    def __init__(self, left: np.ndarray, right: np.ndarray, feature: np.ndarray, cond: np.ndarray,
                 default_left: np.ndarray, roots: np.ndarray, base_margin: float, n_features: int) -> None:
        self.left, self.right, self.feature, self.cond = left, right, feature, cond
        self.default_left, self.roots = default_left, roots
        self.base_margin = np.float32(base_margin)
        self.n_features = n_features

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a (rows, {self.n_features}) matrix, got shape {x.shape}")
        out = np.empty(x.shape[0], dtype=np.float32)
        return _predict(x, self.left, self.right, self.feature, self.cond, self.default_left, self.roots,
                        self.base_margin, out)

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])


def _base_score(raw: Any) -> float:
    """XGBoost >= 3 writes base_score as a vector string ('[5.32E-1]'), older versions as a scalar."""
    text = str(raw).strip()
    if text.startswith("["):
        values = [float(v) for v in text.strip("[]").split(",") if v.strip()]
        if len(values) != 1:
            raise ValueError(f"base_score has {len(values)} values")
        return values[0]
    return float(text)


def compile_booster(booster: Any) -> tuple[CompiledTrees | None, str]:
    """(CompiledTrees, "") or (None, why not) for an xgboost.Booster."""
    try:
        if booster.attr("best_iteration") is not None:
            return None, "the booster has a best_iteration (early stopping); the booster decides which trees count"
        doc = json.loads(booster.save_raw("json"))
        learner = doc["learner"]
        objective = learner["objective"]["name"]
        if objective != "binary:logistic":
            return None, f"objective {objective} (only binary:logistic is compiled)"
        param = learner["learner_model_param"]
        if int(param.get("num_class", "0")) > 1 or int(param.get("num_target", "1")) != 1:
            return None, "multi-output model"
        if any(t not in ("float", "int", "i", "q") for t in (learner.get("feature_types") or [])):
            return None, f"feature types {sorted(set(learner['feature_types']))} (categorical features)"
        gb = learner["gradient_booster"]
        if gb.get("name") != "gbtree":
            return None, f"booster {gb.get('name')} (only gbtree is compiled)"
        model = gb["model"]
        trees = model["trees"]
        if any(int(t) != 0 for t in model.get("tree_info", [])):
            return None, "trees for more than one output group"
        n_features = int(param["num_feature"])
        base = _base_score(param["base_score"])
        if not 0.0 < base < 1.0:
            return None, f"base_score {base} is not a probability"
        base_margin = math.log(base / (1.0 - base))
        left, right, feature, cond, dleft, roots = [], [], [], [], [], []
        offset = 0
        for tree in trees:
            if any(int(s) != 0 for s in tree.get("split_type", [])) or tree.get("categories"):
                return None, "categorical splits"
            if int(tree.get("tree_param", {}).get("size_leaf_vector", "1")) > 1:
                return None, "vector leaves (multi-target trees)"
            lc = np.asarray(tree["left_children"], dtype=np.int64)
            rc = np.asarray(tree["right_children"], dtype=np.int64)
            inner = lc != -1
            left.append(np.where(inner, lc + offset, -1))
            right.append(np.where(inner, rc + offset, -1))
            feature.append(np.asarray(tree["split_indices"], dtype=np.int64))
            cond.append(np.asarray(tree["split_conditions"], dtype=np.float64).astype(np.float32))
            dleft.append(np.asarray(tree["default_left"], dtype=np.uint8))
            roots.append(offset)
            offset += len(lc)
        if not trees:
            return None, "no trees"
        feat = np.concatenate(feature).astype(np.int32)
        lft = np.concatenate(left).astype(np.int32)
        if int(feat[lft != -1].max(initial=0)) >= n_features:
            return None, "a split on a feature index beyond num_feature"
        ct = CompiledTrees(lft, np.concatenate(right).astype(np.int32), feat, np.concatenate(cond),
                           np.concatenate(dleft), np.asarray(roots, dtype=np.int32), base_margin, n_features)
        ct.predict(np.zeros((1, n_features), dtype=np.float32))  # compile (or load the cached kernel) now
        return ct, ""
    except Exception as exc:  # noqa: BLE001 - an unexpected model layout: the booster still scores
        return None, f"could not compile ({type(exc).__name__}: {exc})"
