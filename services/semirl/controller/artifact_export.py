"""A finished run's final/ and best/ policies copied to an S3-compatible store:
s3://<bucket>/<prefix>/<run id>/{final,best}/<file>, every file with boto3's managed (multipart, parallel) upload,
a file already there with the same size skipped, so a retried export sends only what is missing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from semirl.core.runstate import RunRecord

from .tracking import TrackingState


class ArtifactExporter:
    name = "artifacts"

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        import boto3

        parsed = urlparse(uri)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.s3 = boto3.client("s3", endpoint_url=endpoint_url)

    def steps(self, record: RunRecord, state: TrackingState, entries: Sequence[dict[str, Any]]) -> None:
        return None

    def evals(self, record: RunRecord, state: TrackingState, results: Sequence[Any]) -> None:
        return None

    def key(self, record: RunRecord, what: str, relative: str) -> str:
        return "/".join(part for part in (self.prefix, record.id, what, relative) if part)

    def finish(self, record: RunRecord, state: TrackingState) -> None:
        sources = {"final": record.final_path, "best": record.best.path if record.best else None}
        for what, path in sources.items():
            if not path or not Path(path).is_dir():
                continue
            root = Path(path)
            for file in sorted(p for p in root.rglob("*") if p.is_file()):
                key = self.key(record, what, file.relative_to(root).as_posix())
                if self._has(key, file.stat().st_size):
                    continue
                self.s3.upload_file(str(file), self.bucket, key)
            state.set(f"artifacts:{what}", f"s3://{self.bucket}/{self.key(record, what, '')}")

    def _has(self, key: str, size: int) -> bool:
        from botocore.exceptions import ClientError

        try:
            return int(self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"]) == size
        except ClientError:
            return False
