"""Monitor: is production still good? Drift, staleness and label-free estimates.

Layer: top of the library, beside rollout (neither imports the other). The monitor
pipeline's step executors that put these together are ratchet.app.steps.monitor.

Modules: config (contracts/monitor.yaml), drift (feature drift of live or recent traffic
vs the training set, Evidently), features (point-in-time features for pandas-sized
windows), staleness (the backtest: recall at FPR by model age, retraining cadence),
estimation (label-free recall/FPR from calibrated scores), recheck (the promotion
re-judged as labels mature).
"""
