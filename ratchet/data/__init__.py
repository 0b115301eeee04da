"""Data: transactions in, training sets out, checked.

Layer: below train (it never imports it), above the stage model and the utilities.

Modules: columns (canonical column names), spec (the data sections of a training spec
and the feature library), synth (the synthetic world), dataset (reading and filtering
raw Parquet, preflight), spark (the Spark session), trainingset (the point-in-time
training-set job), checks (data checks with named bounds).
"""
