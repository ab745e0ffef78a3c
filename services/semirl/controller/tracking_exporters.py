"""The exporters a controller's TrackingSettings ask for, each imported only when it is on (their packages are
optional at run time: a missing one is an ImportError at start-up, which the controller reports)."""

from __future__ import annotations

from pathlib import Path

from .tracking import RunExporter, TrackingSettings


def exporters_from(settings: TrackingSettings, store: Path) -> list[RunExporter]:
    exporters: list[RunExporter] = []
    if settings.mlflow_tracking_uri:
        from .tracking_mlflow import MlflowExporter

        exporters.append(MlflowExporter(settings.mlflow_tracking_uri, settings.mlflow_experiment))
    if settings.wandb_mode:
        from .tracking_wandb import WandbExporter

        directory = Path(settings.wandb_dir) if settings.wandb_dir else store / "tracking"
        exporters.append(WandbExporter(settings.wandb_mode, settings.wandb_project, directory))
    if settings.artifact_uri:
        from .artifact_export import ArtifactExporter

        exporters.append(ArtifactExporter(settings.artifact_uri, settings.s3_endpoint_url or None))
    return exporters
