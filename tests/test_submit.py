"""`ratchet pipeline submit` and `schedule` against a local fake of the KFP v2beta1 API.

The real kfp.Client does the talking, over HTTP; the fake records what arrives.
"""

from __future__ import annotations

import argparse
import json
import socket
import time

import pytest
import yaml
from fakes.kfp_api import FakeKfpServer

from pipelines.submit import (COMPILED, DEFAULT_SCHEDULE_NAME, add_arguments, check_arguments, kfp_cron, main,
                              release_arguments, schedule, schedule_cli, submit, submit_cli)
from ratchet.errors import RatchetError

RUNS = "/apis/v2beta1/runs"
RECURRING = "/apis/v2beta1/recurringruns"


@pytest.fixture
def kfp_api(monkeypatch, tmp_path):
    import kfp.client.client as kfp_client

    # Hermetic: no kfp context file or KFP environment from the machine running the tests.
    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
                "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME", "RATCHET_KFP_TOKEN", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    with FakeKfpServer() as api:
        yield api


@pytest.fixture(scope="module")
def arguments():
    return release_arguments(data="s3a://lake/transactions", spec="specs/fraud.yaml",
                             contract="contracts/fraud.yaml", tracking_uri="http://mlflow.ratchet-prod:5000",
                             as_of="2025-09-01")


def test_submit_sends_the_compiled_pipeline_and_the_arguments(kfp_api, arguments):
    result = submit(kfp_api.url, arguments=arguments, run_name="release-test")

    [run] = kfp_api.requests_to("POST", RUNS)
    compiled = yaml.safe_load(COMPILED.read_text())
    sent = run.body["pipeline_spec"]
    assert sent["pipelineInfo"]["name"] == "ratchet-release"
    assert set(sent["components"]) == set(compiled["components"])
    assert sent == compiled, "the run must carry exactly pipelines/release.yaml"
    assert run.body["runtime_config"]["parameters"] == arguments
    assert run.body["runtime_config"]["parameters"]["spec_yaml"] == open("specs/fraud.yaml").read()
    assert run.body["display_name"] == "release-test"

    [experiment] = kfp_api.state.experiments.values()
    assert experiment["display_name"] == "ratchet"
    assert run.body["experiment_id"] == experiment["experiment_id"] == result["experiment_id"]
    assert result["run_id"] in kfp_api.state.runs
    assert result["url"] == f"{kfp_api.url}/#/runs/details/{result['run_id']}"


def test_submit_reuses_the_experiment_and_sends_the_token(kfp_api, arguments):
    submit(kfp_api.url, arguments=arguments, existing_token="t0ken")
    submit(kfp_api.url, arguments=arguments, existing_token="t0ken")
    assert len(kfp_api.state.experiments) == 1
    assert len(kfp_api.state.runs) == 2
    assert {r.headers.get("authorization") for r in kfp_api.requests_to("POST", RUNS)} == {"Bearer t0ken"}


def test_schedule_sends_a_six_field_cron_and_the_arguments(kfp_api, arguments):
    result = schedule(kfp_api.url, cron="0 3 * * 1", arguments=arguments)

    [created] = kfp_api.requests_to("POST", RECURRING)
    body = created.body
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert body["display_name"] == DEFAULT_SCHEDULE_NAME
    assert body["mode"] == "ENABLE"
    assert body["max_concurrency"] == 1 and body["no_catchup"] is True
    assert body["runtime_config"]["parameters"] == arguments
    assert body["pipeline_spec"] == yaml.safe_load(COMPILED.read_text())
    assert result["cron"] == "0 0 3 * * 1" and result["replaced"] == []
    assert list(kfp_api.state.recurring_runs) == [result["recurring_run_id"]]


def test_scheduling_twice_leaves_one_recurring_run(kfp_api, arguments):
    first = schedule(kfp_api.url, cron="0 3 * * 1", arguments=arguments)
    second = schedule(kfp_api.url, cron="30 4 * * 2", arguments=arguments)

    runs = list(kfp_api.state.recurring_runs.values())
    assert len(runs) == 1
    assert runs[0]["recurring_run_id"] == second["recurring_run_id"]
    assert runs[0]["trigger"]["cron_schedule"]["cron"] == "0 30 4 * * 2"
    assert second["replaced"] == [first["recurring_run_id"]]
    # new one first, then the old one goes: a failure in between never leaves no schedule
    methods = [(r.method, r.path.startswith(RECURRING + "/")) for r in kfp_api.requests
               if r.path.startswith(RECURRING) and r.method != "GET"]
    assert methods == [("POST", False), ("POST", False), ("DELETE", True)]


