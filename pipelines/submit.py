"""Run the compiled release pipeline on a Kubeflow Pipelines server, once or on a schedule.

`submit` starts one run of pipelines/release.yaml; `schedule` keeps exactly one
recurring run of it per name, so the release loop is exercised every week whether or
not anyone wants a new model. Both go through kfp.Client and send the compiled spec
inline (no pipeline upload), so what runs is what this checkout compiled.

Updating a schedule: KFP v2 has no update for recurring runs. `schedule` creates the
new one first and then deletes every older recurring run with the same name in the
experiment: a failure half-way leaves the old schedule running rather than none, and
scheduling twice leaves exactly one.

    from pipelines.submit import schedule
    schedule("http://localhost:8080", cron="0 3 * * 1", arguments={...})
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ratchet.errors import RatchetError

COMPILED = Path(__file__).with_name("release.yaml")
DEFAULT_EXPERIMENT = "ratchet"
DEFAULT_SCHEDULE_NAME = "ratchet-weekly-release"
DEFAULT_REPORT_DIR = "/tmp/ratchet/reports"
#: Read by the CLI so a bearer token stays out of shell history and `ps`.
TOKEN_ENV = "RATCHET_KFP_TOKEN"
HEALTHZ_PATH = "/apis/v2beta1/healthz"

# ------------------------------------------------------------------------------------
# cron: the user writes the usual 5 fields; KFP (robfig/cron) wants 6, seconds first.

_CRON_FIELDS = (  # name, low, high, names allowed
    ("second", 0, 59, None),
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day of week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_CRON_ITEM = re.compile(r"^(?P<base>\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/(?P<step>[0-9]+))?$")


def kfp_cron(expression: str) -> str:
    """Return the 6-field cron KFP needs ("0 3 * * 1" -> "0 0 3 * * 1"), or raise RatchetError.

    Five fields are minute hour day-of-month month day-of-week and get a leading "0"
    (second); six fields are taken as already having seconds first.
    """
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise RatchetError(f"--cron {expression!r}: expected 5 fields (minute hour day-of-month month "
                           f"day-of-week, e.g. '0 3 * * 1' for Mondays 03:00) but got {len(fields)}")
    for value, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        problem = _cron_field_problem(value, name, low, high, names)
        if problem:
            raise RatchetError(f"--cron {expression!r}: {name} field {value!r} {problem}")
    return " ".join(fields)


def _cron_field_problem(value: str, name: str, low: int, high: int, names: tuple[str, ...] | None) -> str | None:
    if value == "?":
        return None if name in ("day of month", "day of week") else "cannot be '?' (only day fields can)"
    for item in value.split(","):
        m = _CRON_ITEM.match(item)
        if not m:
            return "is not a number, range (a-b), list (a,b), step (*/n) or *"
        if m["step"] is not None and int(m["step"]) == 0:
            return "has a step of 0"
        if m["base"] == "*":
            continue
        bounds = m["base"].split("-")
        numbers = []
        for b in bounds:
            n = _cron_number(b, names)
            if n is None:
                allowed = f"{low}-{high}" + (f" or {names[0]}..{names[-1]}" if names else "")
                return f"has {b!r}, which is not in {allowed}"
            if not low <= n <= high:
                hint = " (Sunday is 0)" if name == "day of week" and n == 7 else ""
                return f"has {n}, outside {low}-{high}{hint}"
            numbers.append(n)
        if len(numbers) == 2 and numbers[0] > numbers[1]:
            return f"has the range {m['base']!r}, which runs backwards"
    return None


def _cron_number(text: str, names: tuple[str, ...] | None) -> int | None:
    if text.isdigit():
        return int(text)
    if names and text.upper() in names:
        return names.index(text.upper()) + (1 if names[0] == "JAN" else 0)
    return None


# ------------------------------------------------------------------------------------
# pipeline arguments


def pipeline_parameters(package: Path = COMPILED) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's input parameters: name -> {parameterType, defaultValue?, isOptional?}."""
    if not package.exists():
        raise RatchetError(f"{package}: no compiled pipeline; run `python -m pipelines.release` first")
    try:
        spec = yaml.safe_load(package.read_text(encoding="utf-8"))
        return dict(spec["root"]["inputDefinitions"]["parameters"])
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise RatchetError(f"{package}: not a compiled kfp pipeline ({exc}); "
                           "recompile with `python -m pipelines.release`") from exc


