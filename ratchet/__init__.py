"""ratchet: continuous deployment for critical ML models.

The library: domain logic, importable without kfp or a cluster; the application (the
command, the demo, the step executors) is ratchet.app, above it. README's Layout
section lists the layers; .importlinter enforces them.
"""

__version__ = "0.1.0"
