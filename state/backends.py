"""Chooses the backend a task file asks for. The only place that knows every backend."""

from __future__ import annotations

from pathlib import Path

from state.backend import Backend
from state.config import BackendSpec
from state.errors import UsageError
from state.local import DEFAULT_DIRECTORY, local_backend


def open_backend(spec: BackendSpec, task_directory: Path, task: str) -> Backend:
    if spec.kind == "local":
        directory = Path(spec.settings.get("path") or DEFAULT_DIRECTORY)
        return local_backend(directory if directory.is_absolute() else task_directory / directory, task)
    if spec.kind == "azureblob":
        from state.azure_blob import azure_blob_backend  # the Blob SDK loads only for this backend

        return azure_blob_backend(spec.settings, task)
    raise UsageError(f"unknown backend {spec.kind!r}")
