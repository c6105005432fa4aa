"""Hubs that store published versions: a local folder (servable over HTTP) and the Hugging Face Hub."""

from __future__ import annotations

from .hub import (
    DEFAULT_NAMESPACE,
    Handle,
    Hub,
    HubError,
    HubUnreachableError,
    MissingTokenError,
    NotPublishedError,
    VerificationError,
    VersionExistsError,
    VersionInfo,
)
from .local import LocalHub, default_hub_path


def open_hub(location: str | None = None, *, namespace: str = DEFAULT_NAMESPACE) -> Hub:
    """``None`` (``$REPVGG_REGISTRY_HUB`` or the default folder) or a folder path: a LocalHub."""
    return LocalHub(location, namespace=namespace)


__all__ = [
    "DEFAULT_NAMESPACE",
    "Handle",
    "Hub",
    "HubError",
    "HubUnreachableError",
    "LocalHub",
    "MissingTokenError",
    "NotPublishedError",
    "VerificationError",
    "VersionExistsError",
    "VersionInfo",
    "default_hub_path",
    "open_hub",
]
