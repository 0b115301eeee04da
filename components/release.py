"""The release pipeline's components, one per step.

Each is a lightweight Python component: typed inputs and outputs, imports inside,
nothing but argument plumbing; ratchet.app.steps.release does the work. They run in the
project image (components/image.py), which already holds kfp and ratchet.

    training_set -> train -> evaluate -> register -> [gate passed] promote
"""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.image import RATCHET_IMAGE


@dsl.component(base_image=RATCHET_IMAGE, install_kfp_package=False)
def training_set(data_path: str, spec_yaml: str, spec_name: str, as_of: str, tracking_uri: str,
                 model_name: str, report_dir: str, dataset: Output[Dataset], contract_yaml: str = "",
                 contract_name: str = "", bootstrap: bool = False):
    """Build the point-in-time training set on Spark and run the data checks (with the
    contract: also whether the test window holds the evidence it needs)."""
    from ratchet.app.steps.release import training_set_step

    summary = training_set_step(data_path, spec_yaml, spec_name, as_of, tracking_uri, model_name,
                                dataset.path, report_dir, contract_yaml=contract_yaml,
                                contract_name=contract_name, bootstrap=bootstrap)
    dataset.metadata.update({"rows_train": summary.get("rows_train"), "rows_test": summary.get("rows_test")})


@dsl.component(base_image=RATCHET_IMAGE, install_kfp_package=False)
def train(dataset: Input[Dataset], spec_yaml: str, spec_name: str, report_dir: str, model: Output[Model]):
    """Train XGBoost (hist) on the train window."""
    import os

    from ratchet.app.steps.release import train_step

    info = train_step(os.path.join(dataset.path, "train.parquet"), spec_yaml, spec_name,
                      os.path.join(model.path, "model.ubj"), report_dir)
    model.metadata.update({"framework": "xgboost", "format": "ubj", "rows": info["rows"]})


@dsl.component(base_image=RATCHET_IMAGE, install_kfp_package=False)
def evaluate(dataset: Input[Dataset], model: Input[Model], spec_yaml: str, spec_name: str,
             contract_yaml: str, contract_name: str,
             tracking_uri: str, model_name: str, bootstrap: bool, report_dir: str,
             evaluation: Output[dsl.Artifact], metrics: Output[Metrics],
             verdict: Output[HTML]) -> bool:
    """Score candidate and @production on the test window; judge the contract; True if it passed.

    A single return value on purpose: kfp's local runner resolves conditions on a
    task's `Output` but not on named outputs of a NamedTuple.
    """
    import json
    import os
    import shutil

    from ratchet.app.steps.release import evaluate_step

    passed = evaluate_step(os.path.join(dataset.path, "test.parquet"), os.path.join(model.path, "model.ubj"),
                           contract_yaml, contract_name, tracking_uri, model_name, bootstrap,
                           evaluation.path, report_dir, spec_yaml=spec_yaml, spec_name=spec_name)
    result = json.load(open(os.path.join(evaluation.path, "evaluation.json")))
    for key, value in result["metrics"].items():
        if isinstance(value, (int, float)):
            metrics.log_metric(key, float(value))
    shutil.copyfile(os.path.join(evaluation.path, "verdict.html"), verdict.path)
    return passed


@dsl.component(base_image=RATCHET_IMAGE, install_kfp_package=False)
def register(model: Input[Model], dataset: Input[Dataset], evaluation: Input[dsl.Artifact], spec_yaml: str,
             spec_name: str, tracking_uri: str, model_name: str, report_dir: str) -> int:
    """Log the release to MLflow and register the version (candidate or rejected)."""
    import os

    from ratchet.app.steps.release import register_step

    return register_step(os.path.join(model.path, "model.ubj"), spec_yaml, spec_name, dataset.path,
                         evaluation.path, tracking_uri, model_name, report_dir)


@dsl.component(base_image=RATCHET_IMAGE, install_kfp_package=False)
def promote(version: int, bootstrap: bool, tracking_uri: str, model_name: str, report_dir: str):
    """Give the version the alias its gate earned: @staging, or @production for a bootstrap."""
    from ratchet.app.steps.release import promote_step

    promote_step(version, "production" if bootstrap else "staging", tracking_uri, model_name, report_dir)
