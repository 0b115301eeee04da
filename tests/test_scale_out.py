"""Scale-out on Spark: distributed XGBoost and Spark scoring give the single-process verdict.

Local mode (the session's local[2], two XGBoost workers) on a hand-made feature table
shaped like the training-set job's output, judged with contracts/fraud.yaml. The spec's
spark: section is checked without starting Spark.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratchet.contracts import evaluate_contract, load_contract
from ratchet.data.spark import EXECUTOR_KEYS, session_settings
from ratchet.errors import RatchetError, SpecError
from ratchet.evaluate.scoring import Thresholds, scored_table
from ratchet.evaluate.spark_scoring import use_spark_scoring
from ratchet.train.spec import MASTER_ENV, SparkSpec, parse_spec
from ratchet.train.trainer import load_model, predict, train_model

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["amount", "hour_of_day", "is_online", "cross_border", "seconds_since_card_prev", "card_count_24h",
            "merchant_fraud_rate_30d"]

SPEC = """\
name: scale
label: is_fraud
features: {features}
xgboost:
  num_boost_round: {rounds}
  distributed: {distributed}
  params: {{max_depth: 4, eta: 0.2}}
"""


def spec_text(distributed: bool = False, features: list[str] = FEATURES, rounds: int = 40) -> str:
    return SPEC.format(features=json.dumps(features), rounds=rounds, distributed=str(distributed).lower())


def feature_table(n: int, seed: int, start: str) -> pd.DataFrame:
    """Rows shaped like the training-set job's output: id, ts, label, features, slice columns."""
    rng = np.random.default_rng(seed)
    country = rng.choice(["DE", "FR", "ES", "BR"], n, p=[0.45, 0.25, 0.2, 0.1])
    card_country = np.where(rng.random(n) < 0.85, country, "DE")
    online = (rng.random(n) < 0.4).astype(float)
    merchant = rng.integers(0, 12, n)
    category = np.array(["grocery", "travel", "digital", "fuel"])[merchant % 4]
    amount = np.round(rng.gamma(2.0, 40.0, n), 2)
    hour = rng.integers(0, 24, n).astype(float)
    since = rng.exponential(86400.0, n)
    since[rng.random(n) < 0.1] = np.nan  # a card's first transaction
    count24 = rng.poisson(1.5, n).astype(float)
    merchant_rate = (merchant % 4 == 2) * 0.05 + rng.random(n) * 0.01
    cross = (country != card_country).astype(float)
    logit = (-6.0 + 2.5 * cross + 1.5 * online + 1.2 * np.log(amount / 60) + 0.9 * count24 + 30 * merchant_rate
             + 2.0 * ((hour < 5) & (online == 1)) + 1.5 * np.isnan(since) - np.log1p(np.nan_to_num(since) / 3600))
    fraud = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8")
    ts = pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.integers(0, 30 * 86400, n)), unit="s")
    return pd.DataFrame({
        "transaction_id": np.arange(seed * 1_000_000, seed * 1_000_000 + n, dtype="int64"),
        "ts": ts.astype("datetime64[us]"), "label": fraud,
        "amount": amount, "hour_of_day": hour, "is_online": online, "cross_border": cross,
        "seconds_since_card_prev": since, "card_count_24h": count24, "merchant_fraud_rate_30d": merchant_rate,
        "merchant_id": np.char.add("m", merchant.astype(str)), "merchant_category": category, "country": country,
        "card_country": card_country, "channel": np.where(online == 1, "online", "card_present"),
        "card_id": np.char.add("c", rng.integers(0, 3000, n).astype(str)),
    })


def statuses(verdict) -> list[tuple[str, str, str]]:
    return sorted((r.name, r.slice, r.status) for r in verdict.results)


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """Train/test Parquet, a weaker 'production' model, and the candidate trained both ways."""
    from ratchet.app.steps.release import train_step

    tmp = tmp_path_factory.mktemp("scale")
    train, test = feature_table(16_000, seed=1, start="2025-01-01"), feature_table(12_000, seed=2, start="2025-03-01")
    (tmp / "train.parquet").mkdir()
    (tmp / "test.parquet").mkdir()
    for name, frame in (("train", train), ("test", test)):  # two parts each, like a Spark write
        half = len(frame) // 2
        frame.iloc[:half].to_parquet(tmp / f"{name}.parquet" / "part-0.parquet", index=False)
        frame.iloc[half:].to_parquet(tmp / f"{name}.parquet" / "part-1.parquet", index=False)
    baseline = train_model(train, parse_spec(spec_text(features=FEATURES[:4], rounds=15))).booster
    single = train_model(train, parse_spec(spec_text())).booster
    # the release step itself: spec says distributed, so xgboost.spark on the active local[2] session
    info = train_step(str(tmp / "train.parquet"), spec_text(distributed=True), "scale.yaml",
                      str(tmp / "model.ubj"), str(tmp / "reports"))
    return {"tmp": tmp, "train": train, "test": test, "baseline": baseline, "single": single,
            "distributed": load_model(info["model_path"]), "info": info,
            "contract": load_contract(ROOT / "contracts/fraud.yaml"),
            "thresholds": Thresholds(0.1, {"m2": 0.08, "m5": 0.12})}


