"""The MLflow adapter: log a release, register a version, move aliases, keep history.

No business rules: which moves are allowed and what they imply (moving production
retires the version it replaces; a rejected version takes no stage) is the stage
model's (ratchet.stages); `apply` writes the StageChange it decides.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ratchet.errors import RegistryError
from ratchet.stages.model import StageChange, check_stage, move_to_stage
EXPERIMENT = "ratchet-releases"
MODEL_PIP_REQUIREMENTS = ["xgboost", "pandas<3", "numpy"]
EXAMPLE_ROWS = 5


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite file in the current directory (absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri or absolute_tracking_uri("sqlite:///mlflow.db")


def absolute_tracking_uri(uri: str) -> str:
    """Make a relative sqlite:/// or file path URI absolute, so subprocesses agree on it."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store go next to the database file, not into the cwd."""
    if uri.startswith("sqlite:///"):
        db = Path(urlparse(uri).path)
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


@dataclass(frozen=True)
class ReleaseRecord:
    """Everything a release logs: enough to rebuild and explain the version."""

    model_path: str
    spec_yaml: str
    spec_hash: str
    snapshot: dict[str, Any]
    windows: dict[str, str]
    metrics: dict[str, float]
    verdict: dict[str, Any]
    verdict_renderings: dict[str, str] = field(default_factory=dict)  # file name -> content
    passed: bool = False
    reason: str = ""
    code_revision: str = "unknown"
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    extra_artifacts: dict[str, str] = field(default_factory=dict)  # artifact dir -> local file or folder
    threshold: float | None = None  # the decision threshold the gate judged the candidate at
    #: a Parquet/CSV/JSON-lines table with the model's feature columns (e.g. the training set's
    #: test.parquet): its first rows become the logged model's input example
    example_rows: str = ""


