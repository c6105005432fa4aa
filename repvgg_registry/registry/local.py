"""The embedded hub: a folder with immutable versions, an index, and a lock.

Layout::

    <hub>/index.json                                  what is published (replaced atomically)
    <hub>/<namespace>/<model>/<task>/<N>/             the SavedModel (hub.KerasLayer(path) loads it)
    <hub>/<namespace>/<model>/<task>/<N>.tar.gz       its TF Hub archive
    <hub>/<namespace>/<model>/<task>/<N>.keras        the same network for Keras 3
    <hub>/<namespace>/<model>/<task>/<N>.tflite       LiteRT and ONNX (when the build made them)
    <hub>/<namespace>/<model>/<task>/<N>.onnx
    <hub>/<namespace>/<model>/<task>/<N>.manifest.json
    <hub>/<namespace>/<model>/train/<N>.keras         the train form (with its manifest beside it)
    <hub>/<namespace>/<model>/<task>-serving/<N>/     the inference-only SavedModel (TF Serving's
                                                      --model_base_path is <task>-serving)
    <hub>/.lock                                       the hub lock; its holder writes who it is
    <hub>/.staging/<id>/                              one publisher's private folder, with its own
                                                      ``.lock`` that the publisher holds while alive

A version exists when the index lists it; nothing else is ever read as published. Publishing
builds in a staging folder inside the hub (same filesystem), then, holding an exclusive ``flock``
on ``<hub>/.lock``, writes a journal of what it is about to rename, renames the files into place,
replaces the index and drops the journal.

Crash safety, and what is deleted (nothing that may be published):

* ``flock`` dies with its process: a publish killed at any moment leaves no stale lock.
* A staging folder is dead only when its own ``.lock`` can be taken (its publisher is gone, in
  whatever PID namespace or container it ran); only dead staging folders are removed.
* A dead staging folder with a journal is a commit that was cut short. If the index (present and
  readable) lists none of its handles, the files it renamed into place (identified by inode) are
  moved back into it and removed with it: they were never published and their number is free
  again. If the index cannot tell (missing, unreadable), nothing is touched.
* A version folder, archive, ``.keras`` or manifest that no index entry owns is never deleted, and its number
  is never reused: the next version is one above everything indexed *or* on disk. If complete
  versions are on disk that the index does not list (index deleted, truncated, or an older backup
  restored), publishing stops and names ``repvgg-registry repair``, which rebuilds the index from
  the manifests (:meth:`LocalHub.repair`).

Waiting for the hub lock is announced once (``on_lock_wait``, else a log warning) with who holds
it, and gives up after ``$REPVGG_REGISTRY_LOCK_TIMEOUT`` seconds (default 600) with
:class:`~repvgg_registry.errors.HubLockedError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ..errors import (
    HubError,
    HubLockedError,
    HubStateError,
    InvalidHandleError,
    InvalidNameError,
    NotPublishedError,
    RegistryError,
    VersionExistsError,
    one_line,
)
from ..hashing import sha256_file
from ..publish.release import (
    OPTIONAL_ROLES,
    SUFFIXES,
    ArtifactFiles,
    artifact_files,
    core_roles,
    is_present,
    is_sha256,
    primary_record,
    read_staged,
    staged_files,
)
from ..publish.tasks import RELEASE_TASKS
from ..settings import seconds_from_env
from .hub import (
    DEFAULT_NAMESPACE,
    MAX_VERSION,
    Handle,
    Hub,
    VersionInfo,
    is_valid_name,
    validate_name,
    validate_version,
    variant_named,
)

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
HUB_ENV = "REPVGG_REGISTRY_HUB"

#: Seconds a publish waits for another publisher's hub lock before it gives up.
LOCK_TIMEOUT_ENV = "REPVGG_REGISTRY_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 600.0

STAGING = ".staging"
STAGING_LOCK = ".lock"
JOURNAL = "commit.json"
#: A staging folder without a lock file is from a version of this package before per-staging
#: locks (or is being created this instant): it is removed only once it is this old.
LEGACY_STAGING_AGE = 24 * 3600

#: Seconds to sleep after each rename of a commit. Only for crash tests, which SIGKILL a publish
#: half-way through its commit to prove that a partial version stays invisible.
COMMIT_PAUSE_ENV = "REPVGG_REGISTRY_COMMIT_PAUSE"

_FIX_FROM_DISK = "run 'repvgg-registry repair --hub {root}' to rebuild it from the manifests on disk"


def default_hub_path() -> Path:
    """``$REPVGG_REGISTRY_HUB``, else ``$XDG_DATA_HOME/repvgg-registry/hub`` (``~/.local/share``)."""
    if os.environ.get(HUB_ENV):
        return Path(os.environ[HUB_ENV]).expanduser()
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "repvgg-registry" / "hub"


def lock_timeout_from_env() -> float:
    """``$REPVGG_REGISTRY_LOCK_TIMEOUT`` in seconds (``inf`` waits forever), default 600."""
    return seconds_from_env(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT, allow_inf=True)


def _commit_pause() -> None:
    pause = float(os.environ.get(COMMIT_PAUSE_ENV) or 0)
    if pause > 0:
        time.sleep(pause)


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _short(value: object, limit: int = 60) -> str:
    text = one_line(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def entry_problem(item: object) -> str | None:
    """Why ``item`` is not a valid index entry, or None. The one check for what is read and written."""
    if not isinstance(item, dict):
        return f"is {_short(item)}, not an object"
    text = item.get("handle")
    if not isinstance(text, str):
        return f"has no handle (handle {_short(text)})"
    try:
        handle = Handle.parse(text)
    except InvalidHandleError as exc:
        return f"has the invalid handle {_short(text)} ({exc.rule})"
    for key, want in (("namespace", handle.namespace), ("variant", handle.variant), ("task", handle.task)):
        if item.get(key) != want:
            return f"{text}: {key} {_short(item.get(key))} does not match the handle"
    version = item.get("version")
    if type(version) is not int or version != handle.version:
        return f"{text}: version {_short(version)} is not the integer {handle.version} of the handle"
    if not isinstance(item.get("created"), str) or not item["created"]:
        return f"{text}: no 'created' time"
    if not isinstance(item.get("weights_source"), str):
        return f"{text}: no 'weights_source'"
    if not isinstance(item.get("base_variant", ""), str):
        return f"{text}: 'base_variant' {_short(item['base_variant'])} is not a variant name"
    if not is_sha256(item.get("sha256")):
        return f"{text}: 'sha256' {_short(item.get('sha256'))} is not a sha256"
    for key in ("manifest_sha256", *(f"{role}_sha256" for role in OPTIONAL_ROLES)):
        if key in item and not is_sha256(item[key]):
            return f"{text}: '{key}' {_short(item[key])} is not a sha256"
    for key in ("archive_size", *(f"{role}_size" for role in OPTIONAL_ROLES)):
        size = item.get(key, 0)
        if type(size) is not int or size < 0:
            return f"{text}: '{key}' {_short(size)} is not a size"
    return None


def _entry(handle: Handle, created: str, manifest: dict, manifest_sha256: str) -> dict:
    """The index entry of one artifact: ``sha256`` and ``archive_size`` are of the file a client
    fetches for the handle (:func:`primary_record`: the TF Hub archive, or ``train``'s ``.keras``)."""
    primary = primary_record(manifest)
    entry = {
        "handle": str(handle),
        "namespace": handle.namespace,
        "variant": handle.variant,
        "task": handle.task,
        "version": handle.version,
        "created": created,
        "weights_source": manifest["weights"]["source"],
        "sha256": primary["sha256"],
        "archive_size": primary["size"],
        "manifest_sha256": manifest_sha256,
        "base_variant": manifest["variant"],
    }
    for role in OPTIONAL_ROLES:  # the .keras, .tflite and .onnx files the version has
        if role in manifest:
            entry.update({f"{role}_sha256": manifest[role]["sha256"], f"{role}_size": manifest[role]["size"]})
    return entry


#: ``{".tar.gz": "archive", ".keras": "keras", ...}``: what a file beside a version folder is.
_ROLE_OF_SUFFIX = {suffix: role for role, suffix in SUFFIXES.items()}


def entry_roles(entry: dict) -> dict[str, bool]:
    """The optional files (:data:`OPTIONAL_ROLES`) an index entry records, in the form
    :meth:`ArtifactFiles.required` takes a manifest in."""
    return {role: True for role in OPTIONAL_ROLES if f"{role}_sha256" in entry}


def _os_reason(exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    return reason[:1].lower() + reason[1:]


def _os_fix(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space and rerun"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the hub folder writable (or pass --hub PATH to a writable folder) and rerun"
    return "fix the cause and rerun"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``. The file is
    created with mode 0o666 so the umask applies as to any other file; on any error the temporary
    file is removed and the error raised."""
    tmp = path.with_name(f".{path.name.split('.')[0]}-{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _disk_key(target: str) -> tuple | None:
    """``("repvgg", "a0", "feature_vector", 3)`` for ``repvgg/a0/feature_vector/3.tar.gz``."""
    parts = target.split("/")
    number = parts[-1].split(".")[0]
    return (*parts[:3], int(number)) if len(parts) == 4 and number.isdigit() else None


def _holder_record() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()})


def _describe_holder(text: str) -> str:
    try:
        data = json.loads(text)
        return f"pid {int(data['pid'])} on {one_line(data['host'])} since {one_line(data['since'])}"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not written who it is)"


#: The staging folders this process made, each with the descriptor that holds its ``.lock``: per
#: process, not per hub object, so that a staging folder stays locked for as long as the process
#: lives (or until it is removed), whichever LocalHub made it.
_STAGING_LOCKS: dict[Path, int] = {}


@dataclass
class RepairReport:
    """What :meth:`LocalHub.repair` found and did (or, with ``dry_run``, would do)."""

    root: str
    dry_run: bool
    #: "ok", "missing", or "unreadable: <why>"
    index: str
    #: index entries kept as they were
    kept: list[str] = field(default_factory=list)
    #: versions found on disk (complete, with a manifest) that the index did not list: now listed
    added: list[str] = field(default_factory=list)
    #: index entries that were not valid (a bad handle, a missing field): left out, with why
    dropped: list[str] = field(default_factory=list)
    #: listed versions whose files are gone: kept in the index so that verify names them
    missing: list[str] = field(default_factory=list)
    #: version files on disk that are not a complete version: left in place, their numbers stay taken
    incomplete: list[str] = field(default_factory=list)
    #: dead staging folders removed (and commits cut short that were rolled back)
    swept: list[str] = field(default_factory=list)
    #: where the previous index was saved, when one was replaced
    backup: str | None = None
    written: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.dropped or self.index.startswith("unreadable"))

    def to_dict(self) -> dict:
        return {**asdict(self), "changed": self.changed}

    def describe(self) -> str:
        """A summary line, then one line per thing that was (or would be) changed or needs a look."""
        if not self.changed:
            head = f"{self.root}: index.json is consistent with the disk ({len(self.kept)} entries); nothing to repair"
        else:
            verb = "would rebuild" if self.dry_run else "rebuilt"
            head = (
                f"{self.root}: {verb} index.json: {len(self.kept) + len(self.added)} entries "
                f"({len(self.added)} added from manifests, {len(self.dropped)} invalid dropped)"
            )
            if self.backup:
                head += f"; the previous index is saved as {self.backup}"
        lines = [head]
        lines += [f"added {h}" for h in self.added]
        lines += [f"dropped entry {p}" for p in self.dropped]
        lines += [f"listed but files missing (verify names them): {h}" for h in self.missing]
        lines += [f"not a complete version, left in place: {p}" for p in self.incomplete]
        lines += [f"swept {s}" for s in self.swept]
        return "\n".join(one_line(line) for line in lines)


class LocalHub(Hub):
    """A hub in a local folder; ``serve`` makes it a TF Hub-compatible web host.

    ``lock_timeout`` (seconds; default ``$REPVGG_REGISTRY_LOCK_TIMEOUT`` or 600) bounds the wait
    for another publisher's hub lock; ``on_lock_wait(message)`` is called once when a wait begins
    (default: a warning on this module's logger). Both are attributes and may be set later.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        lock_timeout: float | None = None,
        on_lock_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.namespace = validate_name(namespace, "namespace")
        self.root = Path(root).expanduser() if root is not None else default_hub_path()
        self.lock_timeout = lock_timeout
        self.on_lock_wait = on_lock_wait
        #: problems with index entries that the last read skipped (one line each)
        self.index_warnings: list[str] = []
        self._warned: set[str] = set()
        self._rolled_back: list[str] = []

    def __repr__(self) -> str:
        return f"LocalHub({str(self.root)!r}, namespace={self.namespace!r})"

    @property
    def location(self) -> str:
        return str(self.root)

    # ----- paths -------------------------------------------------------------------------
    @property
    def index_file(self) -> Path:
        return self.root / "index.json"

    def task_dir(self, variant: str, task: str, namespace: str | None = None) -> Path:
        """``<hub>/<namespace>/<model>/<task>``; every part is checked before a path is made of it."""
        ns = validate_name(self.namespace if namespace is None else namespace, "namespace")
        model = validate_name(variant.lower() if isinstance(variant, str) else variant, "model name")
        if task not in RELEASE_TASKS:
            raise InvalidNameError("task", task, f"use one of {', '.join(RELEASE_TASKS)}")
        return self.root / ns / model / task

    def paths(self, handle: Handle) -> ArtifactFiles:
        """The files of a handle (SavedModel folder, archive, ``.keras``, manifest)."""
        n = handle.version
        if type(n) is not int or not 1 <= n <= MAX_VERSION:
            raise InvalidHandleError(str(handle), f"the version is an integer from 1 to {MAX_VERSION}")
        base = self.task_dir(handle.variant, handle.task, handle.namespace)
        return artifact_files(base / str(n), handle.task)

    def _fix(self) -> str:
        return _FIX_FROM_DISK.format(root=self.root)

    # ----- reading -----------------------------------------------------------------------
    def _load_index(self, *, strict: bool) -> list[dict] | None:
        """The valid entries of the index, or None when there is no index file. A file that is not
        an index raises HubStateError; invalid entries raise it too when ``strict``, else they are
        skipped and named in :attr:`index_warnings` (and logged once)."""
        path = self.index_file
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if self.root.exists() and not self.root.is_dir():
                raise self._root_not_a_folder() from None
            self.index_warnings = []
            return None
        except NotADirectoryError:
            raise self._root_not_a_folder() from None
        except IsADirectoryError:
            raise HubStateError(path, "is a folder, not the index file", f"move it away, then {self._fix()}") from None
        except UnicodeDecodeError:
            raise HubStateError(path, "is not UTF-8 text", f"{self._fix()} (or restore a backup)") from None
        except OSError as exc:
            raise HubStateError(path, f"cannot be read ({_os_reason(exc)})", "fix its permissions and rerun") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            why = "is empty" if not text.strip() else f"is not valid JSON ({getattr(exc, 'msg', type(exc).__name__)})"
            raise HubStateError(path, why, f"{self._fix()} (or restore a backup)") from None
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise HubStateError(
                path,
                f"is not a hub index (expected an object with an 'entries' list, found {_short(data, 40)})",
                self._fix(),
            )
        if data.get("format", INDEX_FORMAT) != INDEX_FORMAT:
            raise HubStateError(
                path,
                f"has format {_short(data.get('format'))} but this repvgg-registry reads format {INDEX_FORMAT}",
                "upgrade repvgg-registry",
            )
        good, problems, seen = [], [], set()
        for number, item in enumerate(data["entries"], 1):
            problem = entry_problem(item)
            if problem is None and item["handle"] in seen:
                problem = f"repeats {item['handle']}"
            if problem is None:
                good.append(item)
                seen.add(item["handle"])
            else:
                problems.append(f"entry {number} {problem}")
        if problems and strict:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise HubStateError(path, f"{problems[0]}{more}", self._fix())
        self.index_warnings = problems
        for problem in problems:
            if problem not in self._warned:
                self._warned.add(problem)
                log.warning("%s: %s, skipped; %s", path, problem, self._fix())
        return good

    def _root_not_a_folder(self) -> HubStateError:
        return HubStateError(
            self.root, "is a file, not a hub folder", "pass --hub PATH to a folder (or move the file away)"
        )

    def read_index(self) -> list[dict]:
        """The valid index entries ([] when nothing is published); invalid ones are skipped and
        named in :attr:`index_warnings`; an unreadable index raises HubStateError."""
        return self._load_index(strict=False) or []

    def entry(self, handle: Handle) -> dict:
        entries = self.read_index()
        for item in entries:
            if item["handle"] == str(handle):
                return item
        available = tuple(
            sorted(
                e["version"]
                for e in entries
                if (e["namespace"], e["variant"], e["task"]) == (handle.namespace, handle.variant, handle.task)
            )
        )
        hint = (
            f"published versions: {', '.join(map(str, available))}"
            if available
            else f"see 'repvgg-registry versions {handle.variant} --hub {self.root}'"
        )
        raise NotPublishedError(
            f"{handle} is not published in {self.root}; {hint}", handle=str(handle), available=available
        )

    def versions(self, variant: str) -> list[VersionInfo]:
        key = validate_name(variant.lower(), "model name")
        rows = [e for e in self.read_index() if e["variant"] == key and e["namespace"] == self.namespace]
        return [self._info(e) for e in sorted(rows, key=lambda e: (e["version"], e["task"]))]

    def all_versions(self) -> list[VersionInfo]:
        return [self._info(e) for e in self.read_index()]

    def published_versions(self) -> dict[str, list[int]]:
        """``{model: [versions]}`` of this namespace; {} when nothing is published; an unreadable
        index raises HubStateError (``list`` shows a warning instead of "nothing published")."""
        out: dict[str, set[int]] = {}
        for item in self.read_index():
            if item["namespace"] == self.namespace:
                out.setdefault(item["variant"], set()).add(item["version"])
        return {k: sorted(v) for k, v in out.items()}

    def published_models(self) -> dict[str, dict[str, list[int]]]:
        """``{base variant: {model name: [versions]}}`` of this namespace. An entry from before
        base variants were recorded is a variant's own name (``a0``) or is left out."""
        out: dict[str, dict[str, set[int]]] = {}
        for item in self.read_index():
            if item["namespace"] != self.namespace:
                continue
            base = item.get("base_variant") or variant_named(item["variant"])
            if base is not None:
                out.setdefault(base, {}).setdefault(item["variant"], set()).add(item["version"])
        return {base: {m: sorted(v) for m, v in models.items()} for base, models in out.items()}

    def _info(self, item: dict) -> VersionInfo:
        handle = Handle.parse(item["handle"])
        files = self.paths(handle)
        where = files.folder if files.folder is not None else files.keras
        return VersionInfo(
            handle, item["created"], item["weights_source"], item["sha256"], str(where), item.get("base_variant")
        )

    def artifact_files(self, handle: Handle) -> ArtifactFiles:
        self.entry(handle)
        return self.paths(handle)

    def recorded_checksums(self, handle: Handle) -> dict[str, str]:
        entry = self.entry(handle)
        recorded = {"archive" if self.paths(handle).archive is not None else "keras": entry["sha256"]}
        for role in entry_roles(entry):
            recorded[role] = entry[f"{role}_sha256"]
        if "manifest_sha256" in entry:
            recorded["manifest"] = entry["manifest_sha256"]
        return recorded

    # ----- what is on disk ---------------------------------------------------------------
    def _scan_disk(self) -> dict[tuple[str, str, str, int], set[str]]:
        """``{(namespace, model, task, N): {"folder", "archive", "keras", "manifest", "other"}}`` for
        every version-numbered name in the hub's task folders, indexed or not."""
        found: dict[tuple[str, str, str, int], set[str]] = {}

        def subdirs(path: Path) -> list[os.DirEntry]:
            try:
                with os.scandir(path) as it:
                    return [e for e in it if e.is_dir(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                return []

        for ns in subdirs(self.root):
            if not is_valid_name(ns.name):
                continue
            for model in subdirs(Path(ns.path)):
                if not is_valid_name(model.name):
                    continue
                for task in subdirs(Path(model.path)):
                    if task.name not in RELEASE_TASKS:
                        continue
                    try:
                        items = list(os.scandir(task.path))
                    except OSError as exc:
                        raise HubStateError(
                            task.path, f"cannot be read ({_os_reason(exc)})", "fix its permissions and rerun"
                        ) from None
                    for item in items:
                        number, dot, rest = item.name.partition(".")
                        if not number.isdigit():
                            continue
                        if not dot:
                            kind = "folder" if item.is_dir(follow_symlinks=False) else "other"
                        else:
                            kind = _ROLE_OF_SUFFIX.get(f".{rest}", "other")
                            if kind != "other" and not item.is_file(follow_symlinks=False):
                                kind = "other"
                        found.setdefault((ns.name, model.name, task.name, int(number)), set()).add(kind)
        return found

    def _disk_entry(self, key: tuple[str, str, str, int]) -> dict | str:
        """The index entry that the files of ``key`` on disk make (from its manifest), or why they
        are not a complete version."""
        ns, model, task, n = key
        try:
            handle = Handle.parse(f"{ns}/{model}/{task}/{n}")
        except InvalidHandleError as exc:
            return f"{ns}/{model}/{task}/{n}: {exc.rule}"
        files = self.paths(handle)
        manifest = files.manifest
        data = None
        if manifest.is_file():
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(manifest.read_text(encoding="utf-8"))
        lacking = [
            f"{path.name}/" if role == "folder" else path.name
            for role, path in files.required(data if isinstance(data, dict) else {}).items()
            if not is_present(role, path)
        ]
        if lacking:
            return f"{handle}: no {' or '.join(lacking)}"
        try:
            entry = _entry(handle, data["created"], data, sha256_file(manifest))
            manifest_task = data.get("task", task)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"{handle}: {manifest.name} is unreadable ({type(exc).__name__})"
        if manifest_task != task:
            return f"{handle}: {manifest.name} is for the task {_short(manifest_task)}"
        problem = entry_problem(entry)
        return f"{handle}: {manifest.name} {problem}" if problem else entry

    def _check_state(self, entries: list[dict] | None, disk: dict) -> None:
        """Refuse to publish onto an index that has lost published versions (missing, truncated,
        an older backup): they would be invisible and their numbers at risk."""
        listed = {(e["namespace"], e["variant"], e["task"], e["version"]) for e in entries or []}
        lost = [
            result["handle"]
            for key, kinds in sorted(disk.items())
            if key not in listed and core_roles(key[2]) <= kinds
            for result in [self._disk_entry(key)]
            if isinstance(result, dict)
        ]
        if not lost:
            return
        what = f"{len(lost)} published artifact{'s' if len(lost) > 1 else ''} on disk (e.g. {lost[0]})"
        if entries is None:
            raise HubStateError(self.index_file, f"is missing, but there are {what}", self._fix())
        raise HubStateError(self.index_file, f"does not list {what}: an older or edited index", self._fix())

    def taken_versions(self, model: str, namespace: str | None = None) -> set[int]:
        """Every version number of ``model`` that is indexed or has files on disk: none is reused."""
        ns = validate_name(self.namespace if namespace is None else namespace, "namespace")
        key = validate_name(model.lower(), "model name")
        indexed = {e["version"] for e in self.read_index() if (e["namespace"], e["variant"]) == (ns, key)}
        return indexed | {n for (n_ns, n_model, _task, n) in self._scan_disk() if (n_ns, n_model) == (ns, key)}

    # ----- the hub lock ------------------------------------------------------------------
    def _ensure_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise self._root_not_a_folder()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HubError(
                f"cannot create the hub folder {self.root} ({_os_reason(exc)}); pass --hub PATH to a writable folder"
            ) from None

    def _notify(self, message: str) -> None:
        if self.on_lock_wait is not None:
            self.on_lock_wait(message)
        else:
            log.warning("%s", message)

    def lock_holder(self) -> str:
        """Who holds (or last held) the hub lock, as its holder wrote it."""
        try:
            return _describe_holder((self.root / ".lock").read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return _describe_holder("")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive, process-lifetime lock on ``<hub>/.lock`` (released by the kernel if the holder
        dies). The holder writes its pid, host and start time into the file. A wait is announced
        once and gives up after :attr:`lock_timeout` seconds with HubLockedError."""
        self._ensure_root()
        path = self.root / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except IsADirectoryError:
            raise HubStateError(path, "is a folder, not the hub's lock file", "remove it and rerun") from None
        except OSError as exc:
            raise HubError(f"cannot open the hub lock {path} ({_os_reason(exc)}); {_os_fix(exc)}") from None
        try:
            self._acquire(fd, path)
            try:
                with contextlib.suppress(OSError):  # who we are is a courtesy: a full disk must not stop the lock
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, _holder_record().encode(), 0)
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _acquire(self, fd: int, path: Path) -> None:
        timeout = self.lock_timeout if self.lock_timeout is not None else lock_timeout_from_env()
        start = time.monotonic()
        delay = 0.02
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            except OSError as exc:  # e.g. ENOLCK on a network filesystem without locks
                raise HubError(f"cannot lock {path} ({_os_reason(exc)}); put the hub on a local filesystem") from None
            waited = time.monotonic() - start
            holder = self.lock_holder()
            if waited >= timeout:
                raise HubLockedError(path, holder, waited)
            if not announced:
                announced = True
                limit = "forever" if math.isinf(timeout) else f"up to {timeout:g} s ({LOCK_TIMEOUT_ENV})"
                self._notify(f"waiting for the hub lock {path}, held by {holder}; waiting {limit}")
            time.sleep(min(delay, max(timeout - waited, 0.001)))
            delay = min(delay * 2, 0.5)

    # ----- staging -----------------------------------------------------------------------
    def staging_dir(self) -> Path:
        """A private folder inside the hub for one publish (same filesystem, so renames are
        atomic), holding a ``.lock`` that this process keeps locked while it lives."""
        self._reap_staging_locks()
        self._ensure_root()
        base = self.root / STAGING
        try:
            base.mkdir(exist_ok=True)
            path = Path(tempfile.mkdtemp(prefix=f"{uuid.uuid4().hex[:12]}-", dir=base))
            # Locked before it gets its name: a sweep never sees an unlocked .lock of a live publisher.
            tmp = path / f"{STAGING_LOCK}.new"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise HubError(f"cannot create a staging folder in {base} ({_os_reason(exc)}); {_os_fix(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with contextlib.suppress(OSError):
                os.pwrite(fd, _holder_record().encode(), 0)
            os.rename(tmp, path / STAGING_LOCK)
        except OSError as exc:
            os.close(fd)
            shutil.rmtree(path, ignore_errors=True)
            raise HubError(f"cannot lock a staging folder in {base} ({_os_reason(exc)}); {_os_fix(exc)}") from None
        _STAGING_LOCKS[path] = fd
        return path

    @staticmethod
    def _reap_staging_locks() -> None:
        """Unlock staging folders of this process that are gone (a caller removed them)."""
        for path in list(_STAGING_LOCKS):
            if not path.exists():
                fd = _STAGING_LOCKS.pop(path, None)  # atomic: one thread closes it
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _release_staging(self, path: Path) -> None:
        """Remove one of our staging folders and unlock it; one whose journal could not be rolled
        back is only unlocked, so that the next publish's sweep rolls it back."""
        if not (path / JOURNAL).exists():
            shutil.rmtree(path, ignore_errors=True)
        fd = _STAGING_LOCKS.pop(path, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _own_area(self, staged: Path) -> Path | None:
        staged = staged.resolve()
        for area in list(_STAGING_LOCKS):
            if staged.is_relative_to(area.resolve()):
                return area
        return None

    def _sweep(self, listed: set[str] | None, *, dry_run: bool = False) -> list[str]:
        """Under the hub lock: remove staging folders whose publisher is gone (its ``.lock`` can
        be taken), rolling back a commit cut short when the index (``listed``: its handles, or None
        when it cannot tell) shows it never completed; then stale temporary index files. Returns
        what it removed, one line each."""
        done: list[str] = []
        self._rolled_back = []
        base = self.root / STAGING
        try:
            areas = sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            areas = []
        for area in areas:
            if area in _STAGING_LOCKS:
                continue
            lock = area / STAGING_LOCK
            if not lock.is_file():
                with contextlib.suppress(OSError):
                    if not (area / JOURNAL).exists() and time.time() - area.stat().st_mtime > LEGACY_STAGING_AGE:
                        if not dry_run:
                            shutil.rmtree(area, ignore_errors=True)
                        done.append(f"{STAGING}/{area.name} (an old staging folder without a lock)")
                continue
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its publisher is alive
                removable, rolled_back = self._roll_back(area, listed, dry_run=dry_run)
                if not removable:
                    continue
                if not dry_run:
                    shutil.rmtree(area, ignore_errors=True)
                self._rolled_back += rolled_back
                note = f" (rolled back {', '.join(rolled_back)}, never indexed)" if rolled_back else ""
                done.append(f"{STAGING}/{area.name}, a dead publisher's staging folder{note}")
            finally:
                os.close(fd)
        if not dry_run:
            for tmp in list(self.root.glob(".index-*")) + list(self.root.glob(".probe-*")):
                with contextlib.suppress(OSError):
                    tmp.unlink()
        for line in done:
            log.info("swept %s", line)
        return done

    def _roll_back(self, area: Path, listed: set[str] | None, *, dry_run: bool) -> tuple[bool, list[str]]:
        """For a dead staging folder: (may it be removed, the targets its cut-short commit had
        renamed into the hub and that are now moved back into it)."""
        journal = area / JOURNAL
        if not journal.exists():
            return True, []
        try:
            data = json.loads(journal.read_text(encoding="utf-8"))
            handles = {str(h) for h in data["handles"]}
            moves = [(str(m["target"]), int(m["ino"]), int(m["dev"])) for m in data["moves"]]
        except (OSError, ValueError, KeyError, TypeError):
            return False, []  # what it renamed cannot be told: leave it (and its files) alone
        if listed is None:
            return False, []  # no readable index to tell whether it completed: touch nothing
        if handles & listed:
            return True, []  # it completed: its files belong to the index now
        rolled_back = []
        for number, (target, ino, dev) in reversed(list(enumerate(moves))):
            relative = PurePosixPath(target)
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                return False, rolled_back
            path = self.root / relative
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError:
                return False, rolled_back
            if (st.st_ino, st.st_dev) != (ino, dev):
                continue  # not what that commit renamed in
            if not dry_run:
                try:
                    (area / "rolled-back").mkdir(exist_ok=True)
                    os.rename(path, area / "rolled-back" / str(number))
                except OSError:
                    return False, rolled_back
            rolled_back.append(target)
        return True, rolled_back

    # ----- writing -----------------------------------------------------------------------
    def _write_index(self, entries: list[dict]) -> None:
        """Replace the index atomically (mode 0o666 less the umask, like every other hub file).
        An entry that would not read back (a handle that does not parse, a missing field) is refused."""
        for item in entries:
            problem = entry_problem(item)
            if problem:
                raise HubStateError(
                    self.index_file, f"refusing to write an entry that {problem}", "this is a bug; please report it"
                )
        entries = sorted(entries, key=lambda e: (e["namespace"], e["variant"], e["task"], e["version"]))
        data = {"format": INDEX_FORMAT, "entries": entries}
        _write_atomically(self.index_file, json.dumps(data, indent=2) + "\n")

    def _probe_writable(self) -> None:
        try:
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as exc:
            raise HubError(
                f"cannot write to the hub folder {self.root} ({_os_reason(exc)}); pass --hub PATH to a writable folder"
            ) from None

    def _prepare(self) -> list[dict] | None:
        """Under the hub lock: read the index strictly, sweep, and refuse a hub that has lost
        versions. Returns the index entries (None when there is no index file)."""
        entries = self._load_index(strict=True)
        self._sweep({e["handle"] for e in entries} if entries is not None else None)
        self._check_state(entries, self._scan_disk())
        return entries

    def check_can_publish(self) -> None:
        """Before any build work: the hub folder is writable, its index readable and complete."""
        self._ensure_root()
        with self.lock():
            self._probe_writable()
            self._prepare()

    def publish_staged(self, variant: str, staged: Path, *, version: int | None = None) -> list[VersionInfo]:
        """Publish a staged release as the next version (or ``version``, if free), whole or not at all."""
        key = validate_name(variant.lower() if isinstance(variant, str) else variant, "model name")
        validate_version(version)
        self.task_dir(key, RELEASE_TASKS[0])  # the namespace too
        staged = Path(staged)
        manifests = read_staged(staged)
        self._ensure_root()
        area = self._own_area(staged)
        own = area is None
        if own:
            area = self.staging_dir()
        moved: list[tuple[Path, Path]] = []
        try:
            source = staged
            if not staged.resolve().is_relative_to(self.root.resolve()):
                # Another filesystem, maybe: bring the files next to their targets, so the commit is renames.
                source = area / "release"
                source.mkdir()
                for task, manifest in manifests.items():
                    for path in staged_files(staged, task).required(manifest).values():
                        shutil.move(path, source / path.name)
                        moved.append((source / path.name, path))
            with self.lock():
                new_entries = self._commit(key, source, manifests, version, area)
            moved = []
        except RegistryError:
            raise  # (some are OSErrors too: VersionExistsError, HubLockedError)
        except OSError as exc:
            raise self._commit_error(exc) from None
        finally:
            for here, back in reversed(moved):  # a refused publish leaves the caller's files as they were
                with contextlib.suppress(OSError):
                    shutil.move(here, back)
            if own:
                self._release_staging(area)
        shutil.rmtree(staged, ignore_errors=True)
        self._reap_staging_locks()
        return [self._info(e) for e in new_entries]

    def _commit(
        self, key: str, source: Path, manifests: dict[str, dict], version: int | None, area: Path
    ) -> list[dict]:
        """Under the hub lock: pick the version, journal the renames, rename, write the index."""
        entries = self._prepare()
        taken = self.taken_versions(key)
        if version is None:
            version = max((n for n in taken if n <= MAX_VERSION), default=0) + 1
            if version > MAX_VERSION:
                raise HubError(
                    f"{self.namespace}/{key} has used every version up to {MAX_VERSION}; publish under another name"
                )
        elif version in taken:
            raise VersionExistsError.taken(f"{self.namespace}/{key}", version)
        created = _now()
        moves: list[tuple[Path, Path]] = []
        new_entries = []
        for task in manifests:
            handle = Handle.parse(f"{self.namespace}/{key}/{task}/{version}")
            targets = self.paths(handle).required(manifests[task])
            staged = staged_files(source, task).required(manifests[task])
            # the manifest last: a version's files are complete before its manifest appears
            moves += [(staged[role], targets[role]) for role in targets]
            new_entries.append(_entry(handle, created, manifests[task], sha256_file(staged["manifest"])))
        all_entries = (entries or []) + new_entries
        for item in all_entries:  # nothing is renamed for an entry that could not be written
            if entry_problem(item):
                raise HubStateError(
                    self.index_file, f"refusing to write an entry that {entry_problem(item)}", self._fix()
                )
        try:
            if entries is None:
                # The first commit: an index exists before any version folder does, so that a
                # commit cut short can always be told from a published version.
                self._write_index([])
            journal = {
                "format": 1,
                "pid": os.getpid(),
                "handles": [e["handle"] for e in new_entries],
                "moves": [
                    {"target": dst.relative_to(self.root).as_posix(), "ino": st.st_ino, "dev": st.st_dev}
                    for src, dst in moves
                    for st in [os.lstat(src)]
                ],
            }
            _write_atomically(area / JOURNAL, json.dumps(journal, indent=2) + "\n")
        except OSError as exc:
            raise self._commit_error(exc) from None
        renamed: list[tuple[Path, Path]] = []
        try:
            for src, dst in moves:
                if os.path.lexists(dst):
                    raise HubStateError(dst, "already exists though no index entry lists it", self._fix())
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.rename(src, dst)
                renamed.append((src, dst))
                _commit_pause()
            self._write_index(all_entries)
        except BaseException as exc:
            if self._index_lists(new_entries[0]["handle"]):
                # Interrupted after the index was replaced (Ctrl-C at that instant): it is published.
                with contextlib.suppress(OSError):
                    (area / JOURNAL).unlink()
                raise
            if self._undo(renamed):
                with contextlib.suppress(OSError):
                    (area / JOURNAL).unlink()
            if isinstance(exc, OSError) and not isinstance(exc, RegistryError):
                raise self._commit_error(exc) from None
            raise
        with contextlib.suppress(OSError):
            (area / JOURNAL).unlink()
        return new_entries

    def _index_lists(self, handle: str) -> bool:
        try:
            return any(e["handle"] == handle for e in self._load_index(strict=False) or [])
        except HubStateError:
            return False

    @staticmethod
    def _undo(renamed: list[tuple[Path, Path]]) -> bool:
        """Move back what a failed commit renamed into place; True if all of it went back."""
        ok = True
        for src, dst in reversed(renamed):
            try:
                os.rename(dst, src)
            except OSError:
                ok = False  # the journal stays: the next publish's sweep rolls it back
        return ok

    def _commit_error(self, exc: OSError) -> HubError:
        where = f"{exc.filename}: " if exc.filename else ""
        return HubError(
            f"could not publish to {self.root}: {where}{_os_reason(exc)}; nothing was published; {_os_fix(exc)}"
        )

    # ----- repair ------------------------------------------------------------------------
    def repair(self, *, dry_run: bool = False) -> RepairReport:
        """Rebuild ``index.json`` from the manifests on disk, under the hub lock.

        Valid entries are kept as they are (they are the record that ``verify`` compares the
        manifests against); complete versions on disk that the index does not list are added from
        their manifests; invalid entries are dropped; the previous index is saved beside it as
        ``index.json.<time>.bak``. Nothing on disk but the index (and dead staging folders) is
        touched: incomplete version files are reported and left, their numbers stay taken.
        """
        if not self.root.exists():
            raise HubStateError(self.root, "does not exist", "pass --hub PATH to the hub folder to repair")
        if not self.root.is_dir():
            raise self._root_not_a_folder()
        with self.lock():
            try:
                entries = self._load_index(strict=False)
                state = "ok" if entries is not None else "missing"
                dropped = list(self.index_warnings)
            except HubStateError as exc:
                entries, state, dropped = None, f"unreadable: {exc.problem}", []
            listed = {e["handle"] for e in entries} if entries is not None else None
            swept = self._sweep(listed, dry_run=dry_run)
            report = RepairReport(str(self.root), dry_run, state, dropped=dropped, swept=swept)
            kept = entries or []
            report.kept = [e["handle"] for e in kept]
            for e in kept:
                files = self.paths(Handle.parse(e["handle"]))
                required = files.required(entry_roles(e))
                if not all(is_present(role, path) for role, path in required.items()):
                    report.missing.append(e["handle"])
            have = {(e["namespace"], e["variant"], e["task"], e["version"]) for e in kept}
            added = []
            # (a dry run leaves in place what the real run rolls back: not counted as on disk)
            gone = {_disk_key(target) for target in self._rolled_back}
            for key in sorted(self._scan_disk()):
                if key in have or key in gone:
                    continue
                result = self._disk_entry(key)
                if isinstance(result, dict):
                    added.append(result)
                else:
                    report.incomplete.append(result)
            report.added = [e["handle"] for e in added]
            if report.changed and not dry_run and (kept or added or os.path.lexists(self.index_file)):
                report.backup = self._back_up_index()
                self._write_index(kept + added)
                report.written = True
                if listed is None:  # now the index can tell what the commits cut short had completed
                    report.swept += self._sweep({e["handle"] for e in kept + added})
        return report

    def _back_up_index(self) -> str | None:
        if not os.path.lexists(self.index_file):
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = self.index_file.with_name(f"index.json.{stamp}-{uuid.uuid4().hex[:6]}.bak")
        try:
            if self.index_file.is_dir():
                os.rename(self.index_file, backup)
            else:
                shutil.copy2(self.index_file, backup)
        except OSError as exc:
            raise HubError(f"cannot save the old index as {backup} ({_os_reason(exc)}); {_os_fix(exc)}") from None
        return backup.name
