"""The demo scenario behind `ratchet demo`: synthetic releases, a thresholds cycle and a
live rollout in lock-step with replayed traffic."""
