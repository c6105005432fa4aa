"""What every hub (the local folder, the Hugging Face Hub) offers, and the errors it raises.

Handles follow tfhub.dev: ``<namespace>/<variant>/<task>/<integer version>``, e.g.
``repvgg/b3g4/feature_vector/1``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..publish.tasks import TASKS

DEFAULT_NAMESPACE = "repvgg"
_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class HubError(RuntimeError):
    """Base of every registry error; its message is one line that names the problem and the fix."""


class VersionExistsError(HubError):
    """A version number that is already published: versions are immutable."""

    @classmethod
    def taken(cls, where: str, version: int) -> VersionExistsError:
        return cls(
            f"{where} version {version} is already published and versions are immutable; "
            "omit --version to publish the next one"
        )


class NotPublishedError(HubError):
    """A handle that names nothing published."""


class HubUnreachableError(HubError):
    """The hub could not be reached (after retries)."""


class MissingTokenError(HubError):
    """Publishing to a remote hub without credentials."""


@dataclass(frozen=True, order=True)
class Handle:
    namespace: str
    variant: str
    task: str
    version: int

    def __str__(self) -> str:
        return f"{self.namespace}/{self.variant}/{self.task}/{self.version}"

    @classmethod
    def parse(cls, text: str) -> Handle:
        """Parse ``ns/variant/task/N``; anything else (``..``, empty or odd segments) is refused."""
        parts = text.strip("/").split("/")
        if len(parts) != 4:
            raise ValueError(f"not a handle: {text!r}; expected <namespace>/<variant>/<task>/<version>")
        namespace, variant, task, version = parts
        if not (_SEGMENT.match(namespace) and _SEGMENT.match(variant)) or task not in TASKS:
            raise ValueError(f"not a handle: {text!r}; tasks are {', '.join(TASKS)}")
        if not version.isdigit() or version.startswith("0"):
            raise ValueError(f"not a handle: {text!r}; the version is a positive integer")
        return cls(namespace, variant, task, int(version))


@dataclass(frozen=True)
class VersionInfo:
    """One published version of one task, as ``versions`` lists it."""

    handle: Handle
    created: str
    weights_source: str
    sha256: str  # of the .tar.gz archive
    location: str = ""  # a path or URL where it lives

    def to_dict(self) -> dict:
        data = asdict(self)
        data["handle"] = str(self.handle)
        data.update(
            namespace=self.handle.namespace,
            variant=self.handle.variant,
            task=self.handle.task,
            version=self.handle.version,
        )
        return data


@dataclass
class VerifyReport:
    target: str
    ok: bool
    checked_files: int = 0
    problems: list[str] = field(default_factory=list)
    signature: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Hub(ABC):
    """A model hub that stores immutable, versioned artifacts.

    ``publish`` takes a folder holding ``feature_vector/`` and ``classification/`` SavedModels plus
    their archives and manifests (see ``registry.staging``) and makes them version N, whole or not
    at all.
    """

    namespace: str

    @abstractmethod
    def versions(self, variant: str) -> list[VersionInfo]:
        """Published versions of ``variant`` (both tasks), oldest first."""

    @abstractmethod
    def publish_staged(self, variant: str, staged: Path, *, version: int | None = None) -> list[VersionInfo]:
        """Publish a staged build as the next (or the given) version."""

    @abstractmethod
    def artifact_files(self, handle: Handle) -> tuple[Path, Path, Path]:
        """Local (SavedModel folder, archive, manifest) of a published handle, downloaded if remote;
        raises NotPublishedError if it is not published."""

    def recorded_checksums(self, handle: Handle) -> dict[str, str]:
        """sha256 of the archive and the manifest as the hub's own records hold them (apart from
        the manifest, so that a tampered manifest is named as such): ``{"archive": .., "manifest": ..}``."""
        return {}

    def staging_dir(self) -> Path:
        """A private folder to build a release in."""
        import tempfile

        return Path(tempfile.mkdtemp(prefix="repvgg-release-"))

    def check_can_publish(self) -> None:  # noqa: B027 - optional hook, most hubs need nothing
        """Raise before any build work when publishing cannot succeed (e.g. no token)."""

    def published_versions(self) -> dict[str, list[int]]:
        """``{variant: [versions]}`` for ``list``; hubs that cannot answer cheaply return {}."""
        return {}
