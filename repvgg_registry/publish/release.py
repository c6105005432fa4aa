"""A release: every artifact of one build, each with its checksummed files and its manifest.

Layout of a staged release folder (what hubs publish as one version)::

    feature_vector/              the SavedModel, metadata.json, README.md
    feature_vector.tar.gz        the same files at the archive root (TF Hub)
    feature_vector.keras         the same fused network for Keras 3 (keras.saving.load_model)
    feature_vector.manifest.json
    classification/ ... (the same four)
    train.keras                  the multi-branch train form with its head (fine-tune, then fuse)
    train.manifest.json

The manifest lists every file of the folder with its size and sha256, the archive's and the
``.keras`` file's sha256 and size, and the output the artifact gives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..hashing import sha256_file
from .archive import file_table, write_archive
from .tasks import RELEASE_TASKS, TASKS, TRAIN, has_savedmodel

MANIFEST_FORMAT = 1

ARCHIVE_SUFFIX = ".tar.gz"
MANIFEST_SUFFIX = ".manifest.json"
KERAS_SUFFIX = ".keras"


@dataclass(frozen=True)
class ArtifactFiles:
    """The files of one artifact, from :func:`artifact_files`. ``folder`` and ``archive`` are None
    for ``train``, which is only a ``.keras`` file."""

    task: str
    folder: Path | None
    archive: Path | None
    keras: Path
    manifest: Path

    def roles(self) -> dict[str, Path]:
        """``{role: path}`` of the files this artifact has, in the order a commit moves them."""
        named = {"folder": self.folder, "archive": self.archive, "keras": self.keras, "manifest": self.manifest}
        return {role: path for role, path in named.items() if path is not None}

    def missing(self) -> list[Path]:
        """The files of this artifact that are not in place (see :func:`is_present`)."""
        return [path for role, path in self.roles().items() if not is_present(role, path)]

    def required(self, manifest: dict | None = None) -> dict[str, Path]:
        """The files a complete artifact must have. A version published before ``.keras`` files
        existed has no ``keras`` entry in its manifest and so no ``.keras`` to require."""
        roles = self.roles()
        if manifest is not None and "keras" not in manifest:
            roles.pop("keras", None)
        return roles


def is_present(role: str, path: Path) -> bool:
    """Whether the file of ``role`` is in place: a regular file, or for ``folder`` a real folder
    (a symlinked version folder is never an artifact)."""
    if role == "folder":
        return path.is_dir() and not path.is_symlink()
    return path.is_file()


def artifact_files(base: Path, task: str) -> ArtifactFiles:
    """The one owner of the naming rule: an artifact named ``X`` (``release/classification`` when
    staged, ``<task>/3`` when published) is the folder ``X/`` with ``X.tar.gz``, ``X.keras`` and
    ``X.manifest.json`` beside it; ``train`` has only ``X.keras`` and ``X.manifest.json``."""
    if task not in RELEASE_TASKS:
        raise ValueError(f"task must be one of {RELEASE_TASKS}, not {task!r}")

    def beside(suffix: str) -> Path:
        return base.with_name(base.name + suffix)

    saved = has_savedmodel(task)
    return ArtifactFiles(
        task,
        base if saved else None,
        beside(ARCHIVE_SUFFIX) if saved else None,
        beside(KERAS_SUFFIX),
        beside(MANIFEST_SUFFIX),
    )


def core_roles(task: str) -> set[str]:
    """The roles whose files on disk mean that a version of ``task`` was published, for every
    manifest this package wrote (versions from before ``.keras`` files have no ``keras``)."""
    return {"folder", "archive", "manifest"} if has_savedmodel(task) else {"keras", "manifest"}


def staged_files(release: Path, task: str) -> ArtifactFiles:
    """The files of ``task`` in a staged release (or a build folder)."""
    return artifact_files(release / task, task)


def _file_record(path: Path) -> dict:
    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


def make_manifest(files: ArtifactFiles, meta: dict, archive_sha256: str | None = None) -> dict:
    """The manifest of one artifact; ``meta`` is the metadata.json of its SavedModel (for
    ``train``: of the classification artifact, whose input and output it shares)."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "variant": meta["variant"],
        "task": files.task,
        "created": meta["created"],
        "weights": meta["weights"],
        "output": meta["output"],
        "keras": _file_record(files.keras),
    }
    if files.folder is not None:
        manifest["archive"] = {
            "name": files.archive.name,
            "size": files.archive.stat().st_size,
            "sha256": archive_sha256,
        }
        manifest["files"] = file_table(files.folder)
    else:
        manifest["form"] = "train"
    return manifest


def primary_record(manifest: dict) -> dict:
    """What a handle's ``sha256`` and size stand for: the TF Hub archive of a SavedModel task, the
    ``.keras`` file of ``train``."""
    return manifest["archive"] if "archive" in manifest else manifest["keras"]


def release_tasks(release: Path) -> tuple[str, ...]:
    """The tasks a build folder or staged release holds: both SavedModel tasks, and ``train`` when
    there is a ``train.keras`` (a deploy-form source has no train form to ship)."""
    train = staged_files(release, TRAIN)
    # either file says there is a train form: a manifest without its .keras is then "missing"
    return TASKS + ((TRAIN,) if train.keras.exists() or train.manifest.exists() else ())


def stage_release(build_dir: Path) -> dict[str, dict]:
    """Add archives and manifests next to the artifacts of ``build_dir``; returns the manifests."""
    manifests = {}
    metas = {task: json.loads((build_dir / task / "metadata.json").read_text()) for task in TASKS}
    for task in release_tasks(build_dir):
        files = staged_files(build_dir, task)
        sha = write_archive(files.folder, files.archive) if files.folder is not None else None
        manifests[task] = make_manifest(files, metas.get(task, metas["classification"]), sha)
        files.manifest.write_text(json.dumps(manifests[task], indent=2) + "\n")
    return manifests


__all__ = [
    "ARCHIVE_SUFFIX",
    "KERAS_SUFFIX",
    "MANIFEST_SUFFIX",
    "TRAIN",
    "ArtifactFiles",
    "artifact_files",
    "core_roles",
    "is_present",
    "make_manifest",
    "primary_record",
    "release_tasks",
    "stage_release",
    "staged_files",
]
