"""Serve a local hub over HTTP the way tensorflow_hub's resolver expects, on Starlette and uvicorn.

Why not ``http.server``: its own documentation says it "is not recommended for production" (it
implements only basic security checks). It has no request limits, no idle timeouts (one silent
client holds a thread forever), no ranges and one thread per connection. uvicorn parses requests
with h11 (a malformed one gets a 400), closes idle keep-alive connections, logs through ``logging``
and runs N worker processes on one socket; Starlette's ``FileResponse`` streams files, answers
``Range`` and stops reading when the client goes away. Two gaps are closed here: URL and header
sizes are bounded (414 / 431; h11 bounds only a request head that arrives in pieces), and a
connection that never sends a complete request is closed too (uvicorn times out only between
requests).

Routes (HEAD works on each)::

    GET /                                            an HTML listing of the hub
    GET /index.json                                  the published versions (no server paths)
    GET /<ns>/<model>/<task>/<N>?tf-hub-format=compressed   the version's .tar.gz (tensorflow_hub)
    GET /<ns>/<model>/<task>/<N>                     a page about the model
    GET /<ns>/<model>/<task>/<N>.tar.gz              the same archive, under the name static hosting uses
    GET /<ns>/<model>/<task>/<N>.keras               the Keras 3 file (keras.saving.load_model)
    GET /<ns>/<model>/<task>/<N>?lite-format=tflite  the LiteRT file (as tfhub.dev served them)
    GET /<ns>/<model>/<task>/<N>.tflite              the same, by name
    GET /<ns>/<model>/<task>/<N>.int8.tflite         the int8 LiteRT file (built with --int8-calibration)
    GET /<ns>/<model>/<task>/<N>.onnx                the ONNX file

``<task>-serving`` handles are the inference-only SavedModels: their archive is served like any
other, and their page shows TF Serving and ``tf.saved_model.load`` (they have no reusable ``__call__``).

The ``train`` task is the multi-branch train form, a ``.keras`` file only: its ``.tar.gz`` and its
``?tf-hub-format=compressed`` are 404s that say so, and its page shows the Keras snippet alone.

Files are served with a strong ETag (the sha256 the index records), ``immutable`` caching (a
published version never changes, and tensorflow_hub caches a URL forever) and ``Range``. Only
handles the index lists are served, each parsed segment by segment, and a file must be a regular
file, not a symlink, whose real path is inside the hub root; encoded, relative or absolute paths are
refused before routing. A broken index gets a one-line 500 and the server keeps serving. Each request is one
log line (timestamp, client, method, target, status, bytes), control characters escaped.
"""

from __future__ import annotations

import html
import json
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import HubError, first_line, one_line
from ..hashing import sha256_file
from ..publish.card import RANDOM_WEIGHTS_BANNER
from ..publish.tasks import FEATURE_MAPS, OUTPUT_KEYS, base_task, describe_output, has_savedmodel, is_serving
from .hub import Handle
from .local import HUB_ENV, LocalHub

__all__ = [
    "FILE_KINDS",
    "FileKind",
    "HubServer",
    "app_from_environment",
    "make_app",
    "make_server",
    "run_server",
    "serve_in_thread",
]

#: Seconds an idle connection stays open, before its first request or between requests.
KEEP_ALIVE_S = 5
#: Seconds a shutdown waits for downloads in flight before cancelling them.
GRACEFUL_SHUTDOWN_S = 10
#: Longest request target (path and query) and total header bytes accepted (nginx's defaults: 8k, 4 x 8k).
MAX_TARGET = 8 * 1024
MAX_HEADERS = 32 * 1024
_LOGGED_TARGET = 1024
BACKLOG = 2048
#: Open connections beyond which new requests get a 503 instead of exhausting file descriptors.
MAX_CONNECTIONS = 512
IMMUTABLE = "public, max-age=31536000, immutable"
#: The scope key where an endpoint leaves a one-line remark for its access log line.
_NOTE = "repvgg_registry.note"

Log = Callable[[str], None]


