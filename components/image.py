"""The one place that names the container image every component runs in."""

import os

#: Override with RATCHET_IMAGE when compiling for your registry.
RATCHET_IMAGE: str = os.environ.get("RATCHET_IMAGE", "ghcr.io/ratchet-ml/ratchet:0.1.0")
