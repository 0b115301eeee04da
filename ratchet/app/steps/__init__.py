"""Step executors: the work of each release and monitor pipeline step, called by the
Kubeflow components (components/) and by the local runner alike."""