@pytest.mark.slow
def test_distributed_training_gives_the_single_process_verdict(world):
    dist, single, test = world["distributed"], world["single"], world["test"]
    info = world["info"]
    assert (info["rows"], info["positives"]) == (len(world["train"]), int(world["train"]["label"].sum()))
    # saved like the single-process model: UBJSON, the spec's feature names, no feature types
    assert Path(info["model_path"]).suffix == ".ubj"
    assert dist.feature_names == single.feature_names == FEATURES
    assert dist.feature_types == single.feature_types
    assert dist.num_boosted_rounds() == single.num_boosted_rounds() == 40

    p_dist, p_single = predict(dist, test), predict(single, test)
    from sklearn.metrics import roc_auc_score

    auc_d, auc_s = roc_auc_score(test["label"], p_dist), roc_auc_score(test["label"], p_single)
    corr = np.corrcoef(p_dist, p_single)[0, 1]
    print(f"distributed vs single-process: max |score diff| {np.abs(p_dist - p_single).max():.4f}, "
          f"mean {np.abs(p_dist - p_single).mean():.5f}, correlation {corr:.5f}, AUC {auc_d:.4f} vs {auc_s:.4f}")
    # each worker draws its own rows and columns (subsample, colsample_bytree 0.8): close, not equal
    assert abs(auc_d - auc_s) < 0.01 and np.abs(p_dist - p_single).mean() < 0.02

    contract = world["contract"]
    for baseline, thresholds in ((None, None), (world["baseline"], world["thresholds"])):
        v_single = evaluate_contract(contract, scored_table(test, single, baseline, thresholds))
        v_dist = evaluate_contract(contract, scored_table(test, dist, baseline, thresholds))
        assert v_dist.passed == v_single.passed
        assert statuses(v_dist) == statuses(v_single)
        judged = [s for s in statuses(v_single) if s[2] != "not_judged"]
        assert len(judged) >= (1 if baseline is None else 30), "the verdict judged too little to compare"


@pytest.mark.slow
def test_spark_scoring_gives_local_scores_and_verdict(world):
    from ratchet.evaluate.spark_scoring import score_on_spark

    tmp, test, contract = world["tmp"], world["test"], world["contract"]
    cand, base, thresholds = world["distributed"], world["baseline"], world["thresholds"]
    local = scored_table(test, cand, base, thresholds)
    remote, test_sample, train_sample = score_on_spark(tmp / "test.parquet", cand, base, thresholds,
                                                       SparkSpec(scoring="spark"), tmp / "train.parquet")
    assert list(remote.columns) == list(local.columns)  # no feature columns came back
    assert len(test_sample) == len(test) and len(train_sample) == len(world["train"])  # below the sample size
    # Spark reads parts in its own order; the contract aggregates, so compare as sets of rows
    key = ["ts", "card_id"]
    local, remote = (f.sort_values(key, ignore_index=True) for f in (local, remote))
    pd.testing.assert_frame_equal(remote.drop(columns=["candidate_score", "baseline_score", "ts"]),
                                  local.drop(columns=["candidate_score", "baseline_score", "ts"]))
    assert (remote["ts"].to_numpy() == local["ts"].to_numpy()).all()
    for col in ("candidate_score", "baseline_score"):
        assert remote[col].dtype == local[col].dtype == np.float32
        np.testing.assert_allclose(remote[col], local[col], rtol=0, atol=1e-6)
    v_local, v_remote = evaluate_contract(contract, local), evaluate_contract(contract, remote)
    assert v_remote.passed == v_local.passed and statuses(v_remote) == statuses(v_local)
    assert v_remote.to_dict()["overall"] == v_local.to_dict()["overall"]


@pytest.mark.slow
def test_distributed_training_refuses_more_workers_than_local_slots(spark):
    from ratchet.train.distributed import train_distributed

    frame = spark.createDataFrame(feature_table(200, seed=3, start="2025-01-01"))
    with pytest.raises(RatchetError, match="xgboost_workers is 3 but the local Spark master has 2 task slots"):
        train_distributed(frame, parse_spec(spec_text(distributed=True)), num_workers=3)


# --- the spark: section (no Spark started) ------------------------------------------------

def spark_spec_text(master: str, memory: str) -> str:
    return spec_text() + f"""\
spark:
  master: {master}
  conf: {{spark.sql.shuffle.partitions: 400, spark.eventLog.enabled: true}}
  executor:
    image: ghcr.io/acme/ratchet:1.4
    instances: 8
    cores: 4
    memory: {memory}
"""


