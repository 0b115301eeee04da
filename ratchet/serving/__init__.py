"""The decision service: production + sticky canary + shadow, decision log, hot reload.

    $ python -m ratchet.serving --tracking-uri sqlite:///mlflow.db --production 6 \\
          --canary 7 --canary-weight 5 --shadow 8 --decision-log decisions/
    $ curl -s localhost:8080/v1/decide -d '{"card_id": "c1", "amount": 12.5}'

Modules: config (flags/env, stage config), schema (request validation), routing
(sticky canary), models (loaded versions, thresholds), service (decide, reload),
shadow (off-path scoring), log_schema (the decision-log row and its one Arrow schema,
read by ratchet.rollout), decision_log (the Parquet writer), metrics (Prometheus), app
(HTTP), replay (traffic from a Parquet file). What runs is told in the stage model's
wire format (ratchet.stages.wire).
Heavy imports (fastapi, mlflow) happen only in app/service, never here.
"""

from ratchet.serving.config import ServeOptions, StageConfig, add_serve_arguments, options_from_args

__all__ = ["ServeOptions", "StageConfig", "add_serve_arguments", "options_from_args"]
