"""Train: the training spec file and the XGBoost trainer.

Layer: above data (whose sections of the spec -- dataset, windows, filters, checks,
Spark, the feature library -- live in ratchet.data.spec), below evaluate and registry.

Modules: spec (the whole spec file: TrainingSpec, the XGBoost section, load_spec),
trainer (fit, predict, save and load a booster), distributed (xgboost.spark on a Spark
cluster, same model format).
"""
