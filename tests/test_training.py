"""Training options: early stopping on the time-ordered validation tail, the declared search,
class weighting; all deterministic per seed, recorded, and refused by file:line when misspelt."""

import json

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from ratchet.errors import RatchetError, SpecError
from ratchet.train.spec import parse_spec
from ratchet.train.trainer import best_trial, feature_matrix, train_model, trials, validation_split

FEATURES = ["amount", "card_count_1h", "hour_of_day"]
BASE = "name: t\nfeatures: [amount, card_count_1h, hour_of_day]\n"
#: overfits fast on the noisy frame below, so early stopping has something to stop
EARLY = BASE + """\
xgboost:
  num_boost_round: 300
  params: {eta: 0.3}
  early_stopping: {validation_days: 2, rounds: 10}
"""
SEARCH = EARLY.replace("params: {eta: 0.3}", "params: {eta: 0.3}\n  class_weight: balanced\n  search:\n"
                       "    max_depth: [8, 4, 2]\n    min_child_weight: [1, 20]\n    max_trials: 4")


def frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Ten days of rows, shuffled (a Spark read is in no time order), with a noisy label."""
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp("2025-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 10 * 86400, n)).round(), unit="s")
    amount, count, hour = rng.lognormal(3, 1, n), rng.poisson(1.0, n).astype(float), rng.integers(0, 24, n)
    logit = -3.0 + 0.02 * amount + 0.8 * count + rng.normal(0, 1.5, n)
    label = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    df = pd.DataFrame({"transaction_id": [f"t{i:05d}" for i in range(n)], "ts": ts, "amount": amount,
                       "card_count_1h": count, "hour_of_day": hour.astype(float), "label": label})
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def raw(booster: xgb.Booster) -> bytes:
    return bytes(booster.save_raw("ubj"))


def test_a_spec_without_the_options_trains_as_before():
    df, spec = frame(), parse_spec(BASE + "xgboost: {num_boost_round: 20}\n")
    result = train_model(df, spec)
    plain = xgb.train(dict(spec.xgboost.params), xgb.DMatrix(feature_matrix(df, FEATURES), label=df["label"],
                                                                feature_names=FEATURES), num_boost_round=20)
    assert raw(result.booster) == raw(plain)
    assert result.training == {"rounds": 20, "class_weight": None, "scale_pos_weight": None}


def test_early_stopping_stops_before_num_boost_round_and_records_best_iteration():
    result = train_model(frame(), parse_spec(EARLY))
    t = result.training
    assert t["stopped_early"] and t["best_iteration"] + 1 < 300
    assert t["rounds"] == t["best_iteration"] + 1 == result.booster.num_boosted_rounds()
    assert t["metric"] == "aucpr" and 0 < t["best_score"] <= 1
    assert t["validation"]["validation_days"] == 2 and t["validation"]["rows"] + t["validation"]["fit_rows"] == 3000
    json.dumps(t)  # logged with the version as it is


def test_the_validation_tail_is_the_latest_rows_by_time():
    df = frame()
    es = parse_spec(EARLY).xgboost.early_stopping
    fit, tail = validation_split(df, es)
    assert len(fit) + len(tail) == len(df) and set(fit.transaction_id).isdisjoint(tail.transaction_id)
    assert tail.ts.min() > fit.ts.max(), "no row of the validation tail is older than any fitting row"
    assert tail.ts.min() > df.ts.max() - pd.Timedelta(days=2) >= fit.ts.max()
    fit, tail = validation_split(df, parse_spec(EARLY.replace("validation_days: 2", "validation_fraction: 0.25"))
                                 .xgboost.early_stopping)
    assert len(tail) == 750 and tail.ts.min() >= fit.ts.max()
    assert list(tail.sort_values(["ts", "transaction_id"]).transaction_id) == list(tail.transaction_id)


def test_class_weight_balanced_sets_scale_pos_weight_to_negatives_over_positives():
    df = frame()
    pos = int(df.label.sum())
    result = train_model(df, parse_spec(BASE + "xgboost: {num_boost_round: 5, class_weight: balanced}\n"))
    assert result.training["scale_pos_weight"] == pytest.approx((len(df) - pos) / pos)
    config = json.loads(result.booster.save_config())["learner"]["objective"]["reg_loss_param"]
    assert float(config["scale_pos_weight"]) == pytest.approx((len(df) - pos) / pos)
    fixed = train_model(df, parse_spec(BASE + "xgboost: {num_boost_round: 5, class_weight: 3}\n"))
    assert fixed.training["scale_pos_weight"] == 3.0


def test_search_picks_the_best_trial_on_the_validation_tail_within_max_trials():
    result = train_model(frame(), parse_spec(SEARCH))
    t = result.training
    done = t["search"]["trials"]
    assert t["search"]["grid_size"] == 6 and len(done) == 4 == t["search"]["max_trials"]
    best = max(done, key=lambda d: d["score"])  # aucpr: higher is better
    assert best is not done[0], "the data should make a later trial win, or this proves little"
    assert t["chosen"] == best["params"] and t["best_score"] == best["score"]
    assert t["rounds"] == best["best_iteration"] + 1 == result.booster.num_boosted_rounds()
    config = json.loads(result.booster.save_config())["learner"]["gradient_booster"]["tree_train_param"]
    assert int(config["max_depth"]) == t["chosen"]["max_depth"]


def test_a_grid_larger_than_max_trials_is_sampled_by_the_seed_in_grid_order():
    search = parse_spec(SEARCH).xgboost.search
    grid = [{"max_depth": d, "min_child_weight": w} for d in (8, 4, 2) for w in (1, 20)]
    picked = trials(search, 7)
    assert len(picked) == 4 and picked == trials(search, 7) and picked == [g for g in grid if g in picked]
    assert trials(parse_spec(SEARCH.replace("max_trials: 4", "max_trials: 6")).xgboost.search, 7) == grid
    assert trials(None, 7) == [{}]


def test_the_best_trial_follows_the_metric_direction_and_a_tie_keeps_the_earlier():
    done = [{"params": {"max_depth": d}, "score": s} for d, s in ((2, 0.5), (4, 0.7), (6, 0.7), (8, 0.1))]
    assert best_trial(done, maximise=True)["params"] == {"max_depth": 4}
    assert best_trial(done, maximise=False)["params"] == {"max_depth": 8}


@pytest.mark.parametrize("text", [BASE + "xgboost: {num_boost_round: 30}\n", EARLY, SEARCH])
def test_the_same_spec_data_and_seed_give_the_same_model_bytes(text):
    a, b = train_model(frame(), parse_spec(text)), train_model(frame(), parse_spec(text))
    assert raw(a.booster) == raw(b.booster) and a.training == b.training


def test_another_seed_gives_another_model():
    a = train_model(frame(), parse_spec(EARLY))
    b = train_model(frame(), parse_spec("seed: 8\n" + EARLY))
    assert raw(a.booster) != raw(b.booster)


def test_the_released_model_is_the_plain_spec_with_the_recorded_choices():
    """Rebuild exactly: the record's params and rounds, without early stopping or search, train the same bytes."""
    df = frame()
    result = train_model(df, parse_spec(SEARCH))
    t = result.training
    chosen = ", ".join(f"{k}: {v}" for k, v in {**t["chosen"], "scale_pos_weight": t["scale_pos_weight"]}.items())
    plain = parse_spec(BASE + f"xgboost:\n  num_boost_round: {t['rounds']}\n  params: {{eta: 0.3, {chosen}}}\n")
    assert raw(train_model(df, plain).booster) == raw(result.booster)


