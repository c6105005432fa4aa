"""What every hub (the local folder, the Hugging Face Hub, Kaggle Models) offers, and the errors it raises.

Handles follow tfhub.dev: ``<namespace>/<variant>/<task>/<integer version>``, e.g.
``repvgg/b3g4/feature_vector/1``. One version has four handles: ``feature_vector``,
``classification`` and ``feature_maps`` (a TF Hub SavedModel, its archive and its ``.keras`` twin
each) and ``train`` (the train form as ``.keras`` only). Versions published before a task existed
lack its handle (see ``publish.tasks.ABSENT_IN_OLDER_VERSIONS``).
"""

from __future__ import annotations

import contextlib
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    InvalidHandleError,
    InvalidNameError,
    NameTakenError,
    RegistryError,
    UsageError,
    VersionExistsError,
    first_line,
)
from ..publish.release import ArtifactFiles
from ..publish.tasks import RELEASE_TASKS

DEFAULT_NAMESPACE = "repvgg"

#: The one rule for every name that becomes a path segment or a URL segment: namespaces, model
#: names, the parts of a handle. Lower-case letters and digits first, then also ``.``, ``_`` and
#: ``-``; at most 64 characters. A leading letter or digit rules out ``.``, ``..``, hidden files and
#: option-like names; no ``/`` or ``\\`` rules out traversal.
NAME_RULE = "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters"
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

#: Versions are 1..MAX_VERSION: a bound that keeps ``--version`` from pushing every later default
#: version into absurd numbers (``--version 99999999999999999999``).
MAX_VERSION = 999_999


def is_valid_name(name: str) -> bool:
    return isinstance(name, str) and _SEGMENT.fullmatch(name) is not None


def validate_name(name: str, kind: str = "name") -> str:
    """Return ``name`` if it may become a path segment, else raise :class:`InvalidNameError`."""
    if not is_valid_name(name):
        raise InvalidNameError(kind, name, f"use {NAME_RULE}")
    return name


def validate_version(version: int | None) -> int | None:
    """``None`` (the next version) or an integer in 1..MAX_VERSION (not ``True``, which is 1 to Python)."""
    if version is not None and not (
        isinstance(version, int) and not isinstance(version, bool) and 1 <= version <= MAX_VERSION
    ):
        raise UsageError("--version", version, f"use an integer from 1 to {MAX_VERSION}, or omit it for the next one")
    return version


@dataclass(frozen=True, order=True)
class Handle:
    """``<namespace>/<model>/<task>/<version>``; ``variant`` is the model name (the variant's
    lower-case name unless published under another name)."""

    namespace: str
    variant: str
    task: str
    version: int

    def __str__(self) -> str:
        return f"{self.namespace}/{self.variant}/{self.task}/{self.version}"

    @classmethod
    def parse(cls, text: str) -> Handle:
        """Parse ``ns/model/task/N``; anything else (``..``, empty or odd segments) is refused."""
        parts = str(text).strip("/").split("/")
        if len(parts) != 4:
            raise InvalidHandleError(
                text, "expected <namespace>/<model>/<task>/<version>, e.g. repvgg/a0/feature_vector/1"
            )
        namespace, variant, task, version = parts
        for segment in (namespace, variant):
            if not is_valid_name(segment):
                raise InvalidHandleError(text, f"{segment!r} breaks the name rule ({NAME_RULE})")
        if task not in RELEASE_TASKS:
            raise InvalidHandleError(text, f"unknown task {task!r}; tasks are {', '.join(RELEASE_TASKS)}")
        if not version.isdigit() or version.startswith("0") or int(version) > MAX_VERSION:
            raise InvalidHandleError(text, f"the version is an integer from 1 to {MAX_VERSION}")
        return cls(namespace, variant, task, int(version))


@dataclass(frozen=True)
class VersionInfo:
    """One published version of one task, as ``versions`` lists it."""

    handle: Handle
    created: str
    weights_source: str
    sha256: str  # of the .tar.gz archive (of the .keras file for ``train``)
    location: str = ""  # a path or URL where it lives
    base_variant: str | None = None  # the table's variant (e.g. "B0") a custom name is built on

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
    kind: str = "published version"  # or "build folder" (no manifests: its SavedModels are loaded and run)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """``12 files match, serving_default: images -> logits [1, 1000]`` (no Python reprs)."""
        from ..publish.verify import describe_signature

        if self.kind == "build folder":
            return (
                f"build folder, {self.checked_files} files; its SavedModels load and run "
                f"({describe_signature(self.signature)}); checksums are written when it is published"
            )
        return f"{self.checked_files} files match, {describe_signature(self.signature)}"


