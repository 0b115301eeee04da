"""Registry on a real MLflow SQLite store: versions, aliases, tags and history read back."""

import json
import subprocess
import sys

import numpy as np
import pytest
import xgboost as xgb

from ratchet.errors import RegistryError
from ratchet.registry import Registry, ReleaseRecord
from ratchet.train.trainer import save_model


@pytest.fixture()
def registry(tmp_path):
    return Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", "fraud")


@pytest.fixture()
def model_path(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((300, 3))
    booster = xgb.train({"tree_method": "hist", "objective": "binary:logistic"},
                        xgb.DMatrix(x, label=(x[:, 0] > 0.5).astype(int), feature_names=["a", "b", "c"]), 5)
    return str(save_model(booster, tmp_path / "m"))


def record(model_path, passed=True, rows=300, reason="gate passed"):
    return ReleaseRecord(model_path=model_path, spec_yaml="name: t\n", spec_hash="h" * 64,
                         snapshot={"path": "/data/x.parquet", "rows": rows, "content_hash": "c" * 64},
                         windows={"train_start": "2025-01-01"}, metrics={"auc": 0.91, "rows": rows},
                         verdict={"passed": passed, "clauses": []},
                         verdict_renderings={"verdict.md": "## verdict\nall good", "verdict.html": "<p>ok</p>"},
                         passed=passed, reason=reason, code_revision="abc123", seed=7, params={"eta": 0.1})


def test_register_tags_and_artifacts(registry, model_path):
    v = registry.register(record(model_path))
    assert v == 1
    tags = registry.tags(v)
    assert tags["state"] == "candidate" and tags["verdict"] == "passed"
    assert tags["spec_hash"] == "h" * 64 and tags["data_rows"] == "300" and tags["code_revision"] == "abc123"
    assert json.loads(tags["windows"]) == {"train_start": "2025-01-01"}
    assert registry.aliases() == {}
    run = registry.client.get_run(tags["run_id"])
    assert run.data.metrics["auc"] == pytest.approx(0.91)
    names = {a.path for a in registry.client.list_artifacts(tags["run_id"], "release")}
    assert {"release/spec.yaml", "release/verdict.json", "release/verdict.html", "release/data_snapshot.json"} <= names
    mv = registry.client.get_model_version("fraud", "1")
    assert "all good" in mv.description
    # the model comes back in XGBoost's own format with its feature names
    assert registry.load_booster(v).feature_names == ["a", "b", "c"]



def test_a_long_verdict_is_cut_at_a_line_end_and_says_where_the_whole_one_is(registry, model_path):
    from dataclasses import replace

    rows = "\n".join(f"| merchant_id=m{i:05d} | not judged | {i} |" for i in range(300))
    long_md = "## verdict\n\n| slice | status | n |\n|---|---|---|\n" + rows + "\n\n## Clauses\nthe end"
    assert len(long_md) > 10_000
    v = registry.register(replace(record(model_path), verdict_renderings={"verdict.md": long_md}))
    text = registry.client.get_model_version("fraud", str(v)).description
    assert len(text) <= 5000 and text.startswith("## verdict")
    body, note = text.rsplit("\n\n", 1)
    assert body.endswith(" |") and body.split("\n")[-1] in long_md.split("\n")   # whole table rows only
    assert "cut here" in note and "release/verdict.md" in note and "release/verdict.html" in note
    names = {a.path for a in registry.client.list_artifacts(registry.tags(v)["run_id"], "release")}
    assert "release/verdict.md" in names                                          # where the note points


def test_history_with_huge_evidence_stays_valid_json(registry, model_path):
    v = registry.register(record(model_path))
    registry.set_stage(v, "staging", actor="controller", reason="r" * 8000,
                       evidence={"questions": ["merchant_id=m%05d" % i for i in range(2000)], "decisions": 20000})
    registry.record_transition(v, "staging", "staging", actor="controller", reason="note",
                               evidence={f"k{i}": "x" * 100 for i in range(100)})
    events = registry.history(v)                                                   # every tag parses
    assert [e["to"] for e in events] == ["candidate", "staging", "staging"]
    big, many = events[1], events[2]
    assert big["evidence"]["decisions"] == 20000 and len(big["evidence"]["questions"]) == 200
    assert big["reason"] == "r" * 1000 and big["actor"] == "controller"
    assert "100 evidence item(s) too long" in many["evidence"]["cut"]
    assert all(len(t) <= 5000 for k, t in registry.tags(v).items() if k.startswith("history."))

def test_rejected_version_cannot_take_a_stage(registry, model_path):
    v = registry.register(record(model_path, passed=False, reason="gate failed: fpr"))
    assert registry.tags(v)["state"] == "rejected"
    assert registry.tags(v)["reason"] == "gate failed: fpr"
    with pytest.raises(RegistryError, match="rejected"):
        registry.set_stage(v, "staging", actor="t", reason="try")
    assert registry.aliases() == {}


def test_stages_history_and_retirement(registry, model_path):
    v1 = registry.register(record(model_path))
    registry.set_stage(v1, "production", actor="bootstrap", reason="first")
    v2 = registry.register(record(model_path))
    registry.set_stage(v2, "staging", actor="pipeline", reason="gate passed")
    registry.set_stage(v2, "staging", actor="pipeline", reason="again")  # idempotent: no new event
    assert registry.aliases() == {"production": 1, "staging": 2}
    assert [e["to"] for e in registry.history(v2)] == ["candidate", "staging"]
    registry.set_stage(v2, "production", actor="person", reason="ramp done")
    assert registry.alias_version("production") == 2
    assert registry.tags(v1)["state"] == "retired"
    assert registry.history(v1)[-1]["reason"] == "replaced by version 2"
    assert registry.previous_rows() == 300


def test_unknown_version_and_stage(registry, model_path):
    with pytest.raises(RegistryError, match="no version 9"):
        registry.tags(9)
    v = registry.register(record(model_path))
    with pytest.raises(RegistryError, match="unknown stage 'prod'"):
        registry.set_stage(v, "prod", actor="t", reason="x")


def test_state_survives_a_fresh_process(registry, model_path, tmp_path):
    v = registry.register(record(model_path))
    registry.set_stage(v, "production", actor="t", reason="x")
    code = ("from ratchet.registry import Registry; import sys; "
            f"r = Registry(sys.argv[1], 'fraud'); print(r.alias_version('production'), r.tags({v})['state'])")
    out = subprocess.run([sys.executable, "-c", code, registry.tracking_uri], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["1", "production"]


def _controller_tags(registry):
    tags = registry.client.get_registered_model(registry.model_name).tags or {}
    return sorted(k for k in tags if k.startswith("ratchet.controller.pending"))


def test_a_long_controller_value_leaves_no_parts_behind(registry, model_path):
    registry.register(record(model_path))
    long_a, long_b = "a" * 9000, "b" * 4500
    registry.put_controller_state("pending", long_a)
    assert registry.controller_state("pending") == long_a
    assert len(_controller_tags(registry)) == 1 + 3  # header + 3 parts
    registry.put_controller_state("pending", long_b)  # another long value: the old parts go
    assert registry.controller_state("pending") == long_b and len(_controller_tags(registry)) == 1 + 2
    registry.put_controller_state("pending", "short")
    assert registry.controller_state("pending") == "short" and _controller_tags(registry) == ["ratchet.controller.pending"]
    registry.put_controller_state("pending", long_a)
    registry.put_controller_state("pending", None)
    assert registry.controller_state("pending") is None and _controller_tags(registry) == []


def test_orphan_parts_of_an_interrupted_write_are_removed_by_the_next(registry, model_path):
    registry.register(record(model_path))
    registry.client.set_registered_model_tag(registry.model_name, "ratchet.controller.pending.abc.part0", "x")
    assert registry.controller_state("pending") is None  # no header: the orphan is never read
    registry.put_controller_state("pending", None)
    assert _controller_tags(registry) == []


def test_version_logs_a_signature_and_an_input_example(registry, model_path, tmp_path):
    """The MLflow UI's "Inputs (3)": the booster's features as float32 columns, in its order; the
    example is the first rows of the table named in example_rows (a NaN stays a missing value)."""
    import dataclasses

    import mlflow
    import pandas as pd

    rows = pd.DataFrame({"c": [0.5, 0.25, 0.75, 0.1, 0.9, 0.3], "label": [0, 1, 0, 1, 0, 1],
                         "a": [0.9, np.nan, 0.2, 0.6, 0.4, 0.8], "b": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    rows.to_parquet(tmp_path / "test.parquet")
    v = registry.register(dataclasses.replace(record(model_path), example_rows=str(tmp_path / "test.parquet")))
    info = mlflow.models.get_model_info(f"models:/fraud/{v}")
    inputs = info.signature.inputs.to_dict()
    assert [(c["name"], c["type"]) for c in inputs] == [("a", "float"), ("b", "float"), ("c", "float")]
    assert info.signature.outputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1,)},
                                                 "name": "score"}]
    model = mlflow.pyfunc.load_model(f"models:/fraud/{v}")
    example = model.input_example
    assert list(example.columns) == ["a", "b", "c"] and len(example) == 5
    assert np.isnan(example["a"].iloc[1]) and example["b"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    # the served model (the booster) and MLflow's pyfunc give the example the same scores
    booster = registry.load_booster(v)
    expected = booster.inplace_predict(example.to_numpy(dtype=np.float32))
    assert np.allclose(np.asarray(model.predict(example)), expected)


def test_an_example_table_without_a_feature_is_refused_before_anything_is_logged(registry, model_path, tmp_path):
    import dataclasses

    import pandas as pd

    pd.DataFrame({"a": [0.1], "c": [0.2]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(RegistryError, match=r"x.parquet lacks the model's feature\(s\) b"):
        registry.register(dataclasses.replace(record(model_path), example_rows=str(tmp_path / "x.parquet")))
    assert registry.versions() == []
    assert registry.client.get_experiment_by_name("ratchet-releases") is None


def test_a_booster_without_feature_names_gets_a_matrix_signature(registry, tmp_path):
    import mlflow

    x = np.random.default_rng(1).random((50, 2))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0.5).astype(int)), 2)
    v = registry.register(record(str(save_model(booster, tmp_path / "unnamed"))))
    sig = mlflow.models.get_model_info(f"models:/fraud/{v}").signature
    assert sig.inputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 2)}}]


