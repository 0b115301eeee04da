"""The application layer: the `ratchet` command, the demo scenario and the release and
monitor step executors, above the library.

    cli.py       the `ratchet` command: argument wiring, exit codes
    commands/    the sub-commands that act (rollout, thresholds, monitor)
    demo/        the demo scenario (`ratchet demo`): releases, thresholds cycle, rollout
    steps/       the release and monitor step executors that components/ wrap

Only this layer may import pipelines/ (which import components/, which import steps/).
The library (every other package under ratchet/) never imports this layer.
"""
