"""Hubs that store published versions: a local folder (servable over HTTP), the Hugging Face Hub and
Kaggle Models."""

from __future__ import annotations

from ..errors import HubError, HubUnreachableError, MissingTokenError, NotPublishedError, VersionExistsError
from .hub import DEFAULT_NAMESPACE, Handle, Hub, VersionInfo
from .local import LocalHub, default_hub_path


def open_hub(location: str | None = None, *, namespace: str = DEFAULT_NAMESPACE, private: bool = False) -> Hub:
    """``hf://NAMESPACE`` is the Hugging Face Hub (``HF_ENDPOINT`` honoured), ``kaggle://OWNER``
    Kaggle Models (the ``kaggle`` extra; see :mod:`.kaggle`); ``None``
    (``$REPVGG_REGISTRY_HUB`` or the default folder) or a folder path is a :class:`LocalHub`."""
    if location and location.startswith("kaggle:"):
        from .kaggle import KaggleHub, parse_location

        return KaggleHub(parse_location(location), private=private, handle_namespace=namespace)
    if location and location.startswith("hf://"):
        from .huggingface import HuggingFaceHub

        hf_namespace = location[len("hf://") :].strip("/")
        if not hf_namespace or "/" in hf_namespace:
            raise HubError(f"invalid hub '{location}'; use hf://NAMESPACE, e.g. hf://my-org")
        return HuggingFaceHub(hf_namespace, private=private, handle_namespace=namespace)
    return LocalHub(location, namespace=namespace)


def published_by_variant(hub: Hub) -> tuple[dict[str, dict[str, list[int]]], str | None]:
    """``({base variant: {model name: [versions]}}, warning)`` for ``list``: a hub whose records
    cannot be read gives nothing and a warning that says so, instead of silently showing nothing
    published."""
    try:
        return hub.published_models(), None
    except HubError as exc:
        return {}, f"cannot read what {hub.location} has published: {exc}"


__all__ = [
    "DEFAULT_NAMESPACE",
    "Handle",
    "Hub",
    "HubError",
    "HubUnreachableError",
    "LocalHub",
    "MissingTokenError",
    "NotPublishedError",
    "VersionExistsError",
    "VersionInfo",
    "default_hub_path",
    "open_hub",
    "published_by_variant",
]