@dataclass(frozen=True)
class PublishOutcome:
    """What one variant of a ``publish`` run came to: published handles, or the one-line error."""

    variant: str
    version: int | None = None
    handles: tuple[str, ...] = ()
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0  # the error's (2 for bad input, 1 for anything else)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {
            "variant": self.variant,
            "version": self.version,
            "handles": list(self.handles),
            "seconds": round(self.seconds, 2),
            "outcome": "published" if self.ok else self.error,
        }


def variant_named(model: str) -> str | None:
    """The table's name of the variant whose own model name ``model`` is (``a0`` -> ``A0``), else
    None: ``digits``, and also ``repvgg-a0`` (a spelling of A0, not its model name), are names of
    their own. The one owner of that rule: preflight, the index and the Hugging Face repo name ask here."""
    from ..variants.table import UnknownVariantError, get_variant

    try:
        spec = get_variant(model)
    except UnknownVariantError:
        return None
    return spec.name if spec.hub_name == model.lower() else None


def default_model_name(variant: str, output_stride: int = 32) -> str:
    """The model a variant is published under without ``--name``: its own name (``b0``), or at
    output stride 16 or 8 ``b0-os16`` / ``b0-os8``, a model of its own, since its artifacts compute
    other outputs than the plain network's (the one owner of that naming)."""
    from ..variants.table import check_output_stride, get_variant

    name = get_variant(variant).hub_name
    return name if check_output_stride(output_stride) == 32 else f"{name}-os{output_stride}"


#: The prefix of a variant's own model on a hosted hub (``repvgg-a0``): a custom name may not take one
VARIANT_PREFIX = "repvgg-"


def hosted_name(model: str) -> str:
    """The name ``model`` has on a hosted hub (a Hugging Face repo, a Kaggle model), the one owner of
    that rule: a variant's own name keeps ``repvgg-<variant>``, where its releases have always been and
    where a bare ``a0`` would say nothing on the hub; any other model name (``--name digits``) is a
    model of its own, named as the user chose it."""
    key = model.lower()
    return f"{VARIANT_PREFIX}{key}" if variant_named(key) else key


def shadowed_variant(model: str) -> str | None:
    """The variant whose own hosted name a custom ``model`` name would take (``repvgg-a0`` -> ``A0``),
    else None: publishing it would land among the versions of another model."""
    key = model.lower()
    return variant_named(key.removeprefix(VARIANT_PREFIX)) if key.startswith(VARIANT_PREFIX) else None


