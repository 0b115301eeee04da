"""The release pipeline: raw transactions to a registered, gated candidate.

The evaluate step's verdict decides, with dsl.If, whether the registered version gets
an alias (@staging, or @production for a bootstrap release). A rejected version is
still registered, tagged `rejected` with the reason, so the history is complete.

Compile with `python -m pipelines.release` (writes pipelines/release.yaml).
"""

from pathlib import Path

from kfp import compiler, dsl

from components.release import evaluate, promote, register, train, training_set

COMPILED = Path(__file__).with_name("release.yaml")


@dsl.pipeline(name="ratchet-release",
              description="Spark training set, data checks, XGBoost, contract gate, MLflow registration.")
def release_pipeline(data_path: str, spec_yaml: str, contract_yaml: str, tracking_uri: str,
                     report_dir: str, spec_name: str = "spec.yaml", contract_name: str = "contract.yaml",
                     model_name: str = "fraud", as_of: str = "", bootstrap: bool = False, exercise: bool = False):
    """exercise=True rehearses a scheduled release: every step up to the gate runs (so
    broken data, code or criteria show within one cycle) and nothing is registered."""
    ts = training_set(data_path=data_path, spec_yaml=spec_yaml, spec_name=spec_name, as_of=as_of,
                      tracking_uri=tracking_uri, model_name=model_name, report_dir=report_dir,
                      contract_yaml=contract_yaml, contract_name=contract_name, bootstrap=bootstrap)
    ts.set_display_name("training set (Spark) + data checks")
    tr = train(dataset=ts.outputs["dataset"], spec_yaml=spec_yaml, spec_name=spec_name, report_dir=report_dir)
    tr.set_display_name("train XGBoost")
    ev = evaluate(dataset=ts.outputs["dataset"], model=tr.outputs["model"], spec_yaml=spec_yaml,
                  spec_name=spec_name, contract_yaml=contract_yaml,
                  contract_name=contract_name, tracking_uri=tracking_uri, model_name=model_name,
                  bootstrap=bootstrap, report_dir=report_dir)
    ev.set_display_name("evaluate vs @production + contract gate")
    with dsl.If(exercise == False, name="deploy"):  # noqa: E712 (kfp condition syntax)
        reg = register(model=tr.outputs["model"], dataset=ts.outputs["dataset"],
                       evaluation=ev.outputs["evaluation"], spec_yaml=spec_yaml, spec_name=spec_name,
                       tracking_uri=tracking_uri, model_name=model_name, report_dir=report_dir)
        reg.set_display_name("register in MLflow")
        with dsl.If(ev.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
            pr = promote(version=reg.output, bootstrap=bootstrap, tracking_uri=tracking_uri,
                         model_name=model_name, report_dir=report_dir)
            pr.set_display_name("set alias")
    for task in (ts, tr, ev, reg, pr):
        task.set_caching_options(False)


def compile_pipeline(path: Path = COMPILED) -> Path:
    """Compile the pipeline to YAML (deterministic: compiling twice gives the same file)."""
    compiler.Compiler().compile(release_pipeline, str(path))
    return path


if __name__ == "__main__":
    print(compile_pipeline())
