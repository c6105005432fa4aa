"""A release: every artifact of one build, each with its checksummed files and its manifest.

Layout of a staged release folder (what hubs publish as one version)::

    feature_vector/              the SavedModel, metadata.json, README.md
    feature_vector.tar.gz        the same files at the archive root (TF Hub)
    feature_vector.keras         the same fused network for Keras 3 (keras.saving.load_model)
    feature_vector.tflite        LiteRT fp32, when the build made it (--formats)
    feature_vector.onnx          ONNX, when the build made it (the onnx extra)
    feature_vector.manifest.json
    classification/ ... feature_maps/ ... (the same)
    train.keras                  the multi-branch train form with its head (fine-tune, then fuse)
    train.manifest.json
    classification-serving/      the inference-only SavedModel (weights as constants, TF Serving)
    classification-serving.tar.gz
    classification-serving.manifest.json

The manifest lists every file of the folder with its size and sha256, the archive's, and the
size and sha256 of each file beside it (``keras``, ``tflite``, ``onnx``: only those the build made),
and the output the artifact gives.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import HubStateError
from ..hashing import sha256_file
from .archive import file_table, write_archive
from .tasks import RELEASE_TASKS, SERVING_TASKS, TASKS, TRAIN, has_savedmodel, is_serving

MANIFEST_FORMAT = 1

ARCHIVE_SUFFIX = ".tar.gz"
MANIFEST_SUFFIX = ".manifest.json"
KERAS_SUFFIX = ".keras"
TFLITE_SUFFIX = ".tflite"
INT8_SUFFIX = ".int8.tflite"
ONNX_SUFFIX = ".onnx"
#: The files beside an artifact's folder, by role: the one owner of each suffix.
SUFFIXES = {
    "archive": ARCHIVE_SUFFIX,
    "keras": KERAS_SUFFIX,
    "tflite": TFLITE_SUFFIX,
    "tflite_int8": INT8_SUFFIX,
    "onnx": ONNX_SUFFIX,
    "manifest": MANIFEST_SUFFIX,
}
#: Roles an artifact has only when its manifest records them: ``.keras`` files came after the
#: first versions; LiteRT and ONNX files only when the build made them (``--formats``), int8 ones
#: only with ``--int8-calibration``.
OPTIONAL_ROLES = ("keras", "tflite", "tflite_int8", "onnx")
#: The roles of files converted from a SavedModel, each loaded and run in its own runtime.
CONVERTED_ROLES = ("tflite", "tflite_int8", "onnx")


@dataclass(frozen=True)
class ArtifactFiles:
    """The files of one artifact, from :func:`artifact_files`: every file it can have; a role that
    does not apply to the task is None (``train`` has no folder, a serving SavedModel no ``.keras``,
    only the three TF Hub tasks have ``.tflite`` and ``.onnx``)."""

    task: str
    folder: Path | None
    archive: Path | None
    keras: Path | None
    tflite: Path | None
    tflite_int8: Path | None
    onnx: Path | None
    manifest: Path

    def roles(self) -> dict[str, Path]:
        """``{role: path}`` of the files this artifact can have, in the order a commit moves them
        (the manifest last)."""
        named = {
            "folder": self.folder,
            "archive": self.archive,
            "keras": self.keras,
            "tflite": self.tflite,
            "tflite_int8": self.tflite_int8,
            "onnx": self.onnx,
            "manifest": self.manifest,
        }
        return {role: path for role, path in named.items() if path is not None}

    def missing(self, manifest: dict | None = None) -> list[Path]:
        """The files of :meth:`required` that are not in place (see :func:`is_present`)."""
        return [path for role, path in self.required(manifest).items() if not is_present(role, path)]

    def required(self, manifest: dict | None = None) -> dict[str, Path]:
        """The files a complete artifact must have: with ``manifest``, the core files and those of
        :data:`OPTIONAL_ROLES` it records (a version from before ``.keras`` files has no ``keras``
        entry, a build without LiteRT no ``tflite``); without one, every file it can have."""
        roles = self.roles()
        if manifest is not None:
            for role in OPTIONAL_ROLES:
                if role not in manifest:
                    roles.pop(role, None)
        return roles


def is_present(role: str, path: Path) -> bool:
    """Whether the file of ``role`` is in place: a regular file, or for ``folder`` a real folder
    (a symlinked version folder is never an artifact)."""
    if role == "folder":
        return path.is_dir() and not path.is_symlink()
    return path.is_file()


def artifact_files(base: Path, task: str) -> ArtifactFiles:
    """The one owner of the naming rule: an artifact named ``X`` (``release/classification`` when
    staged, ``<task>/3`` when published) is the folder ``X/`` with ``X.tar.gz``, ``X.keras``,
    ``X.tflite``, ``X.onnx`` and ``X.manifest.json`` beside it (:data:`SUFFIXES`); ``train`` has
    only ``X.keras`` and ``X.manifest.json``, a serving SavedModel no ``.keras`` or converted files."""
    if task not in RELEASE_TASKS:
        raise ValueError(f"task must be one of {RELEASE_TASKS}, not {task!r}")

    def beside(role: str, applies: bool = True) -> Path | None:
        return base.with_name(base.name + SUFFIXES[role]) if applies else None

    saved = has_savedmodel(task)
    converted = task in TASKS
    return ArtifactFiles(
        task,
        base if saved else None,
        beside("archive", saved),
        beside("keras", not is_serving(task)),
        beside("tflite", converted),
        beside("tflite_int8", converted),
        beside("onnx", converted),
        beside("manifest"),
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
    ``train``: of the classification artifact, whose input and output it shares). Each file of
    :data:`OPTIONAL_ROLES` is recorded when it is there."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "variant": meta["variant"],
        "task": files.task,
        "created": meta["created"],
        "weights": meta["weights"],
        "output": meta["output"],
    }
    for role in OPTIONAL_ROLES:
        path = files.roles().get(role)
        if path is not None and path.is_file():
            manifest[role] = _file_record(path)
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
    """The tasks a build folder or staged release holds: the three SavedModel tasks, ``train``
    when there is a ``train.keras`` (a deploy-form source has no train form to ship), and each
    serving SavedModel the build made."""
    train = staged_files(release, TRAIN)
    # either file says there is a train form: a manifest without its .keras is then "missing"
    has_train = train.keras.exists() or train.manifest.exists()
    serving = tuple(task for task in SERVING_TASKS if (release / task).exists())
    return TASKS + ((TRAIN,) if has_train else ()) + serving


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def read_staged(staged: Path) -> dict[str, dict]:
    """``{task: manifest}`` of a staged release, for every task it holds, checked before any hub
    commit: each manifest readable, with a weights source and a sha256 and size for every file it
    records, and every file it records in place (a ``.keras`` above all, which older stagings
    lack). Every hub publishes through this, so none can commit a version with a file missing."""
    manifests = {}
    for task in release_tasks(staged):
        files = staged_files(staged, task)
        manifest = files.manifest
        if not manifest.is_file():
            raise HubStateError(manifest, "is missing from the staged release", _RESTAGE)
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            if "keras" not in data and files.keras is not None:
                raise KeyError("keras")  # every staging of this package has its .keras files
            records = [primary_record(data), *(data[role] for role in OPTIONAL_ROLES if role in data)]
            source = data["weights"]["source"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HubStateError(manifest, f"is not a readable manifest ({type(exc).__name__})", _RESTAGE) from None
        for path in files.missing(data):
            raise HubStateError(path, "is missing from the staged release", _RESTAGE)
        valid = all(
            isinstance(r, dict) and is_sha256(r.get("sha256")) and type(r.get("size")) is int and r["size"] >= 0
            for r in records
        )
        if not (isinstance(source, str) and valid):
            raise HubStateError(manifest, "has no valid weights source, or sha256 and size of its files", _RESTAGE)
        manifests[task] = data
    return manifests


_RESTAGE = "stage the build again and rerun"


def stage_release(build_dir: Path) -> dict[str, dict]:
    """Add archives and manifests next to the artifacts of ``build_dir``; returns the manifests.

    The tasks are archived and checksummed on threads: ISA-L's gzip and hashlib release the GIL, and
    a big variant has six SavedModels of hundreds of MB each. Each archive is the same bytes
    whichever thread writes it."""
    metas = {task: json.loads((build_dir / task / "metadata.json").read_text()) for task in TASKS}

    def stage(task: str) -> dict:
        files = staged_files(build_dir, task)
        sha = write_archive(files.folder, files.archive) if files.folder is not None else None
        meta = metas.get(task) or (json.loads((files.folder / "metadata.json").read_text()) if files.folder else None)
        manifest = make_manifest(files, meta or metas["classification"], sha)
        files.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest

    tasks = release_tasks(build_dir)
    with ThreadPoolExecutor(max_workers=min(len(tasks), os.cpu_count() or 1, 4)) as pool:
        return dict(zip(tasks, pool.map(stage, tasks), strict=True))


__all__ = [
    "ARCHIVE_SUFFIX",
    "KERAS_SUFFIX",
    "MANIFEST_SUFFIX",
    "ONNX_SUFFIX",
    "CONVERTED_ROLES",
    "OPTIONAL_ROLES",
    "SUFFIXES",
    "TFLITE_SUFFIX",
    "TRAIN",
    "ArtifactFiles",
    "artifact_files",
    "core_roles",
    "is_present",
    "make_manifest",
    "is_sha256",
    "primary_record",
    "read_staged",
    "release_tasks",
    "stage_release",
    "staged_files",
]