class Hub(ABC):
    """A model hub that stores immutable, versioned artifacts; its methods are the verbs
    (``publish``, ``publish_many``, ``verify``, ``versions``), as on huggingface_hub's ``HfApi``.

    ``publish_staged`` takes a staged release folder (the ``feature_vector/``, ``classification/``
    and ``feature_maps/`` SavedModels, their archives, the four ``.keras`` files and every manifest: see
    ``publish.release``) and makes it version N, whole or not at all.
    """

    namespace: str
    #: Called with one line while a publish waits for another publisher (hubs that lock).
    on_lock_wait: Callable[[str], None] | None = None
    #: Records the last read skipped as unreadable, one line each (hubs with an index).
    index_warnings: list[str] | tuple[str, ...] = ()

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the hub is, as the user would type it for ``--hub`` (a folder, ``hf://NS`` or ``kaggle://OWNER``)."""

    @abstractmethod
    def versions(self, variant: str) -> list[VersionInfo]:
        """Published versions of ``variant`` (every task), oldest first."""

    @abstractmethod
    def publish_staged(self, variant: str, staged: Path, *, version: int | None = None) -> list[VersionInfo]:
        """Publish a staged build as the next (or the given) version."""

    @abstractmethod
    def artifact_files(self, handle: Handle) -> ArtifactFiles:
        """The local files (SavedModel folder, archive, ``.keras``, manifest) of a published
        handle, downloaded if remote; raises NotPublishedError if it is not published."""

    def recorded_checksums(self, handle: Handle) -> dict[str, str]:
        """sha256 of the artifact's files as the hub's own records hold them (apart from the
        manifest, so that a tampered manifest is named as such): ``{role: sha256}`` with the roles
        of :class:`~repvgg_registry.publish.release.ArtifactFiles` (``archive``, ``keras``, ``manifest``)."""
        return {}

    def staging_dir(self) -> Path:
        """A private folder to build a release in."""
        import tempfile

        return Path(tempfile.mkdtemp(prefix="repvgg-release-"))

    def check_can_publish(self) -> None:  # noqa: B027 - optional hook, most hubs need nothing
        """Raise before any build work when publishing cannot succeed (e.g. no token)."""

    def preflight(self, model: str, *, version: int | None = None, base_variant: str | None = None) -> None:
        """Everything that can refuse a publish of ``model``, asked before minutes of build work:
        credentials and write access, readable records, a ``version`` that is free, and a model
        name that is not another base variant's (``base_variant``: the table's name, e.g. ``B0``)."""
        validate_name(model.lower(), "model name")
        validate_version(version)
        self.check_can_publish()
        if base_variant is not None:
            own = variant_named(model.lower())
            if own is not None and own != base_variant:  # "a0" always means RepVGG-A0
                raise NameTakenError(self.location, model.lower(), own, base_variant)
            bases = {v.base_variant for v in self.versions(model) if v.base_variant}
            if bases and base_variant not in bases:
                raise NameTakenError(self.location, model.lower(), sorted(bases)[0], base_variant)
        if version is not None and version in self.taken_versions(model):
            raise VersionExistsError.taken(f"{self.namespace}/{model.lower()}", version)

    def pending_version(self, model: str) -> int | None:
        """The version of ``model`` that a publish cut short left to finish here (hubs that number
        versions themselves and keep its files: Kaggle), else None."""
        return None

    def finish_pending(self, model: str) -> list[VersionInfo]:
        """Finish that version from the files it kept (see :meth:`pending_version`)."""
        raise NotImplementedError(f"{self.location} keeps no unfinished publishes")

    def taken_versions(self, model: str) -> set[int]:
        """Version numbers of ``model`` that a new publish may not use (hubs that keep more than
        their records, such as files on disk, add those)."""
        return {v.handle.version for v in self.versions(model)}

    # ----- the verbs -----------------------------------------------------------------------
    def publish(
        self,
        variant: str,
        *,
        weights: str = "timm",
        labels: str | Path | None = None,
        name: str | None = None,
        output_stride: int = 32,
        formats: Collection[str] | None = None,
        int8_calibration: str | Path | None = None,
        version: int | None = None,
        seed: int = 0,
        reporter=None,
    ) -> list[VersionInfo]:
        """Build, check, archive and publish every artifact of ``variant`` as one version, under
        the model name ``name`` (default :func:`default_model_name`), its classes named by ``labels``,
        with the deployment ``formats`` (None: all; see ``publish/formats.py``) and, given a folder of
        ``int8_calibration`` images, int8 LiteRT files."""
        from .operations import publish_variant

        return publish_variant(
            self,
            variant,
            weights=weights,
            labels=labels,
            name=name,
            output_stride=output_stride,
            formats=formats,
            int8_calibration=int8_calibration,
            version=version,
            seed=seed,
            reporter=reporter,
        )

    def publish_many(
        self,
        variants: list[str],
        *,
        weights: str = "timm",
        labels: str | Path | None = None,
        name: str | None = None,
        output_stride: int = 32,
        formats: Collection[str] | None = None,
        int8_calibration: str | Path | None = None,
        version: int | None = None,
        seed: int = 0,
        reporter_for: Callable[[str], Any] | None = None,
        on_error: Callable[[PublishOutcome], None] | None = None,
    ) -> list[PublishOutcome]:
        """Publish each variant in turn; one failure is recorded (and given to ``on_error``) and the
        others go on. ``reporter_for(name)`` gives a progress reporter (a context manager) per variant."""
        if name is not None and len(variants) > 1:
            raise UsageError("--name", name, "names one model: publish one variant with it")
        outcomes = []
        for variant in variants:
            start = time.perf_counter()
            reporter = reporter_for(variant) if reporter_for else contextlib.nullcontext(None)
            try:
                with reporter as phases:
                    published = self.publish(
                        variant,
                        weights=weights,
                        labels=labels,
                        name=name,
                        output_stride=output_stride,
                        formats=formats,
                        int8_calibration=int8_calibration,
                        version=version,
                        seed=seed,
                        reporter=phases,
                    )
            except (RegistryError, OSError) as exc:  # one line each: a full disk as much as a bad checkpoint
                known = isinstance(exc, RegistryError)
                outcome = PublishOutcome(
                    variant, error=str(exc) if known else first_line(exc), exit_code=exc.exit_code if known else 1
                )
                if on_error:
                    on_error(outcome)
            else:
                outcome = PublishOutcome(
                    variant,
                    version=published[0].handle.version,
                    handles=tuple(str(v.handle) for v in published),
                    seconds=time.perf_counter() - start,
                )
            outcomes.append(outcome)
        return outcomes

    def verify(self, target: str) -> VerifyReport:
        """Recompute every checksum of a published version (a handle, its folder, or a build
        folder's SavedModels), load it and check its signature."""
        from .operations import verify

        return verify(self, target)

    def published_versions(self) -> dict[str, list[int]]:
        """``{model name: [versions]}``; hubs that cannot answer cheaply return {}."""
        return {}

    def published_models(self) -> dict[str, dict[str, list[int]]]:
        """``{base variant: {model name: [versions]}}`` for ``list``, with the models published
        under their own ``--name``; hubs that cannot answer cheaply return {}."""
        return {}