def _stderr_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class FileKind:
    """A file of each version, ``<task dir>/<N>.<suffix>`` next to its manifest, served at
    ``/<handle>.<suffix>``.

    ``role`` names the :class:`~repvgg_registry.publish.release.ArtifactFiles` field that owns the
    file's path, so a task without that file (``train`` has no archive) is a clean 404. ``index_key``
    names the index field holding its sha256 (the ETag); a version whose entry lacks it has no such
    file (it was published before the kind existed). Without an ``index_key`` the file is hashed
    once and the digest cached (versions are immutable)."""

    suffix: str
    media_type: str
    index_key: str | None = None
    role: str | None = None
    #: why a version's entry lacks the file (the 404's hint)
    absent: str = "this version was published before .keras files existed"

    @property
    def label(self) -> str:
        """What /index.json calls it: ``archive_url``, ``keras_url``."""
        return self.role or self.suffix.replace(".", "_")


_NOT_BUILT = "this version has none (published before they existed, or built without --formats {})"
#: One line per file kind.
FILE_KINDS: tuple[FileKind, ...] = (
    FileKind("tar.gz", "application/gzip", "sha256", "archive"),
    # A .keras file is a zip inside, but only Keras should open it: no media type invites unpacking.
    FileKind(
        "keras",
        "application/octet-stream",
        "keras_sha256",
        "keras",
        "this version was published before .keras files existed",
    ),
    # before "tflite": the route "{version}.tflite" would also match "1.int8.tflite"
    FileKind(
        "int8.tflite",
        "application/octet-stream",
        "tflite_int8_sha256",
        "tflite_int8",
        "this version has none (it was built without --int8-calibration)",
    ),
    FileKind("tflite", "application/octet-stream", "tflite_sha256", "tflite", _NOT_BUILT.format("tflite")),
    FileKind("onnx", "application/octet-stream", "onnx_sha256", "onnx", _NOT_BUILT.format("onnx")),
)
_ARCHIVE, _KERAS, _INT8, _TFLITE, _ONNX = FILE_KINDS


# ----- the index, read defensively ------------------------------------------------------------
def _published(hub: LocalHub) -> tuple[dict[Handle, dict], list[str]]:
    """The index's entries by handle, and the problems of the entries that were skipped.

    LocalHub.read_index skips (and names in ``index_warnings``) entries that are malformed, and
    raises HubStateError for an index it cannot read at all: that becomes a 500 for this request,
    never a dropped connection, and the next request reads the index again."""
    published: dict[Handle, dict] = {}
    for entry in hub.read_index():
        try:
            published.setdefault(Handle.parse(entry["handle"]), entry)
        except (KeyError, TypeError, ValueError):  # read_index already skips these; never fatal here
            continue
    return published, list(getattr(hub, "index_warnings", ()))


def _public_entry(handle: Handle, entry: dict, base_url: str, kinds: list[FileKind]) -> dict:
    """An index entry as /index.json shows it: what a client needs, no server paths, and the URL of
    each file the handle serves (``archive_url``, ``keras_url``)."""
    row = {
        "handle": str(handle),
        "namespace": handle.namespace,
        "variant": handle.variant,
        "task": handle.task,
        "version": handle.version,
    }
    optional = [f"{kind.role}_{fact}" for kind in FILE_KINDS[1:] for fact in ("sha256", "size")]
    kept = ("created", "weights_source", "sha256", "archive_size", "manifest_sha256", *optional)
    row.update({k: entry[k] for k in kept if k in entry})
    row.update({f"{kind.label}_url": _file_url(base_url, handle, kind) for kind in kinds})
    return row


def _file_url(base_url: str, handle: Handle, kind: FileKind) -> str:
    """Where ``kind`` of ``handle`` is served; ``base_url`` ends with ``/`` (Starlette's ``base_url``)."""
    return f"{base_url}{handle}.{kind.suffix}"


def _regular_file_inside(root: Path, path: Path) -> tuple[Path, os.stat_result] | None:
    """``path`` resolved and its stat, if it is a regular file inside ``root`` that is not itself a
    symlink and whose resolved path stays inside ``root``; else None."""
    try:
        if path.is_symlink():
            return None
        real = path.resolve(strict=True)
        if root.resolve() not in real.parents:
            return None
        result = os.stat(real)
    except OSError:
        return None
    return (real, result) if stat.S_ISREG(result.st_mode) else None