def test_schedule_collapses_duplicates_across_pages_and_leaves_other_schedules_alone(kfp_api, arguments):
    schedule(kfp_api.url, cron="0 3 * * 1", arguments=arguments, name="someone-elses")
    exp_id = next(iter(kfp_api.state.experiments))
    for i in range(150):  # more than one page (the client asks for 100 at a time)
        name = DEFAULT_SCHEDULE_NAME if i in (3, 140) else f"other-{i}"
        kfp_api.state.recurring_runs[f"seed-{i}"] = {"recurring_run_id": f"seed-{i}", "display_name": name,
                                                     "experiment_id": exp_id, "mode": "ENABLE"}

    result = schedule(kfp_api.url, cron="0 3 * * 1", arguments=arguments)

    names = [r["display_name"] for r in kfp_api.state.recurring_runs.values()]
    assert names.count(DEFAULT_SCHEDULE_NAME) == 1
    assert names.count("someone-elses") == 1 and len(names) == 150
    assert sorted(result["replaced"]) == ["seed-140", "seed-3"]


def test_a_failed_create_keeps_the_old_schedule(kfp_api, arguments):
    first = schedule(kfp_api.url, cron="0 3 * * 1", arguments=arguments)
    kfp_api.failures[("POST", RECURRING)] = (500, "scheduled workflow CRD missing")
    with pytest.raises(RatchetError, match="HTTP 500.*scheduled workflow CRD missing"):
        schedule(kfp_api.url, cron="0 4 * * 1", arguments=arguments)
    assert list(kfp_api.state.recurring_runs) == [first["recurring_run_id"]]


@pytest.mark.parametrize("cron, problem", [
    ("0 3 * *", "expected 5 fields"),
    ("0 3 * * 1 1 1", "expected 5 fields"),
    ("every monday at 3", "expected 5 fields"),
    ("61 3 * * 1", "minute field '61' has 61, outside 0-59"),
    ("0 24 * * 1", "hour field '24'"),
    ("0 3 0 * *", "day of month field '0'"),
    ("0 3 * 13 *", "month field '13'"),
    ("0 3 * * 7", "Sunday is 0"),
    ("0 3 * * FRI-MON", "runs backwards"),
    ("0 3 * * mo", "not in 0-6 or SUN..SAT"),
    ("*/0 3 * * 1", "step of 0"),
    ("0 3 * * 1;", "not a number"),
    ("? 3 * * 1", "cannot be '?'"),
])
def test_a_bad_cron_is_refused_before_any_request(kfp_api, arguments, cron, problem):
    with pytest.raises(RatchetError, match="--cron") as err:
        schedule(kfp_api.url, cron=cron, arguments=arguments)
    assert problem in str(err.value)
    assert kfp_api.requests == []


@pytest.mark.parametrize("cron, expected", [
    ("0 3 * * 1", "0 0 3 * * 1"),
    ("*/15 * * * *", "0 */15 * * * *"),
    ("0 3 * * MON-FRI", "0 0 3 * * MON-FRI"),
    ("0 3 1,15 * *", "0 0 3 1,15 * *"),
    ("0 0 3 ? * 1", "0 0 3 ? * 1"),  # six fields: seconds already first
    ("  0  3 * * 1 ", "0 0 3 * * 1"),
])
def test_kfp_cron_prefixes_seconds(cron, expected):
    assert kfp_cron(cron) == expected


def test_an_unreachable_host_gives_a_clear_error_quickly(arguments):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(RatchetError, match=f"cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}.*port-forward"):
        submit(f"http://127.0.0.1:{port}", arguments=arguments)
    assert time.perf_counter() - started < 5


def test_a_server_that_is_not_kfp_is_named(kfp_api, arguments):
    kfp_api.failures[("GET", "/apis/v2beta1/healthz")] = (404, "not found")
    with pytest.raises(RatchetError, match="answered HTTP 404.*Kubeflow Pipelines API"):
        submit(kfp_api.url, arguments=arguments)
    assert not kfp_api.requests_to("POST", RUNS)


def test_a_host_without_scheme_is_refused(arguments):
    with pytest.raises(RatchetError, match="full URL"):
        submit("localhost:8080", arguments=arguments)