def check_arguments(arguments: dict[str, Any], package: Path = COMPILED) -> dict[str, Any]:
    """Refuse unknown or missing pipeline arguments before anything is sent."""
    params = pipeline_parameters(package)
    unknown = sorted(set(arguments) - set(params))
    if unknown:
        raise RatchetError(f"unknown pipeline argument(s) {', '.join(unknown)}; "
                           f"the release pipeline takes {', '.join(sorted(params))}")
    missing = sorted(k for k, p in params.items() if not p.get("isOptional") and k not in arguments)
    if missing:
        raise RatchetError(f"missing pipeline argument(s): {', '.join(missing)}")
    kinds = {"STRING": str, "BOOLEAN": bool, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": (int, float)}
    for key, value in arguments.items():
        expected = kinds.get(params[key].get("parameterType", ""))
        if expected and not isinstance(value, expected):
            raise RatchetError(f"pipeline argument {key}={value!r}: expected {params[key]['parameterType'].lower()}")
    return dict(arguments)


def release_arguments(*, data: str, spec: str, contract: str, tracking_uri: str | None,
                      report_dir: str = DEFAULT_REPORT_DIR, model_name: str = "fraud",
                      as_of: str | None = None, bootstrap: bool = False) -> dict[str, Any]:
    """Pipeline arguments from CLI-style inputs: spec and contract are read here, paths checked."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RatchetError("--tracking-uri is required (or set MLFLOW_TRACKING_URI): the MLflow server "
                           "URL as the pipeline's pods reach it, e.g. http://mlflow.ratchet-prod:5000")
    if uri.startswith(("sqlite:", "file:")) or ("://" not in uri and uri != "databricks"):
        raise RatchetError(f"--tracking-uri {uri}: a local store cannot be reached from the pipeline's pods; "
                           "give the MLflow server's URL (http://...)")
    if "://" not in data and not data.startswith("/"):
        raise RatchetError(f"--data {data}: a relative path means nothing inside the pipeline's pods; give a "
                           "URI or absolute path they can read (s3a://bucket/transactions, /mnt/data/...)")
    texts = {}
    for flag, path in (("--spec", spec), ("--contract", contract)):
        p = Path(path)
        if not p.is_file():
            raise RatchetError(f"{flag} {path}: no such file")
        texts[flag] = p.read_text(encoding="utf-8")
    return {"data_path": data, "spec_yaml": texts["--spec"], "spec_name": spec,
            "contract_yaml": texts["--contract"], "contract_name": contract, "tracking_uri": uri,
            "report_dir": report_dir, "model_name": model_name, "as_of": as_of or "", "bootstrap": bootstrap}


# ------------------------------------------------------------------------------------
# talking to Kubeflow Pipelines


def submit(host: str, *, arguments: dict[str, Any], experiment: str = DEFAULT_EXPERIMENT,
           run_name: str | None = None, namespace: str | None = None, existing_token: str | None = None,
           package: Path = COMPILED) -> dict[str, Any]:
    """Start one run of the compiled release pipeline; returns its ids and UI link."""
    params = check_arguments(arguments, package)
    run_name = run_name or datetime.now(timezone.utc).strftime("ratchet-release-%Y%m%d-%H%M%S")
    with _kfp(host, existing_token) as client:
        result = client.create_run_from_pipeline_package(
            str(package), arguments=params, run_name=run_name, experiment_name=experiment, namespace=namespace)
        run_id = result.run_id
        experiment_id = result.run_info.experiment_id
    return {"ok": True, "run_id": run_id, "run_name": run_name, "experiment": experiment,
            "experiment_id": experiment_id, "host": host, "url": f"{_ui(host)}/#/runs/details/{run_id}"}


def schedule(host: str, *, cron: str, arguments: dict[str, Any], name: str = DEFAULT_SCHEDULE_NAME,
             experiment: str = DEFAULT_EXPERIMENT, namespace: str | None = None,
             existing_token: str | None = None, package: Path = COMPILED) -> dict[str, Any]:
    """Create or replace the recurring run `name` (one per experiment, never two)."""
    cron6 = kfp_cron(cron)
    params = check_arguments(arguments, package)
    if not name.strip():
        raise RatchetError("--name must not be empty")
    with _kfp(host, existing_token) as client:
        exp = client.create_experiment(name=experiment, namespace=namespace)  # gets it when it exists
        older = [r.recurring_run_id for r in _recurring_runs(client, exp.experiment_id) if r.display_name == name]
        created = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=name, cron_expression=cron6, params=params,
            pipeline_package_path=str(package), max_concurrency=1, no_catchup=True, enabled=True,
            description=f"ratchet release pipeline, cron '{cron6}' (ratchet pipeline schedule)")
        for old_id in older:
            try:
                client.delete_recurring_run(old_id)
            except Exception as exc:  # the new one exists: say so, and how to converge to one
                raise RatchetError(
                    f"created recurring run {created.recurring_run_id} ({name}) but could not delete the "
                    f"older {old_id} ({_api_error(exc)}). Run the same schedule command again (it keeps only the newest) "
                    "or delete it in the Kubeflow Pipelines UI") from exc
    rid = created.recurring_run_id
    return {"ok": True, "recurring_run_id": rid, "name": name, "cron": cron6, "experiment": experiment,
            "experiment_id": exp.experiment_id, "replaced": older, "host": host,
            "url": f"{_ui(host)}/#/recurringrun/details/{rid}"}


def _recurring_runs(client: Any, experiment_id: str) -> Iterator[Any]:
    """Every recurring run in the experiment; filtered here, not by a server-side filter."""
    token = ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id)
        yield from page.recurring_runs or []
        token = page.next_page_token or ""
        if not token:
            return


def _ui(host: str) -> str:
    return os.environ.get("KF_PIPELINES_UI_ENDPOINT", host).rstrip("/")


@contextlib.contextmanager
def _kfp(host: str, existing_token: str | None) -> Iterator[Any]:
    """A kfp.Client for host, with every failure turned into a RatchetError that names it.

    kfp.Client prints links on stdout (ours are in the result) and retries a failing
    health check for half a minute; a quick probe first gives a clear answer instead.
    """
    if not host.startswith(("http://", "https://")):
        raise RatchetError(f"--host {host}: give the full URL, e.g. http://localhost:8080 "
                           "(`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`)")
    host = host.rstrip("/")
    _probe(host, existing_token)
    import kfp
    import kfp_server_api
    import urllib3

    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield kfp.Client(host=host, existing_token=existing_token)
    except kfp_server_api.ApiException as exc:
        raise RatchetError(f"Kubeflow Pipelines at {host} refused the request: {_api_error(exc)}") from exc
    except (urllib3.exceptions.HTTPError, OSError, TimeoutError) as exc:
        raise RatchetError(f"cannot talk to Kubeflow Pipelines at {host}: {exc}") from exc
    except ValueError as exc:  # kfp.Client's own checks, e.g. two experiments with one name
        raise RatchetError(f"Kubeflow Pipelines at {host}: {exc}") from exc


def _api_error(exc: Exception) -> str:
    """One line for a kfp_server_api.ApiException (its str() spans headers and body)."""
    status = getattr(exc, "status", None)
    if status is None:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    body = " ".join(body.split())
    return f"HTTP {status} {exc.reason or ''}".rstrip() + (f": {body[:300]}" if body else "")


def _probe(host: str, token: str | None) -> None:
    request = urllib.request.Request(host + HEALTHZ_PATH)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        hint = {401: "; pass a token (" + TOKEN_ENV + ")", 403: "; the token lacks access",
                404: "; is this the Kubeflow Pipelines API (ml-pipeline-ui or ml-pipeline service)?"}
        raise RatchetError(f"Kubeflow Pipelines at {host} answered HTTP {exc.code} on {HEALTHZ_PATH}"
                           + hint.get(exc.code, "")) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RatchetError(f"cannot reach Kubeflow Pipelines at {host} ({reason}); check --host, or "
                           "port-forward: kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80 "
                           "and use --host http://localhost:8080") from exc


# ------------------------------------------------------------------------------------
# CLI entry points (wired in ratchet/cli.py)


def _arguments_from(args: argparse.Namespace) -> dict[str, Any]:
    """Check spec and contract here, in a second, rather than in a pod minutes later."""
    from ratchet.contracts import load_contract
    from ratchet.train.spec import load_spec

    for flag, path, load in (("--spec", args.spec, load_spec), ("--contract", args.contract, load_contract)):
        if not Path(path).is_file():
            raise RatchetError(f"{flag} {path}: no such file")
        load(path)
    return release_arguments(data=args.data, spec=args.spec, contract=args.contract,
                             tracking_uri=args.tracking_uri, report_dir=args.report_dir,
                             model_name=args.model_name, as_of=args.as_of, bootstrap=args.bootstrap)


def _emit(result: dict[str, Any], fmt: str, line: str) -> int:
    print(json.dumps(result, indent=2) if fmt == "json" else line)
    return 0


@contextlib.contextmanager
def _reporting_errors(fmt: str) -> Iterator[None]:
    try:
        yield
    except RatchetError as exc:
        if fmt == "json":  # scripts read stdout: tell them too
            print(json.dumps({"ok": False, "error": str(exc)}, indent=2))
        raise


def submit_cli(args: argparse.Namespace) -> int:
    """`ratchet pipeline submit --host URL ...`: start one run; exit 0, or 2 on bad input."""
    with _reporting_errors(args.format):
        result = submit(args.host, arguments=_arguments_from(args), experiment=args.experiment,
                        run_name=args.run_name, namespace=args.namespace,
                        existing_token=os.environ.get(TOKEN_ENV) or None)
    return _emit(result, args.format,
                 f"submitted run {result['run_id']} ({result['run_name']}) in experiment "
                 f"{result['experiment']}: {result['url']}")


def schedule_cli(args: argparse.Namespace) -> int:
    """`ratchet pipeline schedule --host URL --cron "0 3 * * 1" ...`: create or replace the schedule."""
    with _reporting_errors(args.format):
        kfp_cron(args.cron)  # a bad expression is refused before the files are even read
        result = schedule(args.host, cron=args.cron, arguments=_arguments_from(args), name=args.name,
                          experiment=args.experiment, namespace=args.namespace,
                          existing_token=os.environ.get(TOKEN_ENV) or None)
    replaced = f", replacing {', '.join(result['replaced'])}" if result["replaced"] else ""
    return _emit(result, args.format,
                 f"scheduled {result['name']} (cron '{result['cron']}', experiment {result['experiment']}): "
                 f"recurring run {result['recurring_run_id']}{replaced}: {result['url']}")


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `python -m pipelines.submit`
    """Stand-alone entry until ratchet/cli.py wires `ratchet pipeline submit|schedule`."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.submit")
    sub = parser.add_subparsers(dest="action", required=True)
    for action in ("submit", "schedule"):
        p = sub.add_parser(action)
        add_arguments(p, schedule=action == "schedule")
    args = parser.parse_args(argv)
    try:
        return schedule_cli(args) if args.action == "schedule" else submit_cli(args)
    except RatchetError as exc:
        print(f"ratchet: error: {exc}", file=sys.stderr)
        return 2


