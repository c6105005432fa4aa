"""publish / verify on any hub: the same steps whether the hub is a folder or the Hugging Face Hub."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..hashing import sha256_file
from ..publish.build import Reporter, build_artifacts
from ..publish.release import stage_release
from ..publish.verify import verify_artifact
from .hub import Handle, Hub, NotPublishedError, VerifyReport, VersionExistsError, VersionInfo


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
    hub.check_can_publish()
    if version is not None and version in {v.handle.version for v in hub.versions(spec.hub_name)}:
        raise VersionExistsError.taken(f"{hub.namespace}/{spec.hub_name}", version)
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


def _release_files(path: Path) -> tuple[Path, Path, Path]:
    """(folder, archive, manifest) for a published folder ``.../<task>/<N>`` or a release ``.../<task>``."""
    path = path.resolve()
    return path, path.with_name(f"{path.name}.tar.gz"), path.with_name(f"{path.name}.manifest.json")


def verify(hub: Hub, target: str) -> VerifyReport:
    """Recompute every checksum of a published artifact (a handle, or a path to its folder), then
    load it and check its signature and output shape."""
    recorded: dict[str, str] = {}
    try:
        handle = Handle.parse(target)
    except ValueError:
        if not Path(target).exists():
            raise NotPublishedError(f"{target} is neither a published handle nor an existing path") from None
        folder, archive, manifest = _release_files(Path(target))
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
    checked = len(list(folder.rglob("*"))) + 2 if folder.is_dir() else 0
    return VerifyReport(target, not problems, checked, problems, signature)
