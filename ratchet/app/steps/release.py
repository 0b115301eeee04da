"""The release pipeline's steps as plain functions: the executors components/ wraps.

Each step takes paths and strings only (what a Kubeflow component can pass), does its
work through the domain modules, and on failure writes `failure.json` into the run's
report folder (step, error type, message) before re-raising, so whoever launched the
pipeline can say which step broke and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ratchet.errors import RatchetError, RegistryError

FAILURE_FILE = "failure.json"
SUMMARY_FILE = "release.json"
GATE_FILE = "gate.json"
TRAINING_FILE = "training.json"  # next to the model: what early stopping, the search and class_weight chose


@contextlib.contextmanager
def reporting(step: str, report_dir: str) -> Iterator[None]:
    """Run a step; record how it failed in report_dir/failure.json, then re-raise."""
    started, began = time.perf_counter(), time.time()
    print(f"[ratchet] step {step}: started", flush=True)
    try:
        yield
    except BaseException as exc:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        record = {"step": step, "error": type(exc).__name__, "message": str(exc),
                  "user_error": isinstance(exc, RatchetError)}
        if not isinstance(exc, RatchetError):
            record["traceback"] = traceback.format_exc()
        (Path(report_dir) / FAILURE_FILE).write_text(json.dumps(record, indent=2))
        print(f"[ratchet] step {step}: FAILED: {exc}", flush=True)
        raise
    _append_timing(report_dir, step, time.perf_counter() - started)
    _append_timeline(report_dir, step, began, time.time())
    print(f"[ratchet] step {step}: done in {time.perf_counter() - started:.1f}s", flush=True)


def _append_timing(report_dir: str, step: str, seconds: float) -> None:
    path = Path(report_dir) / "timings.json"
    Path(report_dir).mkdir(parents=True, exist_ok=True)
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[step] = round(seconds, 2)
    path.write_text(json.dumps(timings, indent=2))


#: Per step, wall-clock epochs: when its process started, when its work began and ended.
TIMELINE_FILE = "timeline.json"


def process_started_at() -> float | None:
    """When this process started (epoch seconds, from /proc), None where /proc does not say."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _append_timeline(report_dir: str, step: str, began: float, ended: float) -> None:
    """timeline.json: {step: {process_started, began, ended}} (bench/pipeline.py splits start-up from work)."""
    path = Path(report_dir) / TIMELINE_FILE
    timeline = json.loads(path.read_text()) if path.exists() else {}
    timeline[step] = {"process_started": process_started_at(), "began": round(began, 3), "ended": round(ended, 3)}
    path.write_text(json.dumps(timeline, indent=2))