def model_signature(features: list[str], n_features: int, optional: frozenset[str] | None = None):
    """What the UI shows as the model's schema (-> mlflow.models.ModelSignature): one float32
    column per feature, in the booster's order, and the fraud score out (float32). A column is
    required as the decision service requires it: all but the spec's missing_features.allowed
    (`optional`); with no policy (None) every column is optional, as the service then treats
    them. A NaN is a missing value, which XGBoost routes. A booster without feature names (not
    trained by ratchet) gets a float32 matrix of its width."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    inputs = (Schema([ColSpec(DataType.float, f, required=optional is not None and f not in optional)
                      for f in features]) if features
              else Schema([TensorSpec(np.dtype(np.float32), (-1, n_features))]))
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "score")]))


def missing_allowed(spec_yaml: str, features: list[str]) -> frozenset[str] | None:
    """The features the release's spec lets a request leave out (missing_features.allowed);
    None when the text is no ratchet spec of these features (the service's rule, see
    ratchet.serving.models)."""
    from ratchet.errors import SpecError
    from ratchet.train.spec import parse_spec

    try:
        spec = parse_spec(spec_yaml, "release/spec.yaml")
    except SpecError:
        return None
    return frozenset(spec.missing_allowed) if set(spec.features) == set(features) else None


def input_example(path: str, features: list[str], rows: int = EXAMPLE_ROWS):  # -> pandas.DataFrame
    """The first `rows` rows of a table's feature columns as float32, in the booster's order;
    a column the table lacks is named in a RegistryError."""
    import numpy as np
    import pandas as pd

    p = Path(path)
    if p.suffix in (".csv", ".jsonl", ".ndjson"):
        from ratchet.files import read_table

        frame = read_table(p)
    else:  # Parquet: one small batch, not the whole training set
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(p)
        have = [f for f in features if f in pf.schema_arrow.names]
        batch = next(pf.iter_batches(batch_size=rows, columns=have), None)
        frame = batch.to_pandas() if batch is not None else pd.DataFrame(columns=have)
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise RegistryError(f"{path} lacks the model's feature(s) {', '.join(missing)}: it cannot give the "
                            "input example (example_rows must hold the model's feature columns)")
    if frame.empty:
        raise RegistryError(f"{path} has no rows: it cannot give the input example")
    head = frame.loc[:, features].head(rows)
    return pd.DataFrame(head.to_numpy(dtype=np.float32, na_value=np.nan), columns=features)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: MLflow's SQL stores hold 5,000 characters in a version's description and in a tag value.
MLFLOW_TEXT_LIMIT = 5000


def description_text(markdown: str, limit: int = MLFLOW_TEXT_LIMIT) -> str:
    """The version description: the verdict in Markdown, cut at a line end when it is too
    long for MLflow, with a last line saying so and where the whole verdict is."""
    if len(markdown) <= limit:
        return markdown
    note = ("\n\n_The verdict is cut here to fit MLflow's 5,000-character description: the whole "
            "verdict is in this version's run, artifacts release/verdict.md and release/verdict.html._")
    room = limit - len(note)
    cut = markdown.rfind("\n", 0, room)
    return markdown[:cut if cut > 0 else room].rstrip() + note


def history_text(event: dict[str, Any], limit: int = MLFLOW_TEXT_LIMIT) -> str:
    """One history event as JSON that always parses and fits a tag: long string values in
    its evidence are shortened first, then the evidence is replaced by a note."""
    text = json.dumps(event, default=str)
    if len(text) <= limit:
        return text
    short = dict(event, reason=str(event.get("reason", ""))[:1000])
    evidence = short.get("evidence") or {}
    short["evidence"] = {k: (v if isinstance(v, (int, float, bool)) or v is None else str(v)[:200])
                         for k, v in evidence.items()}
    text = json.dumps(short, default=str)
    if len(text) <= limit:
        return text
    short["evidence"] = {"cut": f"{len(evidence)} evidence item(s) too long for a tag; "
                                "see the controller's log and the run's artifacts"}
    return json.dumps(short, default=str)


class Registry:
    """Thin wrapper over MlflowClient for one registered model."""

    def __init__(self, tracking_uri: str | None = None, model_name: str = "fraud") -> None:
        import mlflow
        from mlflow import MlflowClient

        self.tracking_uri = absolute_tracking_uri(tracking_uri) if tracking_uri else default_tracking_uri()
        self.model_name = model_name
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self._mlflow = mlflow
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # ---- reading -------------------------------------------------------------------
    def alias_version(self, alias: str) -> int | None:
        """The version holding an alias, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def aliases(self) -> dict[str, int]:
        """Every alias of the model and its version."""
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(self.model_name)
        except MlflowException:
            return {}
        return {a: int(v) for a, v in (rm.aliases or {}).items()}

    def tags(self, version: int) -> dict[str, str]:
        """The tags of one version; unknown versions are a RegistryError."""
        return dict(self._version(version).tags)

    def versions(self) -> list[int]:
        """All registered version numbers, ascending."""
        found = self.client.search_model_versions(f"name='{self.model_name}'")
        return sorted(int(v.version) for v in found)

    def versions_in_state(self, state: str) -> list[int]:
        """The versions whose `state` tag is `state` (one search, not a read per version)."""
        found = self.client.search_model_versions(f"name='{self.model_name}' and tags.state='{state}'")
        return sorted(int(mv.version) for mv in found)

    def history(self, version: int) -> list[dict[str, Any]]:
        """The transitions recorded on a version, oldest first."""
        tags = self.tags(version)
        return [json.loads(tags[k]) for k in sorted(t for t in tags if t.startswith("history."))]

    def thresholds(self, version: int) -> tuple[float | None, dict[str, float]]:
        """A version's decision threshold (tag `threshold`) and per-merchant overrides
        (tag `merchant_thresholds`, JSON); (None, {}) when it has none."""
        tags = self.tags(version)
        default = float(tags["threshold"]) if tags.get("threshold") else None
        per_merchant = {str(k): float(v) for k, v in json.loads(tags.get("merchant_thresholds") or "{}").items()}
        return default, per_merchant

    def load_booster(self, version: int):  # -> xgboost.Booster
        """Load a version's model (XGBoost's own format) from the registry."""
        import mlflow.xgboost

        self._version(version)
        return mlflow.xgboost.load_model(f"models:/{self.model_name}/{version}")

    def baseline_version(self) -> int | None:
        """The version whose data is the row-count baseline: @production, else the newest
        version that passed the gate (tag verdict=passed); never a rejected one, so
        rejected releases cannot walk the baseline down. None when there is neither."""
        production = self.alias_version("production")
        if production is not None:
            return production
        found = self.client.search_model_versions(f"name='{self.model_name}' and tags.verdict='passed'")
        passed = sorted(int(mv.version) for mv in found if (mv.tags or {}).get("state") != "rejected")
        return passed[-1] if passed else None

    def previous_rows(self) -> int | None:
        """Raw data rows of the baseline version's snapshot (see baseline_version), for the
        row-count check; None when there is no baseline or it has no data_rows tag."""
        version = self.baseline_version()
        if version is None:
            return None
        rows = self.tags(version).get("data_rows")
        return int(rows) if rows else None

    def _version(self, version: int):
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.model_name, str(version))
        except MlflowException:
            raise RegistryError(
                f"model '{self.model_name}' has no version {version} in {self.tracking_uri}; "
                f"known versions: {self.versions() or 'none'}"
            ) from None

    # ---- writing -------------------------------------------------------------------
    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(EXPERIMENT, artifact_location=_artifact_root(self.tracking_uri))

    def register(self, release: ReleaseRecord) -> int:
        """Log a release as an MLflow run, register its model and tag the version.

        The model is logged with its signature (model_signature: the MLflow UI's "Inputs" and
        "Outputs") and, from `example_rows`, an input example. The version is tagged
        `candidate` when the gate passed and `rejected` (with the reason) when it did not;
        aliases are set separately (see set_stage).
        """
        import mlflow
        import mlflow.xgboost

        from ratchet.train.trainer import load_model

        booster = load_model(release.model_path)
        features = list(booster.feature_names or [])
        if release.example_rows and not features:
            raise RegistryError(f"{release.model_path} carries no feature names, so the columns of "
                                f"{release.example_rows} cannot be matched to it for the input example")
        example = input_example(release.example_rows, features) if release.example_rows else None  # before the run
        signature = model_signature(features, booster.num_features(), missing_allowed(release.spec_yaml, features))
        exp_id = self._experiment_id()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mlflow.start_run(experiment_id=exp_id, run_name=f"release-{release.spec_hash[:8]}") as run:
                mlflow.log_params({k: str(v)[:500] for k, v in release.params.items()})
                mlflow.log_metrics({k: float(v) for k, v in release.metrics.items() if v is not None})
                mlflow.set_tags({"ratchet.spec_hash": release.spec_hash, "ratchet.code_revision": release.code_revision,
                                 "ratchet.verdict": "passed" if release.passed else "failed"})
                with tempfile.TemporaryDirectory() as tmp:
                    t = Path(tmp)
                    files = {
                        "spec.yaml": release.spec_yaml,
                        "data_snapshot.json": json.dumps(release.snapshot, indent=2),
                        "windows.json": json.dumps(release.windows, indent=2),
                        "verdict.json": json.dumps(release.verdict, indent=2, default=str),
                        **release.verdict_renderings,
                    }
                    for name, content in files.items():
                        (t / name).write_text(content, encoding="utf-8")
                        mlflow.log_artifact(str(t / name), artifact_path="release")
                for dest, local in release.extra_artifacts.items():
                    if Path(local).is_dir():
                        mlflow.log_artifacts(local, artifact_path=dest)
                    else:
                        mlflow.log_artifact(local, artifact_path=dest)
                info = mlflow.xgboost.log_model(booster, name="model", model_format="ubj",
                                                pip_requirements=MODEL_PIP_REQUIREMENTS,
                                                signature=signature,
                                                input_example=example)
            mv = mlflow.register_model(info.model_uri, self.model_name)
        version = int(mv.version)
        state = "candidate" if release.passed else "rejected"
        tags = {
            "state": state,
            "verdict": "passed" if release.passed else "failed",
            "reason": release.reason[:4000],
            "spec_hash": release.spec_hash,
            "data_path": str(release.snapshot.get("path", "")),
            "data_rows": str(release.snapshot.get("rows", "")),
            "data_hash": str(release.snapshot.get("content_hash", "")),
            "code_revision": release.code_revision,
            "seed": str(release.seed),
            "run_id": run.info.run_id,
            "windows": json.dumps(release.windows),
        }
        if release.threshold is not None:
            tags["threshold"] = repr(float(release.threshold))
        for k, v in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), k, v)
        summary = release.verdict_renderings.get("verdict.md") or release.reason
        self.client.update_model_version(self.model_name, str(version), description=description_text(summary))
        self.record_transition(version, None, state, actor="release pipeline", reason=release.reason)
        return version

    def record_transition(self, version: int, from_state: str | None, to_state: str, *, actor: str,
                          reason: str, evidence: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append one event to the version's history (tags history.0001, history.0002, ...)."""
        tags = self.tags(version)
        n = 1 + sum(1 for k in tags if k.startswith("history."))
        event = {"at": _now(), "actor": actor, "from": from_state, "to": to_state, "reason": reason,
                 "evidence": evidence or {}}
        self.client.set_model_version_tag(self.model_name, str(version), f"history.{n:04d}", history_text(event))
        return event

    def set_stage(self, version: int, stage: str, *, actor: str, reason: str,
                  evidence: dict[str, Any] | None = None) -> None:
        """Move a version to a stage as the stage model decides (ratchet.stages.move_to_stage);
        nothing when it is there already."""
        check_stage(stage)
        tags = self.tags(version)
        change = move_to_stage(version, stage, state=tags.get("state"), holder=self.alias_version(stage),
                               reason=reason, evidence=evidence, gate_reason=tags.get("reason", ""))
        if change is not None:
            self.apply(change, actor=actor)

    def apply(self, change: StageChange, *, actor: str) -> None:
        """Write a change of intent: alias moves, then version tags, then history records."""
        for move in change.aliases:
            if move.remove:
                self.remove_alias(move.stage, move.version)
            else:
                self.set_alias(move.stage, move.version)
        for version, tags in change.tags:
            self.set_tags(version, tags)
        for t in change.transitions:
            self.record_transition(t.version, t.from_state, t.to_state, actor=actor, reason=t.reason,
                                   evidence=t.evidence)

    # ---- rollout controller (additions) --------------------------------------------
    # Small, idempotent writes the rollout controller composes; each is one MLflow call
    # (or none when the value is already there), so a controller killed between two of
    # them can repeat them all on restart without changing the outcome.
    def set_alias(self, stage: str, version: int) -> bool:
        """Point alias `stage` at `version` with no bookkeeping; False when it already did."""
        check_stage(stage)
        self._version(version)
        if self.alias_version(stage) == version:
            return False
        self.client.set_registered_model_alias(self.model_name, stage, str(version))
        return True

    def remove_alias(self, stage: str, version: int | None = None) -> int | None:
        """Delete alias `stage` (only if it still names `version`, when given); the version it named, or None."""
        current = self.alias_version(stage)
        if current is None or (version is not None and current != version):
            return None
        self.client.delete_registered_model_alias(self.model_name, stage)
        return current

    def set_tags(self, version: int, tags: dict[str, str]) -> int:
        """Set several version tags, skipping those already equal; the number written."""
        have = self.tags(version)
        n = 0
        for k, v in tags.items():
            if have.get(k) != str(v):
                self.client.set_model_version_tag(self.model_name, str(version), k, str(v))
                n += 1
        return n

    def record_transition_once(self, version: int, from_state: str | None, to_state: str, *, actor: str,
                               reason: str, key: str, evidence: dict[str, Any] | None = None,
                               at: str | None = None) -> bool:
        """Append a history event unless one with the same idempotency `key` exists; True when written.

        Same format as record_transition plus "key"; `at` lets the controller use its own clock.
        """
        tags = self.tags(version)
        hist = [k for k in tags if k.startswith("history.")]
        for k in hist:
            try:
                if json.loads(tags[k]).get("key") == key:
                    return False
            except ValueError:
                continue
        event = {"at": at or _now(), "actor": actor, "from": from_state, "to": to_state, "reason": reason,
                 "evidence": evidence or {}, "key": key}
        text = json.dumps(event, default=str)
        if len(text) > 100_000:
            event["evidence"] = {"truncated": True}
            text = json.dumps(event, default=str)
        self.client.set_model_version_tag(self.model_name, str(version), f"history.{len(hist) + 1:04d}", text)
        return True

    def controller_state(self, key: str) -> str | None:
        """A value the rollout controller persisted (registered-model tag ratchet.controller.<key>)."""
        from mlflow.exceptions import MlflowException

        try:
            tags = dict(self.client.get_registered_model(self.model_name).tags or {})
        except MlflowException:
            return None
        name = f"ratchet.controller.{key}"
        value = tags.get(name)
        if value is None or not value.startswith("parts:"):
            return value
        _, n, digest = value.split(":")
        parts = [tags.get(f"{name}.{digest}.part{i}") for i in range(int(n))]
        return None if any(p is None for p in parts) else "".join(parts)  # type: ignore[arg-type]

    def put_controller_state(self, key: str, value: str | None) -> None:
        """Persist (or, with None, delete) a controller value atomically.

        Registered-model tags hold 5000 characters on SQL stores, so a longer value is
        written in parts first and committed by the single write of its header.
        """
        name = f"ratchet.controller.{key}"
        keep = ""
        if value is None:
            if name in (self.client.get_registered_model(self.model_name).tags or {}):
                self.client.delete_registered_model_tag(self.model_name, name)
        elif len(value) <= 4000 and not value.startswith("parts:"):
            self.client.set_registered_model_tag(self.model_name, name, value)
        else:
            import hashlib

            digest = hashlib.sha256(value.encode()).hexdigest()[:12]  # parts of different values never mix
            parts = [value[i:i + 4000] for i in range(0, len(value), 4000)]
            for i, p in enumerate(parts):
                self.client.set_registered_model_tag(self.model_name, f"{name}.{digest}.part{i}", p)
            self.client.set_registered_model_tag(self.model_name, name, f"parts:{len(parts)}:{digest}")
            keep = f"{name}.{digest}."
        self._drop_parts(name, keep)

    def _drop_parts(self, name: str, keep: str) -> None:
        """Delete the parts of `name` that its header no longer names (after the header's write,
        so a crash between the two leaves only orphans, which the next write removes)."""
        tags = self.client.get_registered_model(self.model_name).tags or {}
        for k in tags:
            if k.startswith(f"{name}.") and ".part" in k and not (keep and k.startswith(keep)):
                self.client.delete_registered_model_tag(self.model_name, k)

    # ---- monitoring (additions) ----------------------------------------------------
    # Drift, staleness and estimate runs are MLflow runs of their own experiment, tagged
    # with the version they judged; the version carries a short pointer to the latest.
    def log_monitoring(self, kind: str, version: int | None, *, artifacts: dict[str, str] | None = None,
                       metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None) -> str:
        """Log one monitoring run (kind: drift, staleness, estimate, recheck); returns its run id.

        `artifacts`: local file -> artifact folder. With a version, its tag `monitor.<kind>`
        gets {"run_id", "at", **tags} so the MLflow UI shows the latest result next to it.
        """
        import mlflow

        exp = self.client.get_experiment_by_name(MONITOR_EXPERIMENT)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(
            MONITOR_EXPERIMENT, artifact_location=_artifact_root(self.tracking_uri))
        if version is not None:
            self._version(version)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mlflow.start_run(experiment_id=exp_id, run_name=f"{kind}-v{version}" if version else kind) as run:
                mlflow.set_tags({"ratchet.monitor": kind, "ratchet.model": self.model_name,
                                 **({"ratchet.version": str(version)} if version is not None else {}),
                                 **{k: str(v)[:5000] for k, v in (tags or {}).items()}})
                clean = {k: float(v) for k, v in (metrics or {}).items()
                         if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")}
                if clean:
                    mlflow.log_metrics(clean)
                for local, dest in (artifacts or {}).items():
                    mlflow.log_artifact(local, artifact_path=dest)
        run_id = run.info.run_id
        if version is not None:
            pointer = {"run_id": run_id, "at": _now(), **{k: str(v)[:300] for k, v in (tags or {}).items()}}
            self.client.set_model_version_tag(self.model_name, str(version), f"monitor.{kind}",
                                              json.dumps(pointer)[:5000])
        return run_id

    def release_artifact(self, version: int, name: str, dst: str) -> str:
        """Download one file of a version's release run (e.g. 'release/spec.yaml') into dst; its path."""
        run_id = self.tags(version).get("run_id")
        if not run_id:
            raise RegistryError(f"version {version} has no run_id tag: it was not registered by a release")
        return self.client.download_artifacts(run_id, name, dst)

    # ---- threshold suggestions and their ledger (additions) ------------------------
    # The ledger of threshold approvals is an MLflow experiment with one run per entry:
    # the entry is the run's JSON artifact ledger/entry.json, its headline numbers are
    # the run's tags and metrics, and an entry counts only once its run is FINISHED, so a
    # writer killed half-way leaves no half entry. Entries are only ever added.
    LEDGER_EXPERIMENT = "ratchet-thresholds-ledger"

    def version_artifact_text(self, version: int, path: str) -> str | None:
        """Text of artifact `path` in the run that registered `version`, or None when absent."""
        from mlflow.exceptions import MlflowException

        run_id = self.tags(version).get("run_id")
        if not run_id:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, path, tmp)
            except (MlflowException, OSError):
                return None
            p = Path(local)
            return p.read_text(encoding="utf-8") if p.is_file() else None

    def append_ledger_entry(self, entry: dict[str, Any], tags: dict[str, str] | None = None,
                            metrics: dict[str, float] | None = None) -> str:
        """Add one entry to the threshold ledger of this model; the id of its MLflow run."""
        exp = self.client.get_experiment_by_name(self.LEDGER_EXPERIMENT)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(
            self.LEDGER_EXPERIMENT, artifact_location=_artifact_root(self.tracking_uri))
        run_tags = {"ratchet.ledger.model": self.model_name, **(tags or {})}
        run = self.client.create_run(exp_id, tags=run_tags,
                                     run_name=f"{self.model_name}-cycle-{int(entry.get('cycle', 0)):06d}")
        run_id = run.info.run_id
        for k, v in (metrics or {}).items():
            if v is not None:
                self.client.log_metric(run_id, k, float(v))
        self.client.log_text(run_id, json.dumps(entry, indent=2, sort_keys=True, default=str), "ledger/entry.json")
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def ledger_entries(self) -> list[dict[str, Any]]:
        """Every complete ledger entry of this model (deleted runs included, flagged
        `_deleted`), in the order they were written (by `cycle`)."""
        from mlflow.entities import ViewType

        exp = self.client.get_experiment_by_name(self.LEDGER_EXPERIMENT)
        if exp is None:
            return []
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [exp.experiment_id], filter_string=f"tags.`ratchet.ledger.model` = '{self.model_name}'",
                run_view_type=ViewType.ALL, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
        entries = []
        for run in runs:
            if run.info.status != "FINISHED":
                continue  # a writer stopped before the entry was complete
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    local = self.client.download_artifacts(run.info.run_id, "ledger/entry.json", tmp)
                    entry = json.loads(Path(local).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
            entry["_run_id"] = run.info.run_id
            entry["_deleted"] = run.info.lifecycle_stage == "deleted"
            entries.append(entry)
        return sorted(entries, key=lambda e: (int(e.get("cycle", 0)), e.get("at", "")))


MONITOR_EXPERIMENT = "ratchet-monitoring"
