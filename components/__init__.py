"""Kubeflow components: thin typed wrappers; the work lives in ratchet.app.steps.release."""