def test_a_validation_tail_without_both_labels_is_refused():
    df = frame()
    df.loc[df.ts > df.ts.max() - pd.Timedelta(days=2), "label"] = 0
    with pytest.raises(RatchetError, match=r"validation tail hold \d+ rows with 0 positives.*validation_days"):
        train_model(df, parse_spec(EARLY))


@pytest.mark.parametrize("extra, needle", [
    ("  early_stopping: {validation_days: 2}\n  search:\n    max_dpth: [4, 6]\n",
     "s.yaml:6: xgboost.search.max_dpth: unknown XGBoost parameter 'max_dpth': did you mean 'max_depth'?"),
    ("  early_stopping:\n    validation_days: 2\n    round: 3\n",
     "s.yaml:6: xgboost.early_stopping.round: unknown key; allowed: rounds, validation_days, validation_fraction; "
     "did you mean 'rounds'?"),
    ("  num_boost_rounds: 3\n", "s.yaml:4: xgboost.num_boost_rounds: unknown key; allowed: class_weight, "
     "distributed, early_stopping, num_boost_round, params, search; did you mean 'num_boost_round'?"),
    ("  early_stopping: {}\n  search:\n    max_depth: [4]\n    max_trials: 0\n",
     "s.yaml:7: xgboost.search.max_trials: expected a positive integer"),
    ("  early_stopping: {}\n  search:\n    eta: [0.1, -1]\n",
     "s.yaml:6: xgboost.search.eta[1]: expected a non-negative"),
    ("  early_stopping: {}\n  search:\n    seed: [1, 2]\n", "s.yaml:6: xgboost.search.seed: seed is not searched"),
    ("  search:\n    max_depth: [4, 6]\n", "s.yaml:4: xgboost.search: the search scores each trial on early_stopping"),
    ("  params: {max_depth: 3}\n  early_stopping: {}\n  search:\n    max_depth: [4, 6]\n",
     "s.yaml:7: xgboost.search.max_depth: max_depth is both set"),
    ("  class_weight: heavy\n", "s.yaml:4: xgboost.class_weight: expected none, balanced or a positive number"),
    ("  class_weight: balanced\n  params: {scale_pos_weight: 2}\n",
     "s.yaml:4: xgboost.class_weight: class_weight sets"),
    ("  early_stopping: {validation_days: 2, validation_fraction: 0.1}\n",
     "s.yaml:4: xgboost.early_stopping.validation_fraction: give validation_days or validation_fraction, not both"),
    ("  early_stopping: {validation_fraction: 1.5}\n",
     "xgboost.early_stopping.validation_fraction: expected a fraction"),
    ("  early_stopping:\n    rounds: 0\n", "s.yaml:5: xgboost.early_stopping.rounds: expected a positive number"),
    ("  distributed: true\n  early_stopping: {}\n", "s.yaml:5: xgboost.early_stopping: early_stopping trains in one"),
])
def test_a_misspelt_or_wrong_training_option_is_refused_with_its_line(extra, needle):
    with pytest.raises(SpecError) as err:
        parse_spec(BASE + "xgboost:\n" + extra, "s.yaml")
    assert needle in str(err.value)


