"""Local stand-ins for services tests cannot reach (a Kubeflow Pipelines server)."""
