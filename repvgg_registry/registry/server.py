"""Serve a local hub over HTTP the way tensorflow_hub's resolver expects.

``GET /<ns>/<variant>/<task>/<N>?tf-hub-format=compressed`` returns the version's .tar.gz (with
Content-Length, a strong ETag from its sha256 and immutable caching: a published version never
changes, and tensorflow_hub caches a URL forever). The same path without the query returns a small
page about the model, ``GET /`` lists the hub and ``GET /index.json`` gives the index. Only handles
listed in the index are served, parsed segment by segment, so ``..``, encoded dots, absolute paths
and symlinks cannot reach anything else.
"""

from __future__ import annotations

import html
import json
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .hub import Handle, NotPublishedError
from .local import LocalHub

_CHUNK = 1 << 20


class HubRequestHandler(BaseHTTPRequestHandler):
    server_version = "repvgg-registry"
    protocol_version = "HTTP/1.1"
    hub: LocalHub  # set on the subclass made by make_server

    # ----- plumbing ----------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # one line per request
        sys.stderr.write(f"{self.address_string()} {self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")

    def do_GET(self) -> None:
        self._handle(send_body=True)

    def do_HEAD(self) -> None:
        self._handle(send_body=False)

    def _send(self, status: int, body: bytes, content_type: str, send_body: bool, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _error(self, status: int, message: str, send_body: bool) -> None:
        self._send(status, (message + "\n").encode(), "text/plain; charset=utf-8", send_body)

    # ----- routing -----------------------------------------------------------------------
    def _handle(self, send_body: bool) -> None:
        parts = urlsplit(self.path)
        raw_path = parts.path
        if "%" in raw_path or "\\" in raw_path or "/../" in raw_path + "/" or "/./" in raw_path + "/":
            return self._error(HTTPStatus.BAD_REQUEST, "refused: encoded or relative path", send_body)
        if raw_path.startswith("//"):
            return self._error(HTTPStatus.BAD_REQUEST, "refused: absolute path", send_body)
        if raw_path in ("/", ""):
            return self._send(HTTPStatus.OK, self._listing().encode(), "text/html; charset=utf-8", send_body)
        if raw_path == "/index.json":
            body = json.dumps([v.to_dict() for v in self.hub.all_versions()], indent=2).encode()
            return self._send(HTTPStatus.OK, body, "application/json", send_body)
        try:
            handle = Handle.parse(raw_path)
            entry = self.hub.entry(handle)
        except (ValueError, NotPublishedError):
            return self._error(HTTPStatus.NOT_FOUND, f"not found: {raw_path}", send_body)
        query = parse_qs(parts.query)
        if query.get("tf-hub-format") == ["compressed"]:
            return self._archive(handle, entry, send_body)
        return self._send(
            HTTPStatus.OK, self._model_page(handle, entry).encode(), "text/html; charset=utf-8", send_body
        )

    def _archive(self, handle: Handle, entry: dict, send_body: bool) -> None:
        _, archive, _ = self.hub.paths(handle)
        root = self.hub.root.resolve()
        real = archive.resolve()
        if archive.is_symlink() or root not in real.parents or not real.is_file():
            return self._error(HTTPStatus.NOT_FOUND, f"not found: {handle}", send_body)
        etag = f'"{entry["sha256"]}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        size = real.stat().st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(size))
        self.send_header("ETag", etag)
        self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        self.send_header(
            "Content-Disposition", f'attachment; filename="{handle.variant}-{handle.task}-{handle.version}.tar.gz"'
        )
        self.end_headers()
        if send_body:
            with open(real, "rb") as handle_file:
                while chunk := handle_file.read(_CHUNK):
                    self.wfile.write(chunk)
        return None

    # ----- pages -------------------------------------------------------------------------
    def _listing(self) -> str:
        rows = "".join(
            f'<tr><td><a href="/{html.escape(str(v.handle))}">{html.escape(str(v.handle))}</a></td>'
            f"<td>{html.escape(v.created)}</td><td>{html.escape(v.weights_source)}</td>"
            f"<td><code>{v.sha256[:12]}</code></td></tr>"
            for v in self.hub.all_versions()
        )
        return (
            "<!doctype html><title>repvgg-registry hub</title><h1>repvgg-registry hub</h1>"
            "<table><tr><th>handle</th><th>created</th><th>weights</th><th>sha256</th></tr>"
            f"{rows}</table>"
        )

    def _model_page(self, handle: Handle, entry: dict) -> str:
        folder, _, _ = self.hub.paths(handle)
        try:
            meta = json.loads((folder / "metadata.json").read_text())
        except (OSError, ValueError):
            meta = {}
        host = self.headers.get("Host", "127.0.0.1")
        url = f"http://{host}/{handle}"
        facts = "".join(
            f"<li>{html.escape(k)}: {html.escape(str(v))}</li>"
            for k, v in (
                ("variant", meta.get("display_name")),
                ("task", handle.task),
                ("version", handle.version),
                ("input", "float32 [batch, height, width, 3], RGB in [0, 1]"),
                ("output", meta.get("output")),
                ("weights", entry.get("weights_source")),
                ("archive sha256", entry.get("sha256")),
                ("created", entry.get("created")),
            )
        )
        return (
            f"<!doctype html><title>{html.escape(str(handle))}</title><h1>{html.escape(str(handle))}</h1>"
            f"<ul>{facts}</ul><pre>import tensorflow_hub as hub\n"
            f'layer = hub.KerasLayer("{html.escape(url)}", trainable=True)</pre>'
            f'<p><a href="/{html.escape(str(handle))}?tf-hub-format=compressed">download .tar.gz</a></p>'
        )


def make_server(hub: LocalHub, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A threaded server for ``hub`` (port 0 picks a free port: see ``server.server_address``)."""
    handler = type("BoundHubRequestHandler", (HubRequestHandler,), {"hub": hub})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(hub: LocalHub, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start a server in a background thread; returns it and its base URL (tests, notebooks)."""
    server = make_server(hub, host, port)
    threading.Thread(target=server.serve_forever, name="repvgg-hub-server", daemon=True).start()
    time.sleep(0.01)
    return server, f"http://{server.server_address[0]}:{server.server_address[1]}"
