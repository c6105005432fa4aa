"""publish / verify on any hub: the same steps whether the hub is a folder or the Hugging Face Hub.

:class:`~repvgg_registry.registry.hub.Hub` exposes these as its verbs (``hub.publish``,
``hub.verify``); they live here so that ``hub.py`` stays free of TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Collection
from pathlib import Path

from ..errors import NotPublishedError
from ..hashing import sha256_file
from ..publish.build import Reporter, build_artifacts, is_build_folder
from ..publish.release import (
    CONVERTED_ROLES,
    MANIFEST_SUFFIX,
    OPTIONAL_ROLES,
    SUFFIXES,
    ArtifactFiles,
    artifact_files,
    stage_release,
    staged_files,
)
from ..publish.tasks import KERAS_TASKS, RELEASE_TASKS, SERVING_TASKS, TASKS
from ..publish.verify import verify_artifact, verify_converted, verify_keras, verify_savedmodel
from .hub import Handle, Hub, VerifyReport, VersionInfo, default_model_name, validate_name


def publish_variant(
    hub: Hub,
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
    reporter: Reporter | None = None,
) -> list[VersionInfo]:
    """Build, check, archive and publish every artifact of ``variant`` as one version of the
    model ``name`` (default: the variant's own name, e.g. ``a0``, or ``a0-os16`` at output stride 16)."""
    from ..variants.table import get_variant

    spec = get_variant(variant)
    default = default_model_name(spec.name, output_stride)
    model = validate_name(name.lower() if isinstance(name, str) else default, "model name")
    reporter = reporter or Reporter()
    hub.preflight(model, version=version, base_variant=spec.name)
    if hub.pending_version(model) is not None:  # finish the version a publish cut short, without building
        with reporter.phase("publish"):
            return hub.finish_pending(model)
    staging = hub.staging_dir()
    try:
        build_dir = staging / "release"
        build_artifacts(
            spec,
            build_dir,
            weights=weights,
            labels=labels,
            name=model,
            output_stride=output_stride,
            formats=formats,
            int8_calibration=int8_calibration,
            seed=seed,
            reporter=reporter,
        )
        with reporter.phase("archive"):
            stage_release(build_dir)
        with reporter.phase("publish"):
            return hub.publish_staged(model, build_dir, version=version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _verify_build_folder(target: str, path: Path) -> VerifyReport:
    """A ``build --out`` folder has no manifests (they are made at publish): load and run each
    SavedModel and each ``.keras`` and check them against the metadata.json of their task."""
    problems: list[str] = []
    signatures = {}
    outputs = {}
    for task in TASKS:
        folder = path / task
        if folder.is_dir():
            found, signature = verify_savedmodel(folder, task)
            problems += [f"{task}/{p}" for p in found]
            signatures[task] = signature
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                outputs[task] = json.loads((folder / "metadata.json").read_text())["output"]
    for task in SERVING_TASKS:
        if (path / task).is_dir():
            problems += [f"{task}/{p}" for p in verify_savedmodel(path / task, task)[0]]
    for task in KERAS_TASKS:
        files = staged_files(path, task)
        output = outputs.get(task, outputs.get("classification"))
        if output is None:
            continue
        if files.keras.exists():
            problems += verify_keras(files.keras, output)[0]
        for role in CONVERTED_ROLES:
            converted = files.roles().get(role)
            if converted is not None and converted.exists():
                problems += verify_converted(converted, role, output)
    checked = sum(1 for _ in path.rglob("*") if _.is_file())
    signature = signatures.get("classification") or next(iter(signatures.values()), {})
    return VerifyReport(target, not problems, checked, problems, signature, kind="build folder")


def _files_at(target: str) -> ArtifactFiles:
    """The artifact a path names: a published version folder ``<task>/<N>`` or a file beside it
    (``<task>/<N>.keras``, ``.tflite``, ``.onnx``), with ``<N>.manifest.json`` beside it (whose
    ``task`` says which)."""
    path = Path(target).expanduser().resolve()
    base = path
    for role in OPTIONAL_ROLES:
        base = base.with_name(base.name.removesuffix(SUFFIXES[role])) if base.name else base
    manifest = base.with_name(base.name + MANIFEST_SUFFIX) if base.name else base
    task = None
    if manifest.is_file() and (path.is_dir() or path.is_file()):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            task = json.loads(manifest.read_text()).get("task")
    if task not in RELEASE_TASKS:
        raise NotPublishedError(
            f"{target} is not a handle (<namespace>/<model>/<task>/<N>), a published version "
            f"(<task>/<N> or <task>/<N>.keras with <N>.manifest.json beside it) or a build --out folder; "
            "verify checks those"
        )
    return artifact_files(base, task)


def verify(hub: Hub, target: str) -> VerifyReport:
    """Recompute every checksum of a published artifact (a handle, or a path to its folder or
    ``.keras``), then load it and check its signature and output shape. A build folder gets its
    SavedModels and ``.keras`` files loaded and run (it has no checksums to compare)."""
    recorded: dict[str, str] = {}
    try:
        handle = Handle.parse(target)
    except ValueError:
        path = Path(target).expanduser()
        if is_build_folder(path):
            return _verify_build_folder(target, path)
        files = _files_at(target)
    else:
        files = hub.artifact_files(handle)
        recorded = hub.recorded_checksums(handle)
    problems = [
        f"{path.name}: sha256 differs from the hub's record"
        for role, path in files.roles().items()
        if role in recorded and path.is_file() and sha256_file(path) != recorded[role]
    ]
    found, signature = verify_artifact(files)
    problems += [p for p in found if p not in problems]
    checked = sum(1 for p in files.folder.rglob("*") if p.is_file() and not p.is_symlink()) if files.folder else 0
    checked += sum(1 for role, p in files.roles().items() if role != "folder" and p.is_file())
    return VerifyReport(target, not problems, checked, problems, signature)
