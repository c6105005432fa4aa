"""The embedded hub: a folder with immutable versions, an index, and a lock.

Layout::

    <hub>/index.json                                  what is published (replaced atomically)
    <hub>/<namespace>/<variant>/<task>/<N>/           the SavedModel (hub.KerasLayer(path) loads it)
    <hub>/<namespace>/<variant>/<task>/<N>.tar.gz     its TF Hub archive
    <hub>/<namespace>/<variant>/<task>/<N>.manifest.json

A version exists when the index lists it; nothing else is ever read as published. Publishing
stages everything inside the hub (same filesystem), then, holding an exclusive ``flock`` on
``<hub>/.lock``, renames the files into place and replaces the index. ``flock`` dies with its
process, so a publish killed at any moment leaves no stale lock; what it had renamed but not yet
indexed is invisible and is swept by the next publish.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from ..hashing import sha256_file
from ..publish.release import archive_path, manifest_path
from .hub import (
    DEFAULT_NAMESPACE,
    TASKS,
    Handle,
    Hub,
    HubError,
    NotPublishedError,
    VersionExistsError,
    VersionInfo,
)

INDEX_FORMAT = 1
HUB_ENV = "REPVGG_REGISTRY_HUB"


def default_hub_path() -> Path:
    """``$REPVGG_REGISTRY_HUB``, else ``$XDG_DATA_HOME/repvgg-registry/hub`` (``~/.local/share``)."""
    if os.environ.get(HUB_ENV):
        return Path(os.environ[HUB_ENV]).expanduser()
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "repvgg-registry" / "hub"


#: Seconds to sleep after each rename of a commit. Only for crash tests, which SIGKILL a publish
#: half-way through its commit to prove that a partial version stays invisible.
COMMIT_PAUSE_ENV = "REPVGG_REGISTRY_COMMIT_PAUSE"


def _commit_pause() -> None:
    pause = float(os.environ.get(COMMIT_PAUSE_ENV) or 0)
    if pause > 0:
        time.sleep(pause)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalHub(Hub):
    """A hub in a local folder; ``serve`` makes it a TF Hub-compatible web host."""

    def __init__(self, root: str | os.PathLike | None = None, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.root = Path(root).expanduser() if root is not None else default_hub_path()
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"LocalHub({str(self.root)!r}, namespace={self.namespace!r})"

    # ----- paths -------------------------------------------------------------------------
    @property
    def index_file(self) -> Path:
        return self.root / "index.json"

    def task_dir(self, variant: str, task: str, namespace: str | None = None) -> Path:
        return self.root / (namespace or self.namespace) / variant.lower() / task

    def paths(self, handle: Handle) -> tuple[Path, Path, Path]:
        """(SavedModel folder, archive, manifest) of a handle."""
        base = self.task_dir(handle.variant, handle.task, handle.namespace)
        n = handle.version
        return base / str(n), base / f"{n}.tar.gz", base / f"{n}.manifest.json"

    # ----- reading -----------------------------------------------------------------------
    def read_index(self) -> list[dict]:
        try:
            data = json.loads(self.index_file.read_text())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise HubError(f"{self.index_file} is not valid JSON ({exc}); restore it from a backup") from None
        return list(data.get("entries", []))

    def entry(self, handle: Handle) -> dict:
        for item in self.read_index():
            if item["handle"] == str(handle):
                return item
        raise NotPublishedError(f"{handle} is not published in {self.root}; see 'repvgg-registry versions'")

    def versions(self, variant: str) -> list[VersionInfo]:
        key = variant.lower()
        rows = [e for e in self.read_index() if e["variant"] == key and e["namespace"] == self.namespace]
        return [self._info(e) for e in sorted(rows, key=lambda e: (e["version"], e["task"]))]

    def all_versions(self) -> list[VersionInfo]:
        return [self._info(e) for e in self.read_index()]

    def published_versions(self) -> dict[str, list[int]]:
        out: dict[str, set[int]] = {}
        for item in self.read_index():
            if item["namespace"] == self.namespace:
                out.setdefault(item["variant"], set()).add(item["version"])
        return {k: sorted(v) for k, v in out.items()}

    def _info(self, item: dict) -> VersionInfo:
        handle = Handle.parse(item["handle"])
        return VersionInfo(handle, item["created"], item["weights_source"], item["sha256"], str(self.paths(handle)[0]))

    def artifact_files(self, handle: Handle) -> tuple[Path, Path, Path]:
        self.entry(handle)
        return self.paths(handle)

    def recorded_checksums(self, handle: Handle) -> dict[str, str]:
        entry = self.entry(handle)
        recorded = {"archive": entry["sha256"]}
        if "manifest_sha256" in entry:
            recorded["manifest"] = entry["manifest_sha256"]
        return recorded

    # ----- writing -----------------------------------------------------------------------
    def check_can_publish(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise HubError(
                f"cannot write to the hub folder {self.root} ({exc.strerror}); pass --hub PATH to a writable folder"
            ) from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive, process-lifetime lock: released by the kernel if the holder dies."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def staging_dir(self) -> Path:
        """A private folder inside the hub for one publish (same filesystem, so renames are atomic)."""
        base = self.root / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{uuid.uuid4().hex[:8]}-", dir=base))

    def _sweep(self) -> None:
        """Under the lock: drop staging folders of dead publishers and files no index entry owns."""
        staging = self.root / ".staging"
        if staging.is_dir():
            for item in staging.iterdir():
                pid = item.name.split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    shutil.rmtree(item, ignore_errors=True)
        listed = {e["handle"] for e in self.read_index()}
        ns_root = self.root / self.namespace
        if not ns_root.is_dir():
            return
        for task_dir in ns_root.glob("*/*"):
            if task_dir.name not in TASKS or not task_dir.is_dir():
                continue
            for item in task_dir.iterdir():
                number = item.name.split(".", 1)[0]
                handle = f"{self.namespace}/{task_dir.parent.name}/{task_dir.name}/{number}"
                if number.isdigit() and handle not in listed:
                    if item.is_dir() and not item.is_symlink():
                        shutil.rmtree(item, ignore_errors=True)
                    else:
                        item.unlink(missing_ok=True)

    def _write_index(self, entries: list[dict]) -> None:
        entries = sorted(entries, key=lambda e: (e["namespace"], e["variant"], e["task"], e["version"]))
        data = {"format": INDEX_FORMAT, "entries": entries}
        fd, tmp = tempfile.mkstemp(prefix=".index-", dir=self.root)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.index_file)

    def publish_staged(self, variant: str, staged: Path, *, version: int | None = None) -> list[VersionInfo]:
        key = variant.lower()
        manifests = {task: json.loads(manifest_path(staged, task).read_text()) for task in TASKS}
        with self.lock():
            self._sweep()
            taken = {v.handle.version for v in self.versions(key)}
            if version is None:
                version = max(taken, default=0) + 1
            elif version in taken:
                raise VersionExistsError.taken(f"{self.namespace}/{key}", version)
            created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
            new_entries = []
            for task in TASKS:
                handle = Handle(self.namespace, key, task, version)
                folder, archive, manifest = self.paths(handle)
                folder.parent.mkdir(parents=True, exist_ok=True)
                for source, target in (
                    (staged / task, folder),
                    (archive_path(staged, task), archive),
                    (manifest_path(staged, task), manifest),
                ):
                    os.rename(source, target)
                    _commit_pause()
                new_entries.append(
                    {
                        "handle": str(handle),
                        "namespace": self.namespace,
                        "variant": key,
                        "task": task,
                        "version": version,
                        "created": created,
                        "weights_source": manifests[task]["weights"]["source"],
                        "sha256": manifests[task]["archive"]["sha256"],
                        "archive_size": manifests[task]["archive"]["size"],
                        "manifest_sha256": sha256_file(manifest),
                    }
                )
            self._write_index(self.read_index() + new_entries)
        shutil.rmtree(staged, ignore_errors=True)
        return [self._info(e) for e in new_entries]
