"""Checks of the container images (docker/) and skaffold.yaml."""
