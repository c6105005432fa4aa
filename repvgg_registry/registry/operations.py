"""publish / verify on any hub: the same steps whether the hub is a folder or the Hugging Face Hub.

:class:`~repvgg_registry.registry.hub.Hub` exposes these as its verbs (``hub.publish``,
``hub.verify``); they live here so that ``hub.py`` stays free of TensorFlow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import NotPublishedError
from ..hashing import sha256_file
from ..publish.build import Reporter, build_artifacts, is_build_folder
from ..publish.release import release_files, stage_release
from ..publish.tasks import TASKS
from ..publish.verify import verify_artifact, verify_savedmodel
from .hub import Handle, Hub, VerifyReport, VersionInfo


def publish_variant(
    hub: Hub,
    variant: str,
    *,
    weights: str = "timm",
    version: int | None = None,
    seed: int = 0,
    reporter: Reporter | None = None,
) -> list[VersionInfo]:
    """Build, check, archive and publish both artifacts of ``variant`` as one version."""
    from ..variants.table import get_variant

    spec = get_variant(variant)
    reporter = reporter or Reporter()
    hub.preflight(spec.hub_name, version=version)
    staging = hub.staging_dir()
    try:
        build_dir = staging / "release"
        build_artifacts(spec, build_dir, weights=weights, seed=seed, reporter=reporter)
        with reporter.phase("archive"):
            stage_release(build_dir)
        with reporter.phase("publish"):
            return hub.publish_staged(spec.hub_name, build_dir, version=version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _verify_build_folder(target: str, path: Path) -> VerifyReport:
    """A ``build --out`` folder has no manifests (they are made at publish): load and run each
    SavedModel and check it against its metadata.json."""
    problems: list[str] = []
    signatures = {}
    for task in TASKS:
        folder = path / task
        if folder.is_dir():
            found, signature = verify_savedmodel(folder, task)
            problems += [f"{task}/{p}" for p in found]
            signatures[task] = signature
    checked = sum(1 for _ in path.rglob("*") if _.is_file())
    signature = signatures.get("classification") or next(iter(signatures.values()), {})
    return VerifyReport(target, not problems, checked, problems, signature, kind="build folder")


def verify(hub: Hub, target: str) -> VerifyReport:
    """Recompute every checksum of a published artifact (a handle, or a path to its folder), then
    load it and check its signature and output shape. A build folder gets its SavedModels loaded
    and run (it has no checksums to compare)."""
    recorded: dict[str, str] = {}
    try:
        handle = Handle.parse(target)
    except ValueError:
        path = Path(target).expanduser()
        if is_build_folder(path):
            return _verify_build_folder(target, path)
        path = path.resolve()
        folder, archive, manifest = release_files(path) if path.name else (path, path, path)
        if not (path.name and folder.is_dir() and manifest.is_file()):
            raise NotPublishedError(
                f"{target} is not a handle (<namespace>/<model>/<task>/<N>), a published version folder "
                f"(<task>/<N> with <N>.manifest.json beside it) or a build --out folder; verify checks those"
            ) from None
    else:
        folder, archive, manifest = hub.artifact_files(handle)
        recorded = hub.recorded_checksums(handle)
    problems = [
        f"{path.name}: sha256 differs from the hub's record"
        for role, path in (("manifest", manifest), ("archive", archive))
        if role in recorded and path.is_file() and sha256_file(path) != recorded[role]
    ]
    found, signature = verify_artifact(folder, archive, manifest)
    problems += [p for p in found if p not in problems]
    checked = sum(1 for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) + 2 if folder.is_dir() else 0
    return VerifyReport(target, not problems, checked, problems, signature)
