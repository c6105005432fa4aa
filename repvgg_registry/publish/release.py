"""A release: both artifacts of one build, each with its TF Hub archive and its manifest.

Layout of a staged release folder (what hubs publish as one version)::

    feature_vector/            the SavedModel, metadata.json, README.md
    feature_vector.tar.gz      the same files at the archive root
    feature_vector.manifest.json
    classification/ ... (the same three)

The manifest lists every file with its size and sha256, and the archive's sha256 and size.
"""

from __future__ import annotations

import json
from pathlib import Path

from .archive import file_table, write_archive
from .tasks import TASKS

MANIFEST_FORMAT = 1


ARCHIVE_SUFFIX = ".tar.gz"
MANIFEST_SUFFIX = ".manifest.json"


def release_files(folder: Path) -> tuple[Path, Path, Path]:
    """(folder, archive, manifest) of one artifact: the one owner of the naming rule that a
    folder ``X`` has its archive ``X.tar.gz`` and its manifest ``X.manifest.json`` beside it, for a
    staged release (``classification``) and a published version (``classification/3``) alike."""
    return folder, folder.with_name(folder.name + ARCHIVE_SUFFIX), folder.with_name(folder.name + MANIFEST_SUFFIX)


def archive_path(release: Path, task: str) -> Path:
    return release_files(release / task)[1]


def manifest_path(release: Path, task: str) -> Path:
    return release_files(release / task)[2]


def make_manifest(folder: Path, archive: Path, archive_sha256: str) -> dict:
    meta = json.loads((folder / "metadata.json").read_text())
    return {
        "format": MANIFEST_FORMAT,
        "variant": meta["variant"],
        "task": meta["task"],
        "created": meta["created"],
        "weights": meta["weights"],
        "archive": {"name": archive.name, "size": archive.stat().st_size, "sha256": archive_sha256},
        "files": file_table(folder),
    }


def stage_release(build_dir: Path) -> dict[str, dict]:
    """Add archives and manifests next to the artifacts of ``build_dir``; returns the manifests."""
    manifests = {}
    for task in TASKS:
        folder = build_dir / task
        archive = archive_path(build_dir, task)
        sha = write_archive(folder, archive)
        manifests[task] = make_manifest(folder, archive, sha)
        manifest_path(build_dir, task).write_text(json.dumps(manifests[task], indent=2) + "\n")
    return manifests