@lru_cache(maxsize=256)
def _sha256_once(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of an immutable file, keyed by what would change if it were rewritten."""
    return sha256_file(path)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison over a list of tags (or ``*``)."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _note_skipped(request: Request, skipped: list[str]) -> None:
    if skipped:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        request.scope[_NOTE] = f"index.json {skipped[0]}{more}: skipped"


# ----- pages -----------------------------------------------------------------------------------
def _text(status: int, message: str, headers: dict[str, str] | None = None) -> PlainTextResponse:
    """Every error body is one escaped line."""
    return PlainTextResponse(one_line(message) + "\n", status, headers=headers)


def _output_fact(meta: dict) -> str | None:
    """``logits [batch, 1000]`` or ``feature_vector [batch, 1280]`` from metadata.json's ``output``."""
    output = meta.get("output")
    if not isinstance(output, dict) or not isinstance(output.get("name"), str):
        return None
    return describe_output(output)


def _input_fact(meta: dict) -> str:
    fact = "images float32 [batch, height, width, 3], RGB in [0, 1]"
    size = meta.get("input", {}).get("default_size") if isinstance(meta.get("input"), dict) else None
    return f"{fact}, default size {size}x{size}" if isinstance(size, int) else fact


def _number(value: object, unit: str = "", digits: int = 0) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return f"{value:,.{digits}f}{unit}"


def _size(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return f"{value / 1e6:.1f} MB ({value:,} bytes)"


def _random_weights(meta: dict) -> bool:
    weights = meta.get("weights")
    return isinstance(weights, dict) and weights.get("source") == "random"


_TRAIN_NOTE = (
    "<p>The multi-branch train form with its head: fine-tune it, then fuse it into the deploy form "
    "(one 3x3 conv per block) with <code>repvgg_registry.variants.fusion.fuse</code>.</p>"
)


def _keras_only(handle: Handle) -> str:
    """Why a handle without a SavedModel has no TF Hub archive, and where its file is."""
    return (
        f"{handle.task} is a .keras-only artifact (the multi-branch train form, no SavedModel): "
        f"GET /{handle}.{_KERAS.suffix}"
    )


def _keras_snippet(handle: Handle, url: str, sha256: str) -> str:
    """Keras 3 loading the ``.keras`` file. ``get_file`` caches by file name, and every handle's
    file is ``<N>.keras``: without ``fname`` the second handle would load the first one's cached
    file. ``file_hash`` makes a stale or partial cached copy download again."""
    name = f"{str(handle).replace('/', '-')}.{_KERAS.suffix}"
    lines = [
        "import keras",
        f'path = keras.utils.get_file("{name}", origin="{url}", file_hash="{sha256}")',
        "model = keras.saving.load_model(path)",
    ]
    if not has_savedmodel(handle.task):
        lines += [
            "# ... fine-tune model (the multi-branch train form), then fuse it into the deploy form:",
            "from repvgg_registry.variants.fusion import fuse",
            "deployed = fuse(model)",
        ]
    return "\n".join(lines)


def _tf_hub_snippet(url: str, task: str) -> str:
    """tf_keras loading the SavedModel through tensorflow_hub (the handle URL, not a file); for
    feature maps, how to take the levels a neck wants from its dict."""
    snippet = f'import tensorflow_hub as hub\nlayer = hub.KerasLayer("{url}", trainable=True)'
    if task == FEATURE_MAPS:
        snippet += '\nmaps = layer(images)  # a dict: maps["stride_8"], maps["stride_16"], maps["stride_32"], ...'
    return snippet


_SERVING_NOTE = (
    "<p>An inference-only SavedModel (weights as graph constants, <code>serving_default</code> only): "
    "for TF Serving, whose <code>--model_base_path</code> is this task's folder in the hub. "
    "It cannot be fine-tuned.</p>"
)


def _serving_snippet(url: str, task: str) -> str:
    """tf_keras calling the serving SavedModel's signature through tensorflow_hub (it has no
    reusable ``__call__``, so ``signature`` and ``output_key`` are needed)."""
    outputs = (
        "signature_outputs_as_dict=True" if base_task(task) == FEATURE_MAPS else f'output_key="{OUTPUT_KEYS[task][0]}"'
    )
    return f'import tensorflow_hub as hub\nlayer = hub.KerasLayer("{url}", signature="serving_default", {outputs})'


def _tflite_snippet(handle: Handle, url: str) -> str:
    """LiteRT: the ``.tflite`` file in the ``ai-edge-litert`` interpreter (``fname``: see
    :func:`_keras_snippet`)."""
    name = f"{str(handle).replace('/', '-')}.{_TFLITE.suffix}"
    return "\n".join(
        [
            "import keras",
            "from ai_edge_litert.interpreter import Interpreter",
            f'path = keras.utils.get_file("{name}", origin="{url}")',
            "run = Interpreter(path, num_threads=2).get_signature_runner()",
            f'y = run(images=images)["{OUTPUT_KEYS[handle.task][0]}"]',
        ]
    )


def _code(snippet: str) -> str:
    """A snippet as HTML; quotes stay as they are (nothing here is an attribute)."""
    return f"<pre>{html.escape(snippet, quote=False)}</pre>"


def _download_links(handle: Handle, kinds: list[FileKind]) -> str:
    """A link to each file ``handle`` serves (the page and the listing show the same ones)."""
    name = html.escape(str(handle))
    return " ".join(f'<a href="/{name}.{kind.suffix}">{name}.{kind.suffix}</a>' for kind in kinds)


def _custom_facts(meta: dict, entry: dict) -> list[tuple[str, str | None]]:
    """For a model published under its own ``--name`` or with its own classes: what it is built
    on and what its classes are (the page otherwise reads like the variant's ImageNet release)."""
    output = meta.get("output") if isinstance(meta.get("output"), dict) else {}
    base = entry.get("base_variant") or meta.get("base_variant")
    labels = output.get("labels_source")
    if not isinstance(base, str) or (entry.get("variant") == base.lower() and labels in (None, "imagenet-1k")):
        return []
    classes = output.get("num_classes")
    return [
        ("model", entry.get("variant")),
        ("base variant", f"RepVGG-{base}"),
        ("classes", f"{classes} ({labels})" if isinstance(classes, int) and isinstance(labels, str) else None),
    ]


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<h1>{html.escape(title)}</h1>{body}\n",
        headers={"Cache-Control": "no-cache"},
    )


def _usage(base: str, handle: Handle, entry: dict, kinds: list[FileKind]) -> str:
    """How to load it: Keras 3 and the ``.keras`` file first (every task has one, unless published
    before .keras files existed), then tf_keras and the TF Hub handle (SavedModel tasks only)."""
    parts = [] if has_savedmodel(handle.task) else [_TRAIN_NOTE]
    if _KERAS in kinds:
        parts.append(_code(_keras_snippet(handle, _file_url(base, handle, _KERAS), entry[_KERAS.index_key])))
    if is_serving(handle.task):
        parts.append(_SERVING_NOTE)
        parts.append(_code(_serving_snippet(f"{base}{handle}", handle.task)))
    elif has_savedmodel(handle.task):
        parts.append(_code(_tf_hub_snippet(f"{base}{handle}", handle.task)))
    if _TFLITE in kinds:
        parts.append(_code(_tflite_snippet(handle, _file_url(base, handle, _TFLITE))))
    parts.append(f"<p>download {_download_links(handle, kinds)}</p>")
    return "".join(parts)


def _file_facts(entry: dict, kinds: list[FileKind]) -> list[tuple[str, str | None]]:
    """Size and sha256 of each file served. ``sha256`` and ``archive_size`` are the archive's
    only where there is one (for ``train`` they repeat the .keras file's)."""
    facts: list[tuple[str, str | None]] = []
    if _ARCHIVE in kinds:
        facts += [("archive", _size(entry.get("archive_size"))), ("archive sha256", entry["sha256"])]
    for kind in FILE_KINDS[1:]:
        if kind in kinds:
            name = f".{kind.suffix}"
            facts += [(name, _size(entry.get(f"{kind.role}_size"))), (f"{name} sha256", entry[kind.index_key])]
    return facts


# ----- the application -------------------------------------------------------------------------
class _Endpoints:
    """The routes of one hub. Plain (sync) functions: Starlette runs them in its thread pool, so
    reading the index or metadata never blocks the event loop that streams downloads."""

    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub

    def routes(self) -> list[Route]:
        files = [
            Route(f"/{{namespace}}/{{model}}/{{task}}/{{version}}.{kind.suffix}", self._file_endpoint(kind))
            for kind in FILE_KINDS
        ]
        return [
            Route("/", self.listing),
            Route("/index.json", self.index_json),
            *files,  # before the bare handle, whose last segment would also match "1.tar.gz"
            Route("/{namespace}/{model}/{task}/{version}", self.handle),
        ]

    # ----- endpoints ---------------------------------------------------------------------------
    def listing(self, request: Request) -> Response:
        published, skipped = _published(self.hub)
        rows = "".join(
            f'<tr><td><a href="/{html.escape(str(h))}">{html.escape(str(h))}</a></td>'
            f"<td>{html.escape(e['created'])}</td><td>{html.escape(e['weights_source'])}</td>"
            f"<td><code>{html.escape(e['sha256'][:12])}</code></td>"
            f"<td>{_download_links(h, self._kinds(h, e))}</td></tr>"
            for h, e in sorted(published.items())
        )
        note = f"<p>{len(skipped)} malformed index entries are not served.</p>" if skipped else ""
        _note_skipped(request, skipped)
        head = "<tr><th>handle</th><th>created</th><th>weights</th><th>sha256</th><th>files</th></tr>"
        return _page("repvgg-registry hub", f"{note}<table>{head}{rows}</table>")

    def index_json(self, request: Request) -> Response:
        published, skipped = _published(self.hub)
        _note_skipped(request, skipped)
        base = str(request.base_url)
        rows = [_public_entry(h, e, base, self._kinds(h, e)) for h, e in sorted(published.items())]
        return Response(
            json.dumps(rows, indent=2) + "\n", media_type="application/json", headers={"Cache-Control": "no-cache"}
        )

    def handle(self, request: Request) -> Response:
        handle, published = self._lookup(request)
        if isinstance(handle, Response):
            return handle
        formats = request.query_params.getlist("tf-hub-format")
        if formats and not has_savedmodel(handle.task):  # any format: none of them would load it
            return _text(404, f"not found: {handle}?tf-hub-format={formats[-1][:80]}; {_keras_only(handle)}")
        if formats == ["compressed"]:
            return self._file(request, handle, published[handle], _ARCHIVE)
        if formats:
            return _text(
                400,
                f"unsupported tf-hub-format '{formats[-1][:80]}': this server serves only tf-hub-format=compressed "
                "(the .tar.gz archive); unset TFHUB_MODEL_LOAD_FORMAT or set it to COMPRESSED",
            )
        lite = request.query_params.getlist("lite-format")
        if lite == ["tflite"]:
            return self._file(request, handle, published[handle], _TFLITE)
        if lite:
            return _text(400, f"unsupported lite-format '{lite[-1][:80]}': this server serves lite-format=tflite")
        return self._model_page(request, handle, published[handle])

    def _file_endpoint(self, kind: FileKind) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            handle, published = self._lookup(request, f".{kind.suffix}")
            if isinstance(handle, Response):
                return handle
            return self._file(request, handle, published[handle], kind)

        endpoint.__name__ = f"file_{kind.suffix.replace('.', '_')}"
        return endpoint

    # ----- helpers -----------------------------------------------------------------------------
    def _lookup(self, request: Request, suffix: str = "") -> tuple[Handle | Response, dict[Handle, dict]]:
        """The published handle a request names, or a 404 that lists the versions that exist."""
        params = request.path_params
        text = f"{params['namespace']}/{params['model']}/{params['task']}/{params['version']}"
        published, _ = _published(self.hub)
        try:
            handle = Handle.parse(text)
        except ValueError:
            return _text(404, f"not found: {request.url.path}"), published
        if handle in published:
            return handle, published
        versions = sorted(
            h.version
            for h in published
            if (h.namespace, h.variant, h.task) == (handle.namespace, handle.variant, handle.task)
        )
        model = f"{handle.namespace}/{handle.variant}/{handle.task}"
        known = (
            f"published versions: {', '.join(map(str, versions))}" if versions else f"nothing is published as {model}"
        )
        return _text(404, f"not found: {handle}{suffix}; {known}"), published

    def _kinds(self, handle: Handle, entry: dict) -> list[FileKind]:
        """The file kinds ``handle`` serves: those its task has and its index entry records."""
        roles = self.hub.paths(handle).roles()
        return [
            kind
            for kind in FILE_KINDS
            if (kind.role is None or kind.role in roles) and (kind.index_key is None or kind.index_key in entry)
        ]

    def _file(self, request: Request, handle: Handle, entry: dict, kind: FileKind) -> Response:
        files = self.hub.paths(handle)
        missing = f"not found: {handle}.{kind.suffix}"
        if kind.role is not None and kind.role not in files.roles():
            hint = _keras_only(handle) if not has_savedmodel(handle.task) else f"a {handle.task} artifact has none"
            return _text(404, f"{missing}; {hint}")
        if kind.index_key is not None and kind.index_key not in entry:
            return _text(404, f"{missing}; {kind.absent}")
        target = files.roles()[kind.role] if kind.role else files.manifest.with_name(f"{handle.version}.{kind.suffix}")
        found = _regular_file_inside(self.hub.root, target)
        if found is None:
            request.scope[_NOTE] = "listed in the index, but its file is missing, a symlink or outside the hub"
            return _text(404, missing)
        path, result = found
        digest = entry.get(kind.index_key) if kind.index_key else None
        if not isinstance(digest, str):
            digest = _sha256_once(str(path), result.st_size, result.st_mtime_ns)
        etag = f'"{digest}"'
        headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "Accept-Ranges": "bytes"}
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        # FileResponse answers Range (206 with Content-Range, 416 when unsatisfiable) and If-Range
        # against this ETag; it stops reading when the client disconnects.
        return FileResponse(
            path,
            headers=headers,
            media_type=kind.media_type,
            filename=f"{handle.variant}-{handle.task}-{handle.version}.{kind.suffix}",
            stat_result=result,
        )

    def _metadata(self, handle: Handle) -> dict:
        """The SavedModel's metadata.json; for ``train``, which has no folder, its manifest (which
        carries the same ``output`` and ``weights``)."""
        files = self.hub.paths(handle)
        source = files.folder / "metadata.json" if files.folder is not None else files.manifest
        found = _regular_file_inside(self.hub.root, source)
        if found is None:
            return {}
        try:
            meta = json.loads(found[0].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def _model_page(self, request: Request, handle: Handle, entry: dict) -> Response:
        meta = self._metadata(handle)
        kinds = self._kinds(handle, entry)
        display = meta.get("display_name") if isinstance(meta.get("display_name"), str) else handle.variant
        facts = [
            ("variant", display),
            *_custom_facts(meta, entry),
            ("task", handle.task),
            ("version", str(handle.version)),
            ("input", _input_fact(meta)),
            ("output", _output_fact(meta)),
            ("output stride", _number(meta.get("output_stride"))),
            ("parameters", _number(meta.get("params"))),
            ("GMACs at 224x224", _number(meta.get("gmacs_224"), digits=2)),
            ("ImageNet top-1 (paper)", _number(meta.get("top1"), "%", 2)),
            ("weights", entry["weights_source"]),
            ("license", meta.get("license") if isinstance(meta.get("license"), str) else None),
            *_file_facts(entry, kinds),
            ("created", entry["created"]),
        ]
        items = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in facts if v is not None)
        banner = f'<p role="alert"><strong>{RANDOM_WEIGHTS_BANNER}</strong></p>' if _random_weights(meta) else ""
        usage = _usage(str(request.base_url), handle, entry, kinds)
        return _page(str(handle), f"{banner}<ul>{items}</ul>{usage}")