def test_the_options_off_keep_the_recipe_hash_and_on_change_it():
    plain = parse_spec(BASE).spec_hash()
    assert parse_spec(BASE + "xgboost: {class_weight: none, early_stopping: null, search: null}\n").spec_hash() == plain
    assert parse_spec(BASE + "xgboost: {class_weight: balanced}\n").spec_hash() != plain
    assert parse_spec(EARLY).spec_hash() != parse_spec(EARLY.replace("rounds: 10", "rounds: 11")).spec_hash()


def test_the_train_step_writes_the_record_and_register_logs_it_as_params(tmp_path):
    from ratchet.app.steps.release import TRAINING_FILE, train_step, training_params

    frame().to_parquet(tmp_path / "train.parquet")
    info = train_step(str(tmp_path / "train.parquet"), SEARCH, "t.yaml", str(tmp_path / "m" / "model.ubj"),
                      str(tmp_path / "reports"))
    record = json.loads((tmp_path / "m" / TRAINING_FILE).read_text())
    assert record == json.loads(json.dumps(info["training"])) and len(record["search"]["trials"]) == 4
    params = training_params(record)
    assert params["train_rounds"] == record["rounds"] and params["train_class_weight"] == "balanced"
    assert params["train_validation_aucpr"] == record["best_score"] and params["train_search_trials"] == 4
    assert {k for k in params if k.startswith("train_chosen_")} == {"train_chosen_max_depth",
                                                                     "train_chosen_min_child_weight"}


CONTRACT = """\
version: 1
name: training-test
slices: {}
thresholds: {candidate: match_baseline_block_rate, default: 0.5, bootstrap_block_rate: 0.02}
recall_at_fpr: {reference: baseline, bootstrap_fpr: 0.01}
clauses:
  - {name: auc_floor, kind: bound, metric: auc, min: 0.5, min_support: 20}
"""


@pytest.mark.slow
def test_the_release_logs_the_training_record_with_the_version(tmp_path):
    """train_step -> evaluate_step -> register_step: the version holds train_* params and training/training.json."""
    from mlflow.tracking import MlflowClient

    from ratchet.app.steps.release import evaluate_step, register_step, train_step

    ts = tmp_path / "ts"
    ts.mkdir()
    frame().to_parquet(ts / "train.parquet")
    frame(2000, seed=1).to_parquet(ts / "test.parquet")
    (ts / "trainingset.json").write_text(json.dumps({"snapshot": {"rows": 5000}, "windows": {}}))
    model = tmp_path / "m" / "model.ubj"
    train_step(str(ts / "train.parquet"), SEARCH, "t.yaml", str(model), str(tmp_path / "rep"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    evaluate_step(str(ts / "test.parquet"), str(model), CONTRACT, "contracts/t.yaml", uri, "fraud", True,
                  str(tmp_path / "ev"), str(tmp_path / "rep"))
    version = register_step(str(model), SEARCH, "t.yaml", str(ts), str(tmp_path / "ev"), uri, "fraud",
                            str(tmp_path / "rep"))
    client = MlflowClient(uri)
    run = client.get_run(client.get_model_version("fraud", str(version)).run_id)
    record = json.loads((model.parent / "training.json").read_text())
    assert run.data.params["train_rounds"] == str(record["rounds"])
    assert run.data.params["train_chosen_max_depth"] == str(record["chosen"]["max_depth"])
    assert run.data.params["train_class_weight"] == "balanced"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "training")] == ["training/training.json"]
