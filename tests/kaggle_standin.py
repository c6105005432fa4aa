"""A small in-repo stand-in for the Kaggle Models API, speaking the JSON-over-POST wire format of
``kagglesdk`` (the client ``kagglehub`` 1.0.3 uses) on 127.0.0.1:7777. Kaggle cannot be reached from
CI and publishes no server, so the real ``kagglehub`` and ``kagglesdk`` are tested against this.

Why port 7777: with ``KAGGLE_API_ENVIRONMENT=TEST`` kagglesdk's base URL is the fixed
``http://localhost:7777`` (``kagglesdk.kaggle_env``; ``KAGGLE_API_ENDPOINT`` is no longer read), so
the stand-in cannot take a free port, and tests that use it run one at a time. :func:`start_standin`
raises :class:`PortTakenError` at once when the port is taken (also when something listens on
``[::1]:7777``, where a client resolving ``localhost`` to ``::1`` first would land).

Every RPC is ``POST /api/v1/<service>/<Method>`` with the request's camelCase JSON as body (path
fields such as ``ownerSlug`` included). Implemented:

* ``/api/v1/models.ModelApiService/GetModel``, ``CreateModel``, ``UpdateModel`` (``updateMask``
  required), ``DeleteModel``, ``ListModels`` (``owner``, ``search``, pages);
* ``/api/v1/models.ModelApiService/CreateModelInstance`` (first version, always number 1 unless
  renumbered), ``CreateModelInstanceVersion`` (``versionNotes``), ``GetModelInstance``,
  ``UpdateModelInstance``, ``ListModelInstances``, ``ListModelInstanceVersions``,
  ``DeleteModelInstanceVersion`` (what the owner does on kaggle.com to repair a numbering),
  ``ListModelInstanceVersionFiles`` (``pageSize``/``pageToken``), ``DownloadModelInstanceVersion``
  (302 to a file, or with no ``path`` to a ``.tar.gz`` of the version);
* ``/api/v1/blobs.BlobApiService/StartBlobUpload`` answering ``{token, createUrl}``, then the GCS
  resumable upload ``PUT /upload/storage/v1/b/kaggle-models-data/o?upload_id=...`` as
  ``kagglehub/gcs_upload.py`` sends it (``Content-Range: bytes a-b/N``; the probe ``bytes */N``
  answers 308 with ``Range: bytes=0-k`` while incomplete; 200 when complete; sizes are checked
  against ``contentLength``);
* ``GET /download/v<id>/files/<path>`` and ``GET /download/v<id>/archive.tar.gz``: the redirect
  targets (like GCS signed URLs: no auth), with ``x-goog-hash: md5=...`` and ``Range`` support.

Versions are numbered by the stand-in, as by Kaggle: 1 for CreateModelInstance (which has no
``versionNotes`` field, so the first version's notes stay empty), then the next number per
CreateModelInstanceVersion. Notes reach a client only as ``ModelInstance.versionNotes`` (the latest
version's) in ListModelInstances: kagglesdk's ``ModelInstanceVersion`` has no notes field; the state
keeps them all. ListModelInstanceVersions lists the newest first.

Errors come in the two shapes the client parses: a failed call answers its HTTP status with
``{"code": N, "message": ...}`` (kagglesdk raises ``requests.HTTPError``; kagglehub wraps it in
``KaggleApiHTTPError``); a rejected create/update answers 200 with ``{"error": ..., "errorCode": N}``
(kagglehub's ``handle_mutate_call`` raises ``BackendError(error, error_code)``; an existing instance
is ``errorCode`` 409, on which ``model_upload`` calls ``CreateModelInstanceVersion``).

Auth: ``Authorization: Bearer <KAGGLE_API_TOKEN>`` (Basic with the token as password is accepted
too). No token, or one not in ``tokens | read_only_tokens``, is 401 (reads without a token pass when
``allow_anonymous_reads``); a ``read_only_tokens`` token gets 403 on writes; an ``ownerSlug`` in
``forbidden_owners`` gets 403 on everything. Failure injection lives on :class:`KaggleState`: ``fail``
(500 per RPC name or ``"BlobPut"``/``"Download"``), ``reject`` (200 + ``errorCode`` 400 per mutate
RPC), :meth:`KaggleState.fail_blob_puts`, ``short_blob_puts`` (a dropped connection: half kept, 308),
:meth:`KaggleState.renumber`; ``log`` records every request.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import json
import os
import re
import socket
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

HOST = "127.0.0.1"
PORT = 7777
# What kagglesdk's KaggleEnv.TEST talks to; redirects and upload URLs point back at it.
BASE_URL = f"http://localhost:{PORT}"
DEFAULT_TOKEN = "kaggle-standin-token"
UPLOAD_PATH = "/upload/storage/v1/b/kaggle-models-data/o"
MODELS = "models.ModelApiService"
BLOBS = "blobs.BlobApiService"
# kagglehub zips an upload of more than 50 files into one top-level "archive.zip"; Kaggle unpacks it.
ARCHIVE_UPLOAD_NAME = "archive.zip"
DEFAULT_PAGE_SIZE = 50


class PortTakenError(RuntimeError):
    """127.0.0.1:7777 (or [::1]:7777) is taken: the stand-in cannot move, the client only talks there."""


def _now() -> str:
    """A timestamp in the form kagglesdk's DateTimeSerializer reads (``...T..:..:..mmmZ``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def framework_key(framework: str) -> str:
    """One key for a framework as a handle spells it (``tensorFlow2``) and as the wire does
    (``MODEL_FRAMEWORK_TENSOR_FLOW_2``): ``tensorflow2``."""
    return framework.removeprefix("MODEL_FRAMEWORK_").replace("_", "").lower()


def framework_slug(enum_name: str) -> str:
    """The URL spelling of a wire framework (``MODEL_FRAMEWORK_TENSOR_FLOW_2`` -> ``tensorFlow2``), as
    ``kagglehub.enum.enum_to_str`` writes it."""
    words = enum_name.removeprefix("MODEL_FRAMEWORK_").lower().split("_")
    return words[0] + "".join(w.capitalize() for w in words[1:])