def _refusal(scope: Scope, raw_path: str) -> tuple[int, str] | None:
    """(status, reason) when a request is refused before routing, else None.

    h11 bounds a request head only while it is still arriving; one read (up to 256 kB) is parsed
    whole, so the URL and header sizes are bounded here too. Handles never need ``%``, ``\\``, dot
    segments or an empty first segment: any of them is an attempt to reach something else."""
    target = len(raw_path) + len(scope.get("query_string", b""))
    if target > MAX_TARGET:
        return 414, f"refused: the URL is {target} bytes; the limit is {MAX_TARGET}"
    head = sum(len(name) + len(value) for name, value in scope.get("headers", ()))
    if head > MAX_HEADERS:
        return 431, f"refused: the headers are {head} bytes; the limit is {MAX_HEADERS}"
    if "%" in raw_path or "\\" in raw_path:
        return 400, "refused: encoded path"
    if raw_path.startswith("//"):
        return 400, "refused: absolute path"
    if any(segment in (".", "..") for segment in raw_path.split("/")):
        return 400, "refused: relative path"
    return None


class _AccessLog:
    """Pure ASGI middleware: exactly one line per request, written when the response ends (or the
    client leaves), with the bytes actually sent. Paths that try to leave the hub are refused here,
    before routing."""

    def __init__(self, app: ASGIApp, log: Log) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 0, "bytes": 0, "done": False, "gone": False}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                if scope["method"] != "HEAD":
                    state["bytes"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
            await send(message)

        async def watching_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not state["done"]:
                state["gone"] = True
            return message

        raw_path = scope.get("raw_path", scope["path"].encode())
        raw_path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else raw_path
        try:
            refusal = _refusal(scope, raw_path)
            if refusal:
                status, reason = refusal
                close = {"Connection": "close"} if status != 400 else None  # what else it sent is unread
                await _text(status, reason, close)(scope, watching_receive, counting_send)
            else:
                await self.app(scope, watching_receive, counting_send)
        finally:
            note = scope.get(_NOTE) or ("client disconnected" if state["gone"] else "")
            if not state["status"]:
                note = note or "no response (the server log has the traceback)"
            self.log(_log_line(scope, raw_path, state["status"] or 500, state["bytes"], started, note))


def _log_line(scope: Scope, raw_path: str, status: int, sent: int, started: float, note: str = "") -> str:
    """``<ISO time> <client> <METHOD> <target> <status> <bytes> <ms>ms[ -- note]``, control characters
    escaped (a request line could otherwise rewrite the operator's terminal)."""
    client = scope.get("client")
    who = f"{client[0]}:{client[1]}" if client else "-"
    query = scope.get("query_string", b"")
    target = raw_path + ("?" + query.decode("latin-1") if query else "")
    if len(target) > _LOGGED_TARGET:
        target = f"{target[:_LOGGED_TARGET]}...({len(target)} bytes)"
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    line = f"{stamp} {who} {scope['method']} {target} {status} {sent} {(time.perf_counter() - started) * 1e3:.0f}ms"
    return one_line(f"{line} -- {note}" if note else line)


def _hub_error(request: Request, exc: Exception) -> Response:
    """A broken index answers 500 for this request; the reason goes to the log, not to clients
    (it names server paths)."""
    request.scope[_NOTE] = first_line(exc)
    return _text(500, "server error: the hub's index is unreadable; the server log says why")


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _text(404, f"not found: {request.url.path}")
    return _text(exc.status_code, f"{exc.status_code} {exc.detail}", headers=exc.headers)


def _server_error(request: Request, exc: Exception) -> Response:
    return _text(500, "server error; the server log has the traceback")


def make_app(hub: LocalHub, log: Log = _stderr_line) -> Starlette:
    """The ASGI app serving ``hub``; ``log`` receives one line per request."""
    app = Starlette(
        routes=_Endpoints(hub).routes(),
        middleware=[Middleware(_AccessLog, log=log)],
        exception_handlers={HubError: _hub_error, HTTPException: _http_error, Exception: _server_error},
        max_body_size=0,  # every route is GET/HEAD
    )
    app.router.redirect_slashes = False  # "/<handle>/" is not a second name for anything
    return app


def app_from_environment() -> Starlette:
    """App factory for uvicorn's worker processes (and ``uvicorn --factory``): serves the hub at
    ``$REPVGG_REGISTRY_HUB`` (the default hub folder if unset)."""
    return make_app(LocalHub())


# ----- uvicorn ---------------------------------------------------------------------------------
class _H11Protocol(H11Protocol):
    """uvicorn's h11 protocol with an idle timeout before every request head.

    uvicorn arms its keep-alive timer only after a response and cancels it on the next byte, so a
    client that connects and sends nothing, or dribbles a request line, would hold its connection
    forever. Here a connection is closed unless a complete request head arrives within
    ``timeout_keep_alive`` seconds of opening or of the previous response."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        cycle = self.cycle
        self.loop.call_later(self.timeout_keep_alive, self._close_if_no_request, cycle)

    def _close_if_no_request(self, armed: object) -> None:
        waiting = self.cycle is armed and (armed is None or self.cycle.response_complete)
        if waiting and not self.transport.is_closing():
            self.transport.close()


LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(message)s", "datefmt": "%Y-%m-%dT%H:%M:%S%z"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}},
    "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False}},
}


def _config(app: ASGIApp | str, workers: int = 1) -> uvicorn.Config:
    """uvicorn's settings: h11 (the same parser everywhere), our access log instead of its own
    (which has no time or byte count), its warnings timestamped, short keep-alive."""
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        http=_H11Protocol,
        ws="none",
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_config=LOG_CONFIG,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        headers=[("Server", "repvgg-registry")],
        backlog=BACKLOG,
    )


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, made here rather than by uvicorn: port 0's real port is known (and
    connections queue) before the start line is printed, and worker processes share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class HubServer:
    """A bound socket and the uvicorn server for it: ``serve_forever()`` in this thread (Ctrl-C
    stops it), or ``start()`` in a daemon thread and ``shutdown()`` (tests, notebooks)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.socket = _bind(host, port)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self.url = _url(self.socket)
        self.server = uvicorn.Server(_config(app))
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self, timeout_s: float = 30.0) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="repvgg-hub-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise HubError(f"the hub server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def shutdown(self) -> None:
        """Stop serving; waits for the server thread (downloads in flight get a grace period)."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(GRACEFUL_SHUTDOWN_S + 5)

    def server_close(self) -> None:
        self.socket.close()


def make_server(hub: LocalHub, host: str = "127.0.0.1", port: int = 8000, log: Log = _stderr_line) -> HubServer:
    """A server for ``hub``, bound but not yet serving (port 0 picks a free port: ``server_address``)."""
    return HubServer(make_app(hub, log), host, port)


def serve_in_thread(
    hub: LocalHub, host: str = "127.0.0.1", port: int = 0, log: Log = _stderr_line
) -> tuple[HubServer, str]:
    """Serve ``hub`` from a daemon thread; returns the server (``.shutdown()`` stops it) and its URL."""
    server = make_server(hub, host, port, log).start()
    return server, server.url


def run_server(
    hub_root: Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log: Log = _stderr_line
) -> None:
    """Serve the hub at ``hub_root`` until Ctrl-C or SIGTERM; what ``repvgg-registry serve`` runs.

    ``log`` gets the start line (``serving <root> on http://HOST:PORT/``, with the real port when
    ``port`` is 0) and, with one worker, every access line. ``workers > 1`` starts that many uvicorn
    worker processes on one shared socket; each builds its app from ``app_from_environment`` (the hub
    root travels in ``$REPVGG_REGISTRY_HUB``) and writes its access lines to stderr. Raises OSError
    when the address cannot be bound."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    root = Path(hub_root).expanduser()
    if workers == 1:
        server = make_server(LocalHub(root), host, port, log)
        log(f"serving {root} on {server.url}/ (Ctrl-C to stop)")
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return
    from uvicorn.supervisors import Multiprocess

    os.environ[HUB_ENV] = str(root)
    sock = _bind(host, port)
    log(f"serving {root} on {_url(sock)}/ with {workers} workers (Ctrl-C to stop)")
    try:
        Multiprocess(_config(f"{__name__}:app_from_environment", workers), sockets=[sock]).run()
    finally:
        sock.close()