def test_bad_inputs_are_refused_before_any_request(kfp_api, arguments, tmp_path):
    ok = dict(data="/mnt/data/tx", spec="specs/fraud.yaml", contract="contracts/fraud.yaml",
              tracking_uri="http://mlflow:5000")
    with pytest.raises(RatchetError, match="--spec nope.yaml: no such file"):
        release_arguments(**{**ok, "spec": "nope.yaml"})
    with pytest.raises(RatchetError, match="--contract .*missing.yaml: no such file"):
        release_arguments(**{**ok, "contract": str(tmp_path / "missing.yaml")})
    with pytest.raises(RatchetError, match="relative path"):
        release_arguments(**{**ok, "data": "data.parquet"})
    with pytest.raises(RatchetError, match="local store cannot be reached"):
        release_arguments(**{**ok, "tracking_uri": "sqlite:///mlflow.db"})
    with pytest.raises(RatchetError, match="--tracking-uri is required"):
        release_arguments(**{**ok, "tracking_uri": None})
    with pytest.raises(RatchetError, match="unknown pipeline argument.*trackinguri"):
        check_arguments({**arguments, "trackinguri": "x"})
    with pytest.raises(RatchetError, match="missing pipeline argument.*data_path"):
        submit(kfp_api.url, arguments={k: v for k, v in arguments.items() if k != "data_path"})
    with pytest.raises(RatchetError, match="bootstrap='yes': expected boolean"):
        check_arguments({**arguments, "bootstrap": "yes"})
    with pytest.raises(RatchetError, match="no compiled pipeline"):
        submit(kfp_api.url, arguments=arguments, package=tmp_path / "release.yaml")
    assert kfp_api.requests == []


def _cli(action: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, schedule=action == "schedule")
    return parser.parse_args(argv)


def test_submit_cli_prints_json_with_the_run_and_its_link(kfp_api, capsys):
    args = _cli("submit", ["--host", kfp_api.url, "--data", "s3a://lake/tx", "--tracking-uri",
                           "http://mlflow:5000", "--bootstrap", "--format", "json"])
    assert submit_cli(args) == 0
    out = json.loads(capsys.readouterr().out)  # nothing but the JSON on stdout (kfp's prints are kept off)
    assert out["ok"] and out["run_id"] in kfp_api.state.runs
    assert out["url"].endswith(f"/#/runs/details/{out['run_id']}")
    [run] = kfp_api.requests_to("POST", RUNS)
    params = run.body["runtime_config"]["parameters"]
    assert params["bootstrap"] is True and params["data_path"] == "s3a://lake/tx"
    assert params["contract_yaml"] == open("contracts/fraud.yaml").read()


def test_schedule_cli_prints_a_line_and_reports_bad_cron_as_json(kfp_api, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("RATCHET_KFP_TOKEN", "from-env")
    args = _cli("schedule", ["--host", kfp_api.url, "--data", "/mnt/tx", "--cron", "0 3 * * 1"])
    assert schedule_cli(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"scheduled {DEFAULT_SCHEDULE_NAME} (cron '0 0 3 * * 1', experiment ratchet)")
    assert "/#/recurringrun/details/" in line
    assert kfp_api.requests_to("POST", RECURRING)[0].headers["authorization"] == "Bearer from-env"

    bad = _cli("schedule", ["--host", kfp_api.url, "--data", "/mnt/tx", "--cron", "0 3 * * 8", "--format", "json"])
    with pytest.raises(RatchetError):
        schedule_cli(bad)
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_module_entry_point_exits_2_on_bad_input(capsys):
    assert main(["schedule", "--host", "http://127.0.0.1:9", "--data", "/d", "--cron", "0 3 * *"]) == 2
    assert "expected 5 fields" in capsys.readouterr().err


def test_multi_user_kubeflow_gets_the_namespace(monkeypatch, tmp_path, arguments):
    import kfp.client.client as kfp_client

    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    with FakeKfpServer(multi_user=True) as api:
        submit(api.url, arguments=arguments, namespace="team-fraud")
        schedule(api.url, cron="0 3 * * 1", arguments=arguments, namespace="team-fraud")
        assert {e["namespace"] for e in api.state.experiments.values()} == {"team-fraud"}
        assert len(api.state.experiments) == 1 and len(api.state.recurring_runs) == 1
        lookups = api.requests_to("GET", "/apis/v2beta1/experiments")
        assert lookups and all(r.query.get("namespace") == "team-fraud" for r in lookups)


def test_the_cli_checks_the_spec_before_sending_it(kfp_api, tmp_path):
    broken = tmp_path / "spec.yaml"
    broken.write_text("name: [unclosed\n")
    args = _cli("submit", ["--host", kfp_api.url, "--data", "/mnt/tx", "--tracking-uri", "http://mlflow:5000",
                           "--spec", str(broken)])
    with pytest.raises(RatchetError):
        submit_cli(args)
    assert kfp_api.requests == []


def test_a_failed_delete_says_what_exists_and_a_rerun_converges_to_one(kfp_api, arguments):
    schedule(kfp_api.url, cron="0 3 * * 1", arguments=arguments)
    kfp_api.failures[("DELETE", RECURRING + "/.*")] = (503, "unavailable")
    with pytest.raises(RatchetError, match="created recurring run .* could not delete the older .*again"):
        schedule(kfp_api.url, cron="0 4 * * 1", arguments=arguments)
    assert len(kfp_api.state.recurring_runs) == 2
    kfp_api.failures.clear()
    schedule(kfp_api.url, cron="0 4 * * 1", arguments=arguments)
    [left] = kfp_api.state.recurring_runs.values()
    assert left["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 1"