def _framework_enum_name(framework: str) -> str:
    """The wire name of a framework spelled either way (kagglesdk's enum when importable names it)."""
    if framework.startswith("MODEL_FRAMEWORK_"):
        return framework
    try:
        from kagglesdk.models.types.model_enums import ModelFramework
    except ImportError:
        return "MODEL_FRAMEWORK_" + re.sub(r"(?<=[a-z])(?=[A-Z0-9])", "_", framework).upper()
    for member in ModelFramework:
        if framework_key(member.name) == framework_key(framework):
            return member.name
    raise ValueError(f"unknown framework {framework!r}")


def _instance_key(owner: str, model: str, framework: str, slug: str) -> tuple[str, str, str, str]:
    return owner, model, framework_key(framework), slug


def _handle_key(handle: str) -> tuple[str, str, str, str]:
    """``owner/model/framework/variation`` (a trailing ``/N`` is ignored) -> the instance key."""
    parts = handle.strip("/").split("/")
    if len(parts) not in (4, 5):
        raise ValueError(f"not a model instance handle: {handle!r}")
    return _instance_key(*parts[:4])


@dataclass
class UploadedBlob:
    """One StartBlobUpload: its token (what CreateModelInstance refers to) and the bytes PUT so far."""

    token: str
    upload_id: str
    name: str
    blob_type: str
    content_length: int
    last_modified_epoch_seconds: int | None
    data: bytearray = field(default_factory=bytearray)

    @property
    def complete(self) -> bool:
        return len(self.data) == self.content_length


@dataclass
class Version:
    number: int
    id: int
    notes: str
    files: dict[str, bytes]  # full relative path ("sub/dir/file") -> bytes
    created: str = field(default_factory=_now)
    request: dict | None = None  # the JSON body that created it (None: added with add_version)


@dataclass
class Instance:
    owner: str
    model: str
    framework: str  # wire enum name, e.g. MODEL_FRAMEWORK_TENSOR_FLOW_2
    slug: str
    id: int
    license_name: str = ""
    overview: str = ""
    usage: str = ""
    fine_tunable: bool = False
    training_data: list[str] = field(default_factory=list)
    model_instance_type: str | None = None
    base_model_instance: str | None = None
    external_base_model_url: str = ""
    sigstore: bool = False
    versions: dict[int, Version] = field(default_factory=dict)
    updates: list[dict] = field(default_factory=list)  # UpdateModelInstance bodies, in order

    @property
    def latest(self) -> Version | None:
        return self.versions[max(self.versions)] if self.versions else None

    @property
    def handle(self) -> str:
        return f"{self.owner}/{self.model}/{framework_slug(self.framework)}/{self.slug}"


@dataclass
class Model:
    owner: str
    slug: str
    id: int
    title: str
    subtitle: str = ""
    is_private: bool = True
    description: str = ""
    provenance_sources: str = ""
    publish_time: str | None = None
    instances: dict[tuple[str, str], Instance] = field(default_factory=dict)  # (framework key, slug)
    updates: list[dict] = field(default_factory=list)  # UpdateModel bodies, in order
    create_request: dict | None = None


@dataclass
class LoggedRequest:
    method: str  # HTTP verb
    path: str
    name: str  # RPC method name ("GetModel"), or "BlobPut" / "Download" / "unknown"
    summary: dict  # RPC: the JSON body; PUT: upload id, Content-Range, byte count; GET: Range
    token: str | None = None  # the token the request carried
    status: int | None = None


# RPC -> (handler method name, whether it writes)
_RPCS: dict[str, tuple[str, bool]] = {
    f"{MODELS}/GetModel": ("get_model", False),
    f"{MODELS}/CreateModel": ("create_model", True),
    f"{MODELS}/UpdateModel": ("update_model", True),
    f"{MODELS}/DeleteModel": ("delete_model", True),
    f"{MODELS}/ListModels": ("list_models", False),
    f"{MODELS}/GetModelInstance": ("get_model_instance", False),
    f"{MODELS}/CreateModelInstance": ("create_model_instance", True),
    f"{MODELS}/CreateModelInstanceVersion": ("create_model_instance_version", True),
    f"{MODELS}/UpdateModelInstance": ("update_model_instance", True),
    f"{MODELS}/DeleteModelInstanceVersion": ("delete_model_instance_version", True),
    f"{MODELS}/ListModelInstances": ("list_model_instances", False),
    f"{MODELS}/ListModelInstanceVersions": ("list_model_instance_versions", False),
    f"{MODELS}/ListModelInstanceVersionFiles": ("list_model_instance_version_files", False),
    f"{MODELS}/DownloadModelInstanceVersion": ("download_model_instance_version", False),
    f"{BLOBS}/StartBlobUpload": ("start_blob_upload", True),
}

_MODEL_UPDATABLE = {
    "title": "title",
    "subtitle": "subtitle",
    "isPrivate": "is_private",
    "description": "description",
    "publishTime": "publish_time",
    "provenanceSources": "provenance_sources",
}
_INSTANCE_UPDATABLE = {
    "overview": "overview",
    "usage": "usage",
    "fineTunable": "fine_tunable",
    "trainingData": "training_data",
    "licenseName": "license_name",
    "modelInstanceType": "model_instance_type",
    "baseModelInstance": "base_model_instance",
    "externalBaseModelUrl": "external_base_model_url",
}
# What a masked field absent from the body becomes (kagglesdk omits fields left at their defaults).
_DEFAULTS: dict[str, Any] = {
    "isPrivate": False,
    "fineTunable": False,
    "trainingData": [],
    "publishTime": None,
    "modelInstanceType": None,
    "baseModelInstance": None,
}


class _Reply(Exception):
    """Raised inside a handler to answer at once: the status, a JSON payload (None: no body), headers."""

    def __init__(self, status: int, payload: dict | None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, payload)
        self.status = status
        self.payload = payload
        self.headers = dict(headers or {})


