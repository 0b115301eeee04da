"""ratchet: continuous deployment for critical ML models.

Domain logic only; importable without kfp or a cluster. See DESIGN.md for the layout.
"""

__version__ = "0.1.0"