def code_revision() -> str:
    """The git commit of the ratchet code (with -dirty), or 'unknown' outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_release_preconditions(tracking_uri: str, model_name: str, bootstrap: bool,
                                registry: Any = None) -> int | None:
    """The production version to compare against; refuse a bootstrap over an existing one.
    `registry`: an open ratchet.registry.Registry to ask (opening the store costs a second or two)."""
    from ratchet.registry import Registry

    production = (registry or Registry(tracking_uri, model_name)).alias_version("production")
    if bootstrap and production is not None:
        raise RegistryError(f"model '{model_name}' already has @production (version {production}); "
                            "--bootstrap is only for the very first release: drop it")
    if not bootstrap and production is None:
        raise RegistryError(f"model '{model_name}' has no @production version to compare with; "
                            "run the first release with --bootstrap")
    return production


#: Spark error classes that mean the user's data (not ratchet) is wrong.
SPARK_DATA_ERRORS: tuple[str, ...] = (
    "CAST_OVERFLOW", "CAST_INVALID_INPUT", "UNABLE_TO_INFER_SCHEMA", "FAILED_READ_FILE", "DATETIME_OVERFLOW",
    "ARITHMETIC_OVERFLOW", "PARQUET_COLUMN_DATA_TYPE_MISMATCH", "Parquet column cannot be converted",
)


def _spark_data_error(exc: BaseException, data_path: str, report_dir: str) -> RatchetError | None:
    """A RatchetError (exit 2) for a Spark failure caused by the data, or None for any other.

    The Java stack trace goes to report_dir/training_set-spark-error.log, never into the
    message; the message names the step, the error class, the data and that file.
    """
    text = str(exc)
    kind = next((k for k in SPARK_DATA_ERRORS if k in text), None)
    if kind is None:
        return None
    log = Path(report_dir) / "training_set-spark-error.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"{type(exc).__name__}: {text}\n\n{traceback.format_exc()}")
    first = text.strip().splitlines()[0][:300] if text.strip() else kind
    return RatchetError(f"step training_set: Spark could not process {data_path} ({kind}: {first}); this comes from "
                        f"the data: check its columns and values (dataset.columns, timestamp_format, filters). "
                        f"Full error: {log}")


def evidence_needs(contract: Any, bootstrap: bool) -> list[Any]:
    """What the test window must hold for the gate to be able to pass: each blocking clause
    judged on the whole test set fails below its min_support (ratchet.contracts.evaluate),
    so its support (rows, fraud or genuine rows) is a need. Comparisons are not judged
    without a baseline (bootstrap); support in blocked rows depends on the model, so it is
    left to the gate."""
    from ratchet.contracts.model import SUPPORT_OF
    from ratchet.data.checks import EvidenceNeed

    return [EvidenceNeed(c.name, c.source, SUPPORT_OF[c.metric], c.min_support) for c in contract.clauses
            if c.severity == "block" and c.per is None and c.min_support > 0
            and not (bootstrap and c.needs_baseline) and SUPPORT_OF[c.metric] in ("rows", "positives", "negatives")]


def training_set_step(data_path: str, spec_yaml: str, spec_name: str, as_of: str, tracking_uri: str,
                      model_name: str, out_dir: str, report_dir: str, contract_yaml: str = "",
                      contract_name: str = "", bootstrap: bool = False) -> dict[str, Any]:
    """Spark training set + data checks; writes train/test Parquet and trainingset.json.

    With the contract, the test window is also checked for the evidence the contract's
    whole-population blocking clauses need (evidence_needs), before any feature is built."""
    with reporting("training_set", report_dir):
        from ratchet.data.spark import spark_for
        from ratchet.data.trainingset import build_training_set
        from ratchet.registry import Registry
        from ratchet.train.spec import parse_spec

        spec = parse_spec(spec_yaml, spec_name)
        needs = []
        if contract_yaml:
            from ratchet.contracts import contract_from_text

            needs = evidence_needs(contract_from_text(contract_yaml, contract_name or "contract.yaml"), bootstrap)
        # the row-count baseline (@production's data, else the last version that passed the gate) is
        # read from MLflow in a thread while the JVM starts: each is seconds, mostly waiting
        with ThreadPoolExecutor(1, thread_name_prefix="ratchet-baseline") as pool:
            baseline = pool.submit(lambda: Registry(tracking_uri, model_name).previous_rows())
            spark = spark_for(spec.spark, "ratchet-training-set")
            previous = baseline.result()
        try:
            result = build_training_set(data_path, spec, Path(out_dir), as_of=as_of or None, previous_rows=previous,
                                        spark=spark, evidence=needs)
        except RatchetError:
            raise
        except Exception as exc:  # noqa: BLE001 - only Spark's errors about the user's data are turned
            user = _spark_data_error(exc, data_path, report_dir)
            if user is None:
                raise
            raise user from None
        summary = result.to_dict()
        Path(out_dir, "trainingset.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary


def train_step(train_path: str, spec_yaml: str, spec_name: str, model_out: str, report_dir: str) -> dict[str, Any]:
    """Train XGBoost on the train window; writes the model in UBJSON format."""
    with reporting("train", report_dir):
        import pandas as pd

        from ratchet.train.spec import parse_spec
        from ratchet.train.trainer import save_model, train_model

        spec = parse_spec(spec_yaml, spec_name)
        if spec.xgboost.distributed:  # xgboost.spark on the spec's Spark master
            from ratchet.data.spark import spark_for
            from ratchet.train.distributed import train_distributed

            result = train_distributed(spark_for(spec.spark, "ratchet-train").read.parquet(train_path), spec)
        else:
            frame = pd.read_parquet(train_path)
            if "transaction_id" in frame.columns:  # Spark's row order varies; training must not
                frame = frame.sort_values("transaction_id", kind="stable", ignore_index=True)
            result = train_model(frame, spec)
        path = save_model(result.booster, model_out)
        # what early stopping, the search and class_weight chose, for register_step to log with the version
        path.with_name(TRAINING_FILE).write_text(json.dumps(result.training, indent=2, default=str))
        info = {"model_path": str(path), "rows": result.rows, "positives": result.positives,
                "seconds": round(result.seconds, 2), "features": list(result.features), "training": result.training}
        print(f"[ratchet] trained on {result.rows:,} rows ({result.positives:,} fraud) in {result.seconds:.1f}s",
              flush=True)
        return info


def evaluate_step(test_path: str, model_path: str, contract_yaml: str, contract_name: str, tracking_uri: str,
                  model_name: str, bootstrap: bool, out_dir: str, report_dir: str, spec_yaml: str = "",
                  spec_name: str = "", thresholds_yaml: str = "") -> bool:
    """Score candidate and @production on the test window and judge the contract; True if it passed.

    Per-merchant thresholds are suggested from the scored test window (policy: thresholds_yaml,
    else the project's contracts/thresholds.yaml, else off), the contract is judged with
    them applied, and out_dir gets suggestions.csv/json/html (see ratchet.thresholds).

    A large test set is scored on Spark (the spec's spark: section decides; without a
    spec, its defaults and RATCHET_SPARK_MASTER): see ratchet.evaluate.spark_scoring.
    """
    from ratchet.evaluate.report_process import report_process

    # the Evidently reports are built in a process of their own, started first so that it
    # imports Evidently while this one reads and scores; nothing it makes decides anything
    with reporting("evaluate", report_dir), report_process() as reports:
        import pandas as pd

        from ratchet.contracts import contract_from_text
        from ratchet.app.steps.evaluate import evaluate_candidate
        from ratchet.evaluate.scoring import Thresholds
        from ratchet.evaluate.spark_scoring import parquet_rows, score_on_spark, use_spark_scoring
        from ratchet.registry import Registry
        from ratchet.train.spec import SparkSpec, parse_spec
        from ratchet.train.trainer import load_model

        contract = contract_from_text(contract_yaml, contract_name)
        registry = Registry(tracking_uri, model_name)
        production = check_release_preconditions(tracking_uri, model_name, bootstrap, registry)
        baseline, baseline_thresholds = None, None
        if production:
            baseline = registry.load_booster(production)
            default, per_merchant = registry.thresholds(production)
            if default is not None:
                baseline_thresholds = Thresholds(default, per_merchant)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        train_path = Path(test_path).with_name("train.parquet")
        candidate = load_model(model_path)
        spark_spec = parse_spec(spec_yaml, spec_name).spark if spec_yaml else SparkSpec()
        if use_spark_scoring(spark_spec, parquet_rows(test_path)):
            scored, test, train = score_on_spark(test_path, candidate, baseline, baseline_thresholds, spark_spec,
                                                 train_path)
        else:
            scored, test = None, pd.read_parquet(test_path)
            train = pd.read_parquet(train_path) if train_path.exists() else None
        from ratchet.thresholds.policy import release_policy

        evaluation = evaluate_candidate(test, candidate, baseline, contract, baseline_thresholds,
                                        report_dir=out / "reports", train=train, scored=scored,
                                        threshold_policy=release_policy(thresholds_yaml), reports=reports)
        for name, content in evaluation.renderings().items():
            (out / name).write_text(content, encoding="utf-8")
        if evaluation.suggestions is not None:
            evaluation.suggestions.baseline_version = production
            evaluation.suggestions.write(out)
        (out / "evaluation.json").write_text(json.dumps(
            {"passed": evaluation.passed, "reason": evaluation.reason, "metrics": evaluation.metrics,
             "baseline_version": production, "bootstrap": bootstrap}, indent=2, default=str))
        gate = {"passed": evaluation.passed, "reason": evaluation.reason, "metrics": evaluation.metrics,
                "baseline_version": production, "bootstrap": bootstrap}
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        (Path(report_dir) / GATE_FILE).write_text(json.dumps(gate, indent=2, default=str))
        print(f"[ratchet] {evaluation.reason}", flush=True)
        return evaluation.passed


def training_params(training: dict[str, Any]) -> dict[str, Any]:
    """The train step's record (TrainResult.training) as the version's `train_*` params; the
    whole record, every search trial included, is logged as training/training.json."""
    out = {f"train_{k}": training[k] for k in ("rounds", "class_weight", "scale_pos_weight", "best_iteration",
                                                "stopped_early") if training.get(k) is not None}
    if "metric" in training:
        out[f"train_validation_{training['metric']}"] = training["best_score"]
    out.update({f"train_chosen_{k}": v for k, v in (training.get("chosen") or {}).items()})
    if training.get("search"):
        out["train_search_trials"] = len(training["search"]["trials"])
    return out


def open_questions_tag(keys: list[str], limit: int = 95_000) -> str:
    """The `open_questions` tag value: the keys as JSON, within MLflow's tag size (100,000).

    Too many to list: one 'clause[*]' key per clause instead, which no live result resolves
    (only a waiver does), so nothing is dropped silently."""
    text = json.dumps(sorted(keys))
    if len(text) > limit:
        text = json.dumps(sorted({k.split("[", 1)[0] + "[*]" for k in keys}))
    return text


def register_step(model_path: str, spec_yaml: str, spec_name: str, trainingset_dir: str, evaluation_dir: str,
                  tracking_uri: str, model_name: str, report_dir: str) -> int:
    """Log the release to MLflow and register the version (candidate or rejected)."""
    with reporting("register", report_dir):
        from ratchet.registry import Registry, ReleaseRecord
        from ratchet.rollout.state import OPEN_QUESTIONS_TAG
        from ratchet.thresholds.cycle import record_release, suggestion_files
        from ratchet.thresholds.suggest import read_suggestions
        from ratchet.train.spec import parse_spec

        spec = parse_spec(spec_yaml, spec_name)
        ts = json.loads(Path(trainingset_dir, "trainingset.json").read_text())
        ev_dir = Path(evaluation_dir)
        evaluation = json.loads((ev_dir / "evaluation.json").read_text())
        renderings = {n: (ev_dir / n).read_text() for n in ("verdict.md", "verdict.html", "verdict.txt",
                                                            "counterfactual.json") if (ev_dir / n).exists()}
        training_file = Path(model_path).with_name(TRAINING_FILE)
        training = json.loads(training_file.read_text()) if training_file.exists() else {}
        params = {"spec_name": spec.name, "num_boost_round": spec.xgboost.num_boost_round,
                  "features": ",".join(spec.features), "seed": spec.seed,
                  "baseline_version": evaluation.get("baseline_version"),
                  **{f"xgb_{k}": v for k, v in spec.xgboost.params.items()},
                  **{f"window_{k}": v for k, v in (ts.get("windows") or {}).items()},
                  **training_params(training)}
        record = ReleaseRecord(
            model_path=model_path, spec_yaml=spec_yaml, spec_hash=spec.spec_hash(),
            snapshot=ts.get("snapshot", {}), windows=ts.get("windows", {}),
            metrics={k: v for k, v in evaluation["metrics"].items() if isinstance(v, (int, float))},
            verdict=json.loads((ev_dir / "verdict.json").read_text()), verdict_renderings=renderings,
            passed=bool(evaluation["passed"]), reason=evaluation["reason"], code_revision=code_revision(),
            seed=spec.seed, params=params, threshold=evaluation["metrics"].get("threshold"),
            extra_artifacts={**({"reports": str(ev_dir / "reports")} if (ev_dir / "reports").is_dir() else {}),
                             **({"training": str(training_file)} if training_file.exists() else {}),
                             **suggestion_files(ev_dir, Path(report_dir) / "thresholds-artifacts")},
            example_rows=_example_file(ts.get("test_path")),
        )
        registry = Registry(tracking_uri, model_name)
        version = registry.register(record)
        if (ev_dir / "suggestions.json").exists():  # pending review, or applied at once in mode: auto
            state = record_release(registry, version, read_suggestions(ev_dir / "suggestions.json"),
                                   passed=record.passed)
            print(f"[ratchet] thresholds of version {version}: {state}", flush=True)
        open_questions = record.verdict.get("open_questions") or []
        if record.passed and open_questions:  # the shadow phase's questions (ratchet.rollout reads them)
            registry.set_tags(version, {OPEN_QUESTIONS_TAG: open_questions_tag(open_questions)})
            print(f"[ratchet] version {version}: {len(open_questions)} open question(s) for the shadow phase", flush=True)
        summary = {"version": version, "passed": record.passed, "reason": record.reason,
                   "metrics": evaluation["metrics"], "baseline_version": evaluation.get("baseline_version"),
                   "bootstrap": evaluation.get("bootstrap"), "stage": None,
                   "windows": record.windows, "snapshot": record.snapshot}
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        (Path(report_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
        print(f"[ratchet] registered {model_name} version {version} ({'candidate' if record.passed else 'rejected'})",
              flush=True)
        return version


def _example_file(test_path: str | None) -> str:
    """A Parquet file of the test window with rows (Spark writes a folder of parts), for the
    version's input example; "" when there is none."""
    import pyarrow.parquet as pq

    if not test_path or not Path(test_path).exists():
        return ""
    p = Path(test_path)
    for part in ([p] if p.is_file() else sorted(p.glob("*.parquet"))):
        if pq.ParquetFile(part).metadata.num_rows > 0:
            return str(part)
    return ""


def promote_step(version: int, stage: str, tracking_uri: str, model_name: str, report_dir: str) -> None:
    """Set the alias the gate earned (staging, or production for a bootstrap)."""
    with reporting("promote", report_dir):
        from ratchet.registry import Registry

        Registry(tracking_uri, model_name).set_stage(
            version, stage, actor="release pipeline",
            reason="gate passed" + (" (bootstrap release)" if stage == "production" else ""))
        path = Path(report_dir) / SUMMARY_FILE
        if path.exists():  # on a cluster each step has its own pod and report folder
            summary = json.loads(path.read_text())
            summary["stage"] = stage
            path.write_text(json.dumps(summary, indent=2, default=str))
        print(f"[ratchet] {model_name} version {version} -> @{stage}", flush=True)