def _http_error(status: int, message: str) -> _Reply:
    """An error kagglesdk turns into requests.HTTPError: the status, and ``code``/``message``."""
    return _Reply(status, {"code": status, "message": message})


def _body_error(code: int, message: str) -> _Reply:
    """A rejected create/update as Kaggle answers it: 200 with ``error`` and ``errorCode``."""
    return _Reply(200, {"error": message, "errorCode": code})


class KaggleState:
    """Everything the stand-in holds, all in memory, and the knobs tests turn.

    Failure injection (all read under ``lock``; set them before the client call):

    * ``fail[name] = n``: the next n calls of RPC ``name`` ("CreateModelInstanceVersion", ...), or of
      ``"BlobPut"`` (data PUTs) / ``"Download"`` (file GETs), answer 500 ``{"code": 500, ...}``.
    * ``reject[name] = n``: the next n calls of a create/update RPC answer 200 with
      ``{"error": "injected rejection", "errorCode": 400}`` (kagglehub raises ``BackendError``).
    * :meth:`fail_blob_puts` (``blob_put_failure_after``/``blob_put_failure_count``): after the first
      N data PUTs to arrive, the next ones answer 500 (kagglehub gives up at once: an upload that
      fails midway). Counted in arrival order, since kagglehub uploads up to 8 files in parallel.
    * ``short_blob_puts = n``: the next n data PUTs keep only the first half of their bytes and answer
      308, as if the connection dropped; kagglehub probes (``bytes */N``) and resumes.
    * ``puts_dropped = True``: every upload PUT (data and probes) gets its connection closed without an
      answer, as when the network goes away mid-upload (the client sees a ConnectionError).
    * :meth:`renumber` (``skip_versions``): the next version of an instance is numbered
      ``latest + 1 + skip``, as if others had published in between; one-shot.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tokens: set[str] = {DEFAULT_TOKEN}
        self.read_only_tokens: set[str] = set()
        self.forbidden_owners: set[str] = set()
        self.allow_anonymous_reads = False
        self.models: dict[tuple[str, str], Model] = {}
        self.blobs: dict[str, UploadedBlob] = {}  # token -> blob
        self.uploads: dict[str, str] = {}  # upload id -> token
        self.versions_by_id: dict[int, tuple[Instance, Version]] = {}
        self.log: list[LoggedRequest] = []
        self.errors: list[str] = []  # stand-in bugs (an exception in a handler), answered with 500
        self.fail: dict[str, int] = {}
        self.reject: dict[str, int] = {}
        self.blob_put_failure_after: int | None = None
        self.blob_put_failure_count: int | None = 1
        self.short_blob_puts = 0
        self.puts_dropped = False
        self.skip_versions: dict[tuple[str, str, str, str], int] = {}
        self.data_puts_seen = 0
        self._blob_put_failures_done = 0
        self._ids = 1000

    # ----- knobs -----------------------------------------------------------------------
    def fail_blob_puts(self, after: int = 0, times: int | None = 1) -> None:
        """Data PUTs after the first ``after`` (from now) answer 500, ``times`` of them (None: all)."""
        with self.lock:
            self.blob_put_failure_after = self.data_puts_seen + after
            self.blob_put_failure_count = times
            self._blob_put_failures_done = 0

    def renumber(self, handle: str, skip: int = 1) -> None:
        """The next version of ``owner/model/framework/variation`` skips ``skip`` numbers."""
        with self.lock:
            self.skip_versions[_handle_key(handle)] = skip

    # ----- reading back ----------------------------------------------------------------
    def model(self, owner: str, slug: str) -> Model | None:
        return self.models.get((owner, slug))

    def instance(self, handle: str) -> Instance | None:
        owner, model, fw, slug = _handle_key(handle)
        m = self.models.get((owner, model))
        return m.instances.get((fw, slug)) if m else None

    def version_numbers(self, handle: str) -> list[int]:
        inst = self.instance(handle)
        return sorted(inst.versions) if inst else []

    def files(self, handle: str, version: int | None = None) -> dict[str, bytes]:
        """The files of a version (default: the latest), by full relative path."""
        inst = self.instance(handle)
        if inst is None or not inst.versions:
            raise KeyError(handle)
        return dict(inst.versions[version if version is not None else max(inst.versions)].files)

    def rpc_calls(self) -> list[str]:
        """The names of the requests so far, in order ("GetModel", "BlobPut", ...)."""
        with self.lock:
            return [entry.name for entry in self.log]

    def add_version(self, handle: str, files: Mapping[str, bytes], notes: str = "") -> int:
        """Publish a version server-side (someone else did), creating model and instance if missing.
        Returns its number (subject to :meth:`renumber` like any other)."""
        owner, model, framework, slug = handle.strip("/").split("/")[:4]
        with self.lock:
            m = self.models.get((owner, model))
            if m is None:
                m = self.models[(owner, model)] = Model(owner, model, self.next_id(), title=model)
            inst = m.instances.get((framework_key(framework), slug))
            if inst is None:
                inst = Instance(owner, model, _framework_enum_name(framework), slug, self.next_id())
                m.instances[(framework_key(framework), slug)] = inst
            return self.new_version(inst, dict(files), notes, None).number

    # ----- internals (called under lock) -------------------------------------------------
    def next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def take(self, counter: dict[str, int], name: str) -> bool:
        with self.lock:
            if counter.get(name, 0) > 0:
                counter[name] -= 1
                return True
            return False

    def new_version(self, inst: Instance, files: dict[str, bytes], notes: str, request: dict | None) -> Version:
        with self.lock:
            latest = max(inst.versions) if inst.versions else 0
            key = _instance_key(inst.owner, inst.model, inst.framework, inst.slug)
            number = latest + 1 + self.skip_versions.pop(key, 0)
            version = Version(number, self.next_id(), notes, files, request=request)
            inst.versions[number] = version
            self.versions_by_id[version.id] = (inst, version)
            return version


def _page(items: list, body: dict) -> tuple[list, str]:
    """Apply ``pageSize``/``pageToken`` (the token is the offset as a string; "" on the last page)."""
    size = int(body.get("pageSize") or DEFAULT_PAGE_SIZE)
    token = body.get("pageToken") or "0"
    if not token.isdigit():
        raise _http_error(400, f"invalid page token {token!r}")
    start = int(token)
    chunk = items[start : start + size]
    return chunk, str(start + size) if start + size < len(items) else ""


def _mask_paths(body: dict) -> list[str]:
    mask = body.get("updateMask")
    if not mask:
        raise _body_error(400, "updateMask is required: name the fields to update")
    paths = mask.split(",") if isinstance(mask, str) else list(mask.get("paths", []))
    # FieldMask.ToJsonString writes camelCase; accept snake_case too.
    return [re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), p.strip()) for p in paths if p.strip()]


def _md5_header(data: bytes) -> str:
    return "md5=" + base64.b64encode(hashlib.md5(data).digest()).decode()


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size = len(files[path])
            info.mtime = 0
            tar.addfile(info, io.BytesIO(files[path]))
    return buffer.getvalue()


class KaggleHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle keep-alive connection is dropped after this
    state: KaggleState

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ----- plumbing ----------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        payload: dict | None = None,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        if payload is not None:
            data = json.dumps(payload).encode()
        data = data or b""
        self._entry.status = status
        self.send_response(status)
        if data or payload is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _log(self, name: str, summary: dict) -> None:
        self._entry = LoggedRequest(self.command, self.path, name, summary, self._token()[1])
        with self.state.lock:
            self.state.log.append(self._entry)

    def _base(self) -> str:
        """Where redirects and upload URLs point: the host the client used, when it is this port."""
        host = self.headers.get("Host") or ""
        return f"http://{host}" if host in (f"localhost:{PORT}", f"{HOST}:{PORT}") else BASE_URL

    def _token(self) -> tuple[bool, str | None]:
        """(whether an Authorization header came, the token it names)."""
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            return True, auth[len("Bearer ") :].strip() or None
        if auth.startswith("Basic "):
            try:
                return True, base64.b64decode(auth[len("Basic ") :]).decode().partition(":")[2] or None
            except (ValueError, UnicodeDecodeError):
                return True, None
        return bool(auth), None

    def do_POST(self) -> None:
        self._route()

    def do_PUT(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def _route(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_body()
        try:
            if self.command == "POST" and path.startswith("/api/v1/"):
                return self._rpc(path[len("/api/v1/") :], body)
            if self.command == "PUT" and path == UPLOAD_PATH:
                if self.state.puts_dropped:  # the network is gone: no answer, the connection just closes
                    self._log("BlobPut", {"dropped": True})
                    self.close_connection = True
                    return None
                return self._blob_put(body)
            if self.command in ("GET", "HEAD") and path.startswith("/download/"):
                return self._download(unquote(path))
            self._log("unknown", {})
            return self._send(404, {"code": 404, "message": f"no route for {self.command} {path}"})
        except _Reply as reply:
            return self._send(reply.status, reply.payload, headers=reply.headers)
        except Exception as exc:  # a stand-in bug: say so to the client and keep it for the test
            with self.state.lock:
                self.state.errors.append(f"{self.command} {path}: {exc!r}")
            if not hasattr(self, "_entry"):
                self._log("error", {})
            return self._send(500, {"code": 500, "message": f"kaggle stand-in error: {exc!r}"})

    # ----- RPCs --------------------------------------------------------------------------
    def _rpc(self, rpc: str, raw: bytes) -> None:
        name = rpc.rpartition("/")[2]
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._log(name, {"raw": raw[:200].decode(errors="replace")})
            raise _http_error(400, "the request body is not JSON") from None
        self._log(name, body)
        if rpc not in _RPCS:
            raise _http_error(404, f"no such method {rpc}")
        handler_name, writes = _RPCS[rpc]
        state = self.state
        sent_auth, token = self._token()
        with state.lock:
            valid = state.tokens | state.read_only_tokens
            if token is None and (sent_auth or writes or not state.allow_anonymous_reads):
                raise _http_error(401, "Unauthenticated: no valid Kaggle API token in the Authorization header")
            if token is not None and token not in valid:
                raise _http_error(401, "Unauthenticated: the Kaggle API token is invalid or expired")
            if writes and token in state.read_only_tokens:
                raise _http_error(403, "Permission denied: this token is read-only")
            owner = body.get("ownerSlug")
            if owner and owner in state.forbidden_owners:
                raise _http_error(403, f"Permission denied: you may not access resources of '{owner}'")
        if state.take(state.fail, name):
            raise _http_error(500, f"injected failure of {name}")
        if writes and state.take(state.reject, name):
            raise _body_error(400, f"injected rejection of {name}")
        payload = getattr(self, handler_name)(body, token)
        self._send(200, payload)

    def _model(self, body: dict, *, slug_field: str = "modelSlug") -> Model:
        owner, slug = body.get("ownerSlug", ""), body.get(slug_field, "")
        model = self.state.models.get((owner, slug))
        anonymous = self._token()[1] is None
        if model is None or (model.is_private and anonymous):
            raise _http_error(404, f"Model '{owner}/{slug}' not found")
        return model

    def _instance(self, body: dict) -> Instance:
        model = self._model(body)
        framework = body.get("framework", "MODEL_FRAMEWORK_UNSPECIFIED")
        inst = model.instances.get((framework_key(framework), body.get("instanceSlug", "")))
        if inst is None:
            slug = body.get("instanceSlug")
            raise _http_error(404, f"Model instance '{model.owner}/{model.slug}/{framework}/{slug}' not found")
        return inst

    def _version(self, body: dict) -> tuple[Instance, Version]:
        inst = self._instance(body)
        number = body.get("versionNumber") or (max(inst.versions) if inst.versions else 0)
        if number not in inst.versions:
            raise _http_error(404, f"Version {number} of model instance '{inst.handle}' not found")
        return inst, inst.versions[number]

    def _url(self, *parts: object) -> str:
        return "/".join([f"{self._base()}/models", *(str(p) for p in parts)])

    def _api_model_instance(self, inst: Instance) -> dict:
        """ApiModelInstance (GetModelInstance, GetModel's instances)."""
        latest = inst.latest
        number = latest.number if latest else 0
        out = {
            "id": inst.id,
            "slug": inst.slug,
            "framework": inst.framework,
            "fineTunable": inst.fine_tunable,
            "overview": inst.overview,
            "usage": inst.usage,
            "downloadUrl": self._url(inst.owner, inst.model, framework_slug(inst.framework), inst.slug, number),
            "versionId": latest.id if latest else 0,
            "versionNumber": number,
            "trainingData": inst.training_data,
            "url": self._url(inst.owner, inst.model, framework_slug(inst.framework), inst.slug),
            "licenseName": inst.license_name,
            "externalBaseModelUrl": inst.external_base_model_url,
            "totalUncompressedBytes": sum(map(len, latest.files.values())) if latest else 0,
        }
        if inst.model_instance_type:
            out["modelInstanceType"] = inst.model_instance_type
        return out

    def get_model(self, body: dict, token: str | None) -> dict:
        with self.state.lock:
            m = self._model(body)
            out = {
                "id": m.id,
                "ref": f"{m.owner}/{m.slug}",
                "title": m.title,
                "subtitle": m.subtitle,
                "author": m.owner,
                "slug": m.slug,
                "isPrivate": m.is_private,
                "description": m.description,
                "instances": [self._api_model_instance(i) for i in m.instances.values()],
                "provenanceSources": m.provenance_sources,
                "url": self._url(m.owner, m.slug),
            }
            if m.publish_time:
                out["publishTime"] = m.publish_time
            return out

    def create_model(self, body: dict, token: str | None) -> dict:
        owner, slug = body.get("ownerSlug", ""), body.get("slug", "")
        if not owner or not slug:
            raise _body_error(400, "ownerSlug and slug are required")
        with self.state.lock:
            if (owner, slug) in self.state.models:
                raise _body_error(409, f"Model '{owner}/{slug}' already exists")
            m = Model(
                owner,
                slug,
                self.state.next_id(),
                title=body.get("title") or slug,
                subtitle=body.get("subtitle", ""),
                is_private=body.get("isPrivate", False),
                description=body.get("description", ""),
                provenance_sources=body.get("provenanceSources", ""),
                publish_time=body.get("publishTime"),
                create_request=body,
            )
            self.state.models[(owner, slug)] = m
        return {"id": m.id, "ref": f"{owner}/{slug}", "url": self._url(owner, slug)}

    def update_model(self, body: dict, token: str | None) -> dict:
        with self.state.lock:
            m = self._model(body)
            paths = _mask_paths(body)
            unknown = [p for p in paths if p not in _MODEL_UPDATABLE]
            if unknown:
                raise _body_error(400, f"cannot update {unknown}: updatable are {sorted(_MODEL_UPDATABLE)}")
            for path in paths:  # a masked field absent from the body is its default (FieldMask semantics)
                setattr(m, _MODEL_UPDATABLE[path], body.get(path, _DEFAULTS.get(path, "")))
            m.updates.append(body)
        return {"id": m.id, "ref": f"{m.owner}/{m.slug}", "url": self._url(m.owner, m.slug)}

    def delete_model(self, body: dict, token: str | None) -> dict:
        with self.state.lock:
            m = self._model(body)
            del self.state.models[(m.owner, m.slug)]
        return {}

    def list_models(self, body: dict, token: str | None) -> dict:
        """ApiListModelsResponse: the models of ``owner`` (all owners without one) whose slug or title
        holds ``search``, private ones only with a token, by slug."""
        owner, search = body.get("owner", ""), (body.get("search") or "").lower()
        anonymous = token is None
        with self.state.lock:
            if owner in self.state.forbidden_owners:
                raise _http_error(403, f"Permission denied for owner '{owner}'")
            found = [
                m
                for (o, _), m in sorted(self.state.models.items())
                if (not owner or o == owner)
                and (search in m.slug or search in m.title.lower())
                and not (m.is_private and anonymous)
            ]
            items = [
                {
                    "id": m.id,
                    "ref": f"{m.owner}/{m.slug}",
                    "title": m.title,
                    "author": m.owner,
                    "slug": m.slug,
                    "isPrivate": m.is_private,
                    "url": self._url(m.owner, m.slug),
                }
                for m in found
            ]
            page, next_token = _page(items, body)
        return {"models": page, "nextPageToken": next_token, "totalResults": len(items)}

    def delete_model_instance_version(self, body: dict, token: str | None) -> dict:
        with self.state.lock:
            inst, version = self._version(body)
            del inst.versions[version.number]
            del self.state.versions_by_id[version.id]
        return {}

    def get_model_instance(self, body: dict, token: str | None) -> dict:
        with self.state.lock:
            return self._api_model_instance(self._instance(body))

    def update_model_instance(self, body: dict, token: str | None) -> dict:
        with self.state.lock:
            inst = self._instance(body)
            paths = _mask_paths(body)
            unknown = [p for p in paths if p not in _INSTANCE_UPDATABLE]
            if unknown:
                raise _body_error(400, f"cannot update {unknown}: updatable are {sorted(_INSTANCE_UPDATABLE)}")
            for path in paths:
                setattr(inst, _INSTANCE_UPDATABLE[path], body.get(path, _DEFAULTS.get(path, "")))
            inst.updates.append(body)
        return {"id": inst.id, "ref": inst.handle, "url": self._url(inst.handle)}

    def _collect_files(self, files: list[dict], directories: list[dict], prefix: str = "") -> dict[str, bytes]:
        """The upload tree (files by blob token, sub-folders as nested ``directories``) as full paths."""
        out: dict[str, bytes] = {}

        def add(path: str, data: bytes) -> None:
            if path in out:
                raise _body_error(400, f"two files at '{path}'")
            out[path] = data

        for item in files:
            blob = self.state.blobs.get(item.get("token") or "")
            if blob is None:
                raise _body_error(400, f"unknown blob token {item.get('token')!r}")
            if not blob.complete:
                got = f"{len(blob.data)} of {blob.content_length} bytes"
                raise _body_error(400, f"blob '{blob.name}' was not fully uploaded ({got})")
            add(prefix + blob.name, bytes(blob.data))
        for directory in directories:
            name = directory.get("name", "")
            if not name or "/" in name or name in (".", ".."):
                raise _body_error(400, f"invalid directory name {name!r}")
            sub = self._collect_files(directory.get("files", []), directory.get("directories", []), f"{prefix}{name}/")
            for path, data in sub.items():
                add(path, data)
        return out

    def _version_files(self, body: dict) -> dict[str, bytes]:
        files = self._collect_files(body.get("files", []), body.get("directories", []))
        if not files:
            raise _body_error(400, "a version needs at least one file")
        if list(files) == [ARCHIVE_UPLOAD_NAME]:  # kagglehub's >50-files archive: Kaggle unpacks it
            with zipfile.ZipFile(io.BytesIO(files[ARCHIVE_UPLOAD_NAME])) as archive:
                files = {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}
        return files

    def _created(self, inst: Instance, version: Version) -> dict:
        url = self._url(inst.owner, inst.model, framework_slug(inst.framework), inst.slug, version.number)
        return {"id": version.id, "ref": f"{inst.handle}/{version.number}", "url": url}

    def create_model_instance(self, body: dict, token: str | None) -> dict:
        request = body.get("body") or {}
        with self.state.lock:
            m = self.state.models.get((body.get("ownerSlug", ""), body.get("modelSlug", "")))
            if m is None:
                raise _body_error(404, f"Model '{body.get('ownerSlug')}/{body.get('modelSlug')}' not found")
            framework = request.get("framework", "MODEL_FRAMEWORK_UNSPECIFIED")
            slug = request.get("instanceSlug", "")
            if framework == "MODEL_FRAMEWORK_UNSPECIFIED" or not framework.startswith("MODEL_FRAMEWORK_"):
                raise _body_error(400, f"invalid framework {framework!r}")
            if not slug:
                raise _body_error(400, "instanceSlug is required")
            if (framework_key(framework), slug) in m.instances:
                raise _body_error(409, f"Model instance '{m.owner}/{m.slug}/{framework_slug(framework)}/{slug}' exists")
            files = self._version_files(request)
            inst = Instance(
                m.owner,
                m.slug,
                framework,
                slug,
                self.state.next_id(),
                license_name=request.get("licenseName", ""),
                overview=request.get("overview", ""),
                usage=request.get("usage", ""),
                fine_tunable=request.get("fineTunable", False),
                training_data=request.get("trainingData", []),
                model_instance_type=request.get("modelInstanceType"),
                base_model_instance=request.get("baseModelInstance"),
                external_base_model_url=request.get("externalBaseModelUrl", ""),
                sigstore=request.get("sigstore", False),
            )
            m.instances[(framework_key(framework), slug)] = inst
            # CreateModelInstance carries no versionNotes: the first version's notes are empty.
            return self._created(inst, self.state.new_version(inst, files, "", body))

    def create_model_instance_version(self, body: dict, token: str | None) -> dict:
        request = body.get("body") or {}
        with self.state.lock:
            try:
                inst = self._instance(body)
            except _Reply as reply:
                raise _body_error(404, reply.payload["message"]) from None
            files = self._version_files(request)
            return self._created(inst, self.state.new_version(inst, files, request.get("versionNotes", ""), body))

    def list_model_instances(self, body: dict, token: str | None) -> dict:
        with self.state.lock:
            m = self._model(body)
            items = []
            for inst in m.instances.values():
                latest = inst.latest
                items.append(
                    {
                        "id": inst.id,
                        "ownerSlug": inst.owner,
                        "modelSlug": inst.model,
                        "slug": inst.slug,
                        "versionId": latest.id if latest else 0,
                        "fineTunable": inst.fine_tunable,
                        "overview": inst.overview,
                        "usage": inst.usage,
                        "versionNumber": latest.number if latest else 0,
                        "framework": inst.framework,
                        "versionNotes": latest.notes if latest else "",
                        "trainingData": inst.training_data,
                        "status": "READY",
                        "modelId": m.id,
                        "totalUncompressedBytes": sum(map(len, latest.files.values())) if latest else 0,
                    }
                )
            page, next_token = _page(items, body)
        return {"instances": page, "nextPageToken": next_token}

    def list_model_instance_versions(self, body: dict, token: str | None) -> dict:
        with self.state.lock:
            inst = self._instance(body)
            m = self.state.models[(inst.owner, inst.model)]
            versions = [
                {
                    "id": v.id,
                    "framework": inst.framework,
                    "url": self._url(inst.owner, inst.model, framework_slug(inst.framework), inst.slug, v.number),
                    "variationSlug": inst.slug,
                    "versionNumber": v.number,
                    "modelTitle": m.title,
                    "isPrivate": m.is_private,
                    "modelId": m.id,
                    "ownerSlug": inst.owner,
                    "modelSlug": inst.model,
                    "modelInstanceId": inst.id,
                }
                for v in sorted(inst.versions.values(), key=lambda v: -v.number)  # newest first
            ]
            page, next_token = _page(versions, body)
        return {"versionList": {"versions": page}, "nextPageToken": next_token}

    def list_model_instance_version_files(self, body: dict, token: str | None) -> dict:
        with self.state.lock:
            _, version = self._version(body)
            items = [
                {"name": path, "size": len(data), "creationDate": version.created}
                for path, data in sorted(version.files.items())
            ]
            page, next_token = _page(items, body)
        return {"files": page, "nextPageToken": next_token}

    def download_model_instance_version(self, body: dict, token: str | None) -> dict:
        with self.state.lock:
            inst, version = self._version(body)
            path = body.get("path")
            if path and path not in version.files:
                raise _http_error(404, f"File '{path}' not found in version {version.number} of '{inst.handle}'")
        # Kaggle redirects to a signed GCS URL; kagglesdk's HttpRedirect hands the followed response over.
        target = f"/download/v{version.id}/files/{quote(path)}" if path else f"/download/v{version.id}/archive.tar.gz"
        raise _Reply(302, None, {"Location": self._base() + target})

    def start_blob_upload(self, body: dict, token: str | None) -> dict:
        name = body.get("name", "")
        if not name or "/" in name:
            raise _http_error(400, f"invalid blob name {name!r}")
        blob_type = body.get("type", "API_BLOB_TYPE_UNSPECIFIED")
        if blob_type == "API_BLOB_TYPE_UNSPECIFIED":
            raise _http_error(400, "the blob type is required (MODEL for model files)")
        with self.state.lock:
            number = self.state.next_id()
            blob = UploadedBlob(
                token=f"blob-token-{number}",
                upload_id=f"upload-{number}",
                name=name,
                blob_type=blob_type,
                content_length=int(body.get("contentLength", 0)),
                last_modified_epoch_seconds=body.get("lastModifiedEpochSeconds"),
            )
            self.state.blobs[blob.token] = blob
            self.state.uploads[blob.upload_id] = blob.token
        create_url = f"{self._base()}{UPLOAD_PATH}?uploadType=resumable&upload_id={blob.upload_id}"
        return {"token": blob.token, "createUrl": create_url}

    # ----- the resumable upload (what GCS does for createUrl) ----------------------------
    def _blob_put(self, data: bytes) -> None:
        state = self.state
        upload_id = (parse_qs(urlsplit(self.path).query).get("upload_id") or [""])[0]
        content_range = self.headers.get("Content-Range")
        self._log("BlobPut", {"uploadId": upload_id, "contentRange": content_range, "bytes": len(data)})
        with state.lock:
            blob = state.blobs.get(state.uploads.get(upload_id, ""))
            if blob is None:
                raise _http_error(404, f"no upload session {upload_id!r}")
            probe = content_range is not None and content_range.startswith("bytes */")
            if probe:
                total = content_range[len("bytes */") :]
                if total != str(blob.content_length):
                    raise _http_error(400, f"size {total} is not the announced contentLength {blob.content_length}")
                return self._upload_status(blob)
            state.data_puts_seen += 1
            after, count = state.blob_put_failure_after, state.blob_put_failure_count
            failing = after is not None and state.data_puts_seen > after
            if failing and (count is None or state._blob_put_failures_done < count):
                state._blob_put_failures_done += 1
                raise _Reply(500, {"error": {"code": 500, "message": "injected blob upload failure"}})
            if state.take(state.fail, "BlobPut"):
                raise _Reply(500, {"error": {"code": 500, "message": "injected blob upload failure"}})
            if content_range is None:
                start = 0
                if len(data) != blob.content_length:
                    raise _http_error(400, f"{len(data)} bytes, but contentLength was {blob.content_length}")
            else:
                match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", content_range)
                if not match:
                    raise _http_error(400, f"invalid Content-Range {content_range!r}")
                start, end, total = map(int, match.groups())
                if total != blob.content_length:
                    raise _http_error(400, f"size {total} is not the announced contentLength {blob.content_length}")
                if start > len(blob.data) or end < start or end - start + 1 != len(data) or end >= total:
                    raise _http_error(400, f"Content-Range {content_range} does not fit {len(data)} bytes here")
            if state.short_blob_puts > 0 and len(data) > 1:
                state.short_blob_puts -= 1
                data = data[: len(data) // 2]
            blob.data[start:] = data
            return self._upload_status(blob)

    def _upload_status(self, blob: UploadedBlob) -> None:
        if blob.complete:
            return self._send(200, {"kind": "storage#object", "name": blob.name, "size": str(blob.content_length)})
        headers = {"Range": f"bytes=0-{len(blob.data) - 1}"} if blob.data else {}
        return self._send(308, None, headers=headers)

    # ----- downloads (what a signed GCS URL serves) ----------------------------------------
    def _download(self, path: str) -> None:
        self._log("Download", {"range": self.headers.get("Range")})
        match = re.fullmatch(r"/download/v(\d+)/(?:files/(.+)|archive\.tar\.gz)", path)
        with self.state.lock:
            found = self.state.versions_by_id.get(int(match.group(1))) if match else None
            if found is None:
                raise _http_error(404, f"no such download {path}")
            if self.state.take(self.state.fail, "Download"):
                raise _http_error(500, "injected download failure")
            _, version = found
            file_path = match.group(2)
            if file_path is not None and file_path not in version.files:
                raise _http_error(404, f"no such file {file_path}")
            data = version.files[file_path] if file_path is not None else _tar_gz(version.files)
        content_type = "application/octet-stream" if file_path is not None else "application/x-gzip"
        headers = {"x-goog-hash": _md5_header(data), "Accept-Ranges": "bytes"}
        requested = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if requested:
            start = int(requested.group(1))
            end = min(int(requested.group(2) or len(data) - 1), len(data) - 1)
            if start >= len(data):
                return self._send(416, None, headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data=data[start : end + 1], headers=headers, content_type=content_type)
        return self._send(200, data=data, headers=headers, content_type=content_type)


class _StandinServer(ThreadingHTTPServer):
    """Frees 7777 on ``server_close``: reuse-address on, reuse-port off (two stand-ins must not share
    the port), and the open keep-alive connections are shut too, so none keeps serving old state."""

    allow_reuse_address = True
    allow_reuse_port = False
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (or a connection shut by ``server_close``) is not worth a traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def _port_taken_message(where: str) -> str:
    return (
        f"port {PORT} on {where} is taken (another Kaggle stand-in still running, or another process): "
        f"kagglehub's test mode (KAGGLE_API_ENVIRONMENT=TEST) only talks to http://localhost:{PORT}, so the "
        "stand-in cannot move to a free port, and tests that use it must run one at a time (not in parallel "
        "workers; stop the previous one with stop_standin first)"
    )


def _ipv6_localhost_listening() -> bool:
    """Whether something accepts on [::1]:7777, where a client resolving localhost to ::1 first goes."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.create_connection(("::1", PORT), timeout=0.5):
            return True
    except OSError:
        return False


def start_standin(state: KaggleState | None = None) -> tuple[ThreadingHTTPServer, KaggleState, str]:
    """Start the stand-in on 127.0.0.1:7777 in a daemon thread: ``(server, state, base_url)``.

    ``base_url`` is ``http://localhost:7777``, where kagglesdk's TEST environment sends every call
    (``localhost`` resolves to 127.0.0.1 here; where it resolves to ``::1`` first, urllib3 falls back to
    127.0.0.1 when nothing listens on ``::1``, which this checks). Raises :class:`PortTakenError` at once,
    never waits, when the port is taken. Stop it with :func:`stop_standin`.
    """
    state = state or KaggleState()
    handler = type("BoundKaggleHandler", (KaggleHandler,), {"state": state})
    try:
        server = _StandinServer((HOST, PORT), handler)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise PortTakenError(_port_taken_message(HOST)) from exc
        raise
    if _ipv6_localhost_listening():
        server.server_close()
        raise PortTakenError(_port_taken_message("[::1]"))
    threading.Thread(target=server.serve_forever, name="kaggle-standin", daemon=True).start()
    return server, state, BASE_URL


def stop_standin(server: ThreadingHTTPServer) -> None:
    """Stop serving and free port 7777 for the next module's stand-in."""
    server.shutdown()
    server.server_close()


# Unset (None) for a client: each would point kagglehub elsewhere (a Kaggle notebook's cache or JWT
# proxy, Colab's mounts) or give it other credentials than the token named.
_UNSET = (
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "KAGGLE_KERNEL_RUN_TYPE",
    "KAGGLE_DATA_PROXY_URL",
    "KAGGLE_API_V1_TOKEN",
    "KAGGLE_USER_SECRETS_TOKEN",
    "TBE_RUNTIME_ADDR",
)


def client_env(
    folder: str | Path, *, token: str | None = DEFAULT_TOKEN, home: str | Path | None = None
) -> dict[str, str | None]:
    """The environment a kagglehub 1.0.3 client needs to talk only to the stand-in (None: unset it).

    What kagglehub/kagglesdk read, and when (all at call time unless said):

    * ``KAGGLE_API_ENVIRONMENT=TEST``: kagglesdk's base URL becomes ``http://localhost:7777``
      (``kaggle_env.get_env``). kagglehub then also makes the client verbose: every request and
      response is printed to stdout (``clients.build_kaggle_client``); nothing turns that off.
    * ``KAGGLE_API_TOKEN``: the bearer token (``kaggle_env.get_access_token_from_env``; a value that
      is an existing path is read as a file). ``token=None`` unsets it, for a client without one.
    * ``KAGGLEHUB_CACHE``: the download cache (default ``~/.cache/kagglehub``): ``folder/cache``.
    * ``KAGGLE_CONFIG_DIR``: where kagglehub looks for a legacy ``kaggle.json``: ``folder/config``.
    * ``HOME`` (only when ``home`` is given): kagglesdk reads ``~/.kaggle/access_token``,
      ``access_token.txt`` and ``kaggle.json`` under the home folder whatever ``KAGGLE_CONFIG_DIR``
      says, so a client meant to have no token needs a home without them.
    * ``DISABLE_KAGGLE_CACHE`` / ``DISABLE_COLAB_CACHE=true``: the notebook resolvers stay off even
      on a Kaggle or Colab machine; the variables in ``_UNSET`` are unset for the same reason.
    * ``KAGGLEHUB_VERBOSITY=error`` (read once, when kagglehub is imported: matters for a subprocess).
    """
    folder = Path(folder)
    (folder / "cache").mkdir(parents=True, exist_ok=True)
    (folder / "config").mkdir(parents=True, exist_ok=True)
    env: dict[str, str | None] = {
        "KAGGLE_API_ENVIRONMENT": "TEST",
        "KAGGLE_API_TOKEN": token,
        "KAGGLEHUB_CACHE": str(folder / "cache"),
        "KAGGLE_CONFIG_DIR": str(folder / "config"),
        "DISABLE_KAGGLE_CACHE": "true",
        "DISABLE_COLAB_CACHE": "true",
        "KAGGLEHUB_VERBOSITY": "error",
        **dict.fromkeys(_UNSET),
    }
    if home is not None:
        env["HOME"] = str(home)
    return env


@contextlib.contextmanager
def client_environment(env: Mapping[str, str | None]) -> Iterator[None]:
    """``env`` (from :func:`client_env`, plus any extra variables) applied to this process's
    environment for the duration, and the earlier values restored after."""
    saved = {key: os.environ.get(key) for key in env}
    try:
        _apply(env, os.environ)
        yield
    finally:
        _apply(saved, os.environ)


def _apply(env: Mapping[str, str | None], target: dict | os._Environ) -> None:
    """Set each variable of ``env`` in ``target``, unsetting those that are None."""
    for key, value in env.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def tree_digests(root: str | Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (to compare what a download holds)."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def subprocess_env(env: Mapping[str, str | None], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with ``env`` applied: a full environment for a child process."""
    out = dict(os.environ if base is None else base)
    _apply(env, out)
    return out


__all__ = [
    "BASE_URL",
    "DEFAULT_TOKEN",
    "KaggleState",
    "PortTakenError",
    "client_env",
    "client_environment",
    "start_standin",
    "stop_standin",
    "subprocess_env",
    "tree_digests",
]
