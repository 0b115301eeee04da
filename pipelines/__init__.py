"""Kubeflow pipelines built from components/, and their compiled YAML."""
