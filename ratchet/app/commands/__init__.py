"""Sub-commands of `ratchet` that act on the registry and the deployment: each takes the
argparse Namespace and returns an exit code; ratchet.app.cli wires them."""