def test_signature_columns_are_required_as_the_decision_service_requires_them(registry, tmp_path):
    """Required: every feature but the spec's missing_features.allowed (the service's 422 rule);
    a release whose spec is no ratchet spec of these features marks every column optional."""
    import dataclasses

    import mlflow

    names = ["amount", "hour_of_day", "seconds_since_card_prev"]
    x = np.random.default_rng(2).random((80, 3))
    booster = xgb.train({"objective": "binary:logistic"},
                        xgb.DMatrix(x, label=(x[:, 0] > 0.5).astype(int), feature_names=names), 2)
    path = str(save_model(booster, tmp_path / "named"))

    def required(spec_yaml):
        v = registry.register(dataclasses.replace(record(path), spec_yaml=spec_yaml))
        cols = mlflow.models.get_model_info(f"models:/fraud/{v}").signature.inputs.to_dict()
        return {c["name"]: c["required"] for c in cols}

    spec = "name: t\nfeatures: [amount, hour_of_day, seconds_since_card_prev]\n"
    assert required(spec) == {"amount": True, "hour_of_day": True, "seconds_since_card_prev": False}
    assert required(spec + "missing_features:\n  allowed: [hour_of_day]\n") == {
        "amount": True, "hour_of_day": False, "seconds_since_card_prev": True}
    assert required("name: t\n") == dict.fromkeys(names, False)
