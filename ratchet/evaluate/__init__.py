"""Evaluate: score models on the same rows and measure them, slice by slice.

Layer: below contracts and thresholds (which judge and tune on what this measures),
above train and data. Knows nothing of verdicts or releases.

Modules: scoring (the scored table: label, candidate and production scores, production's
thresholds, slice columns; headline metrics; the Evidently reports beside a verdict),
spark_scoring (the same table scored on Spark executors, for large test sets), slices
(slice masks), metrics and kernels (the slice metrics engine, numba), stats (intervals,
paired differences, Holm, confidence sequences), reports (Evidently and plots).
"""