def add_arguments(p: argparse.ArgumentParser, *, schedule: bool) -> None:
    """The flags of `ratchet pipeline submit` (and, with schedule=True, `schedule`)."""
    p.add_argument("--host", required=True, help="Kubeflow Pipelines URL, e.g. http://localhost:8080 "
                   f"(a bearer token, if needed, from ${TOKEN_ENV})")
    p.add_argument("--data", required=True,
                   help="raw transactions as the pipeline's pods see them (s3a://..., gs://..., /mnt/...)")
    p.add_argument("--spec", default="specs/fraud.yaml",
                   help="training spec YAML, sent inline (default specs/fraud.yaml)")
    p.add_argument("--contract", default="contracts/fraud.yaml",
                   help="contract YAML, sent inline (default contracts/fraud.yaml)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow server URL as the pods reach it (default $MLFLOW_TRACKING_URI)")
    p.add_argument("--model-name", default="fraud", help="registered model name (default fraud)")
    p.add_argument("--as-of", default=None, help="release date, ISO (default: from the spec or the data)")
    p.add_argument("--bootstrap", action="store_true",
                   help="no production model yet: pass on absolute bounds alone and go to @production")
    p.add_argument("--report-dir", default=DEFAULT_REPORT_DIR,
                   help=f"report folder inside the pipeline's pods (default {DEFAULT_REPORT_DIR})")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"KFP experiment (default {DEFAULT_EXPERIMENT})")
    p.add_argument("--namespace", default=None, help="KFP namespace (multi-user Kubeflow only)")
    if schedule:
        p.add_argument("--cron", required=True,
                       help="5-field cron, e.g. '0 3 * * 1' (Mondays 03:00, the KFP server's time zone)")
        p.add_argument("--name", default=DEFAULT_SCHEDULE_NAME,
                       help=f"recurring run name; an existing one is replaced (default {DEFAULT_SCHEDULE_NAME})")
    else:
        p.add_argument("--run-name", default=None, help="run name (default ratchet-release-<UTC time>)")
    p.add_argument("--format", choices=["text", "json"], default="text")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