def test_spark_section_defaults_and_hash():
    plain = parse_spec(spec_text())
    assert plain.spark == SparkSpec() and plain.spark.master == "local[2]" and plain.spark.xgboost_workers == 2
    cluster = parse_spec(spark_spec_text(master="k8s://https://kube:6443", memory="8g"))
    assert cluster.spec_hash() == plain.spec_hash(), "where a recipe runs does not change the recipe"
    assert parse_spec(spec_text(distributed=True)).spec_hash() != plain.spec_hash()


@pytest.mark.parametrize(("master", "memory", "line", "message"), [
    ("7", "8g", 9, "spark.master: expected a string, got 7"),
    ("mesos://x:5050", "8g", 9, "spark.master: expected local[N], k8s://"),
    ("local[2]", "8 gigs", 15, "spark.executor.memory: expected a Spark size like 4g or 512m, got '8 gigs'"),
    ("local[2]", "true", 15, "spark.executor.memory: expected a string, got True"),
])
def test_spark_section_errors_name_file_and_line(master, memory, line, message):
    with pytest.raises(SpecError) as err:
        parse_spec(spark_spec_text(master=master, memory=memory), "specs/big.yaml")
    assert str(err.value).startswith(f"specs/big.yaml:{line}: {message}")


def test_spark_section_rejects_unknown_keys_and_bad_values():
    base = spec_text() + "spark:\n"
    cases = {
        "  executor: {gpus: 2}\n": "specs/x.yaml:9: spark.executor.gpus: unknown key; allowed: cores, image",
        "  executor: {instances: 0}\n": "specs/x.yaml:9: spark.executor.instances: expected a positive number",
        "  conf: {sql.shuffle: 4}\n": "specs/x.yaml:9: spark.conf.sql.shuffle: Spark settings start with 'spark.'",
        "  scoring: always\n": "specs/x.yaml:9: spark.scoring: expected one of auto, local, spark",
        "  xgboost_workers: two\n": "specs/x.yaml:9: spark.xgboost_workers: expected an integer",
        "  executors: {}\n": "specs/x.yaml:9: spark.executors: unknown key",
    }
    for text, message in cases.items():
        with pytest.raises(SpecError) as err:
            parse_spec(base + text, "specs/x.yaml")
        assert str(err.value).startswith(message), str(err.value)


def test_k8s_master_sets_executor_conf_and_env_overrides_master():
    spec = parse_spec(spark_spec_text(master="k8s://https://kube:6443", memory="8g")).spark
    master, conf = session_settings(spec, env={})
    assert master == "k8s://https://kube:6443"
    assert conf == {"spark.kubernetes.container.image": "ghcr.io/acme/ratchet:1.4", "spark.executor.instances": "8",
                    "spark.executor.cores": "4", "spark.executor.memory": "8g",
                    "spark.sql.shuffle.partitions": "400", "spark.eventLog.enabled": "true"}
    assert set(EXECUTOR_KEYS.values()) <= set(conf)
    # the same spec on a laptop (env override to local) or via Spark Connect: no executor pods
    for other in ("local[2]", "sc://spark-connect:15002"):
        m, c = session_settings(spec, env={MASTER_ENV: other})
        assert m == other and c == {"spark.sql.shuffle.partitions": "400", "spark.eventLog.enabled": "true"}
    with pytest.raises(SpecError, match="RATCHET_SPARK_MASTER='nope' is not a Spark master"):
        session_settings(spec, env={MASTER_ENV: "nope"})


def test_scoring_switch():
    assert not use_spark_scoring(SparkSpec(), 4_999_999) and use_spark_scoring(SparkSpec(), 5_000_000)
    assert use_spark_scoring(SparkSpec(scoring="spark"), 10)
    assert not use_spark_scoring(SparkSpec(scoring="local"), 10**9)
    assert use_spark_scoring(SparkSpec(scoring_min_rows=1000), 1000)


@pytest.mark.slow
def test_evaluate_step_scores_on_spark_when_the_spec_says_so(world):
    from ratchet.app.steps.release import evaluate_step

    tmp = world["tmp"]
    spec_yaml = spec_text() + "spark: {scoring: spark}\n"
    passed = evaluate_step(str(tmp / "test.parquet"), world["info"]["model_path"],
                           (ROOT / "contracts/fraud.yaml").read_text(), "contracts/fraud.yaml",
                           f"sqlite:///{tmp / 'mlflow.db'}", "scale", True, str(tmp / "eval"), str(tmp / "reports"),
                           spec_yaml=spec_yaml, spec_name="scale.yaml")
    local = evaluate_contract(world["contract"], scored_table(world["test"], world["distributed"]))
    local.open_questions_block = True  # a bootstrap (no production) judges as evaluate_step does
    evaluation = json.loads((tmp / "eval" / "evaluation.json").read_text())
    assert passed == local.passed and evaluation["metrics"]["rows"] == len(world["test"])
    assert evaluation["metrics"]["auc"] == pytest.approx(local.overall["candidate"]["auc"])
