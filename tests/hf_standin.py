"""A small in-repo stand-in for the Hugging Face Hub, speaking its documented wire protocol on
127.0.0.1 (no open-source server implements uploads, commits and tags, and the real hub cannot be
reached from CI). It is driven by the real ``huggingface_hub`` client through ``endpoint=``.

Implemented: ``POST /api/repos/create``; ``GET /api/models/{id}[/revision/{rev}]``;
``GET /api/models/{id}/refs``; ``GET /api/models/{id}/tree/{rev}[/{path}]``;
``POST /api/models/{id}/preupload/{rev}`` (large and binary files go to LFS);
``POST /{id}.git/info/lfs/objects/batch`` with basic PUT uploads and a verify action;
``POST /api/validate-yaml``; the NDJSON ``POST /api/models/{id}/commit/{rev}`` (``header``,
``file``, ``lfsFile``, ``deletedFile``; ``parentCommit`` enforced with 412);
``POST /api/models/{id}/tag/{rev}`` (409 on an existing tag); ``HEAD``/``GET
/{id}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` and sizes; ``GET /api/whoami-v2``
(401 without a token or for one in ``rejected_tokens``, role ``read`` for ``read_only_tokens``,
else ``write``). Repos behave like git: every commit is a full tree on top of its parent. ``fail``
injects failures per endpoint.

:func:`start_silent_server` is the other kind of broken hub: it accepts connections and never
answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

LFS_PATTERNS = re.compile(r"(\.tar\.gz|\.pb|\.data-\d+-of-\d+|\.index)$")
LFS_MIN_SIZE = 10 * 1024 * 1024


@dataclass
class Blob:
    data: bytes
    lfs: bool

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        return rev if rev in self.commits else None


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.fail: dict[str, int] = {}  # endpoint name -> how many next calls answer 500
        self.calls: list[str] = []
        self.commit_headers: list[dict] = []
        self.rejected_tokens: set[str] = set()  # whoami answers 401
        self.read_only_tokens: set[str] = set()  # whoami answers role "read"

    def should_fail(self, name: str) -> bool:
        with self.lock:
            self.calls.append(name)
            if self.fail.get(name, 0) > 0:
                self.fail[name] -= 1
                return True
        return False


def _commit_id(parent: str | None, tree: dict[str, Blob], message: str) -> str:
    digest = hashlib.sha1((parent or "").encode() + message.encode())
    for path in sorted(tree):
        digest.update(path.encode() + tree[path].git_oid.encode())
    return digest.hexdigest()


class StandinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState
    base_url: str

    def log_message(self, format, *args):  # quiet
        pass

    # ----- responses -----------------------------------------------------------------
    def _json(self, status: int, payload, headers: dict | None = None, body: bool = True) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None, body: bool = True) -> None:
        self._json(
            status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message} if code else None, body
        )

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _repo(self, repo_id: str) -> Repo | None:
        return self.state.repos.get(repo_id)

    # ----- routing ---------------------------------------------------------------------
    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def _route(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        routes = [
            ("POST", r"^/api/repos/create$", self.create_repo),
            ("POST", r"^/api/validate-yaml$", self.validate_yaml),
            ("GET", r"^/api/whoami-v2$", self.whoami),
            ("GET", r"^/api/models/([^/]+/[^/]+)/refs$", self.refs),
            ("GET", r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$", self.tree),
            ("POST", r"^/api/models/([^/]+/[^/]+)/preupload/([^/]+)$", self.preupload),
            ("POST", r"^/api/models/([^/]+/[^/]+)/commit/([^/]+)$", self.commit),
            ("POST", r"^/api/models/([^/]+/[^/]+)/tag/([^/]+)$", self.tag),
            ("GET", r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$", self.repo_info),
            ("POST", r"^/([^/]+/[^/]+)\.git/info/lfs/objects/batch$", self.lfs_batch),
            ("PUT", r"^/lfs-upload/([0-9a-f]{64})$", self.lfs_upload),
            ("POST", r"^/lfs-verify/([0-9a-f]{64})$", self.lfs_verify),
            ("GET", r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.resolve),
            ("HEAD", r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.resolve),
        ]
        for verb, pattern, handler in routes:
            match = re.match(pattern, path)
            if verb == method and match:
                if self.state.should_fail(handler.__name__):
                    self._read_body()
                    return self._error(500, "injected failure", body=method != "HEAD")
                return handler(*match.groups())
        self._read_body()
        return self._error(404, f"no route for {method} {path}", body=method != "HEAD")

    # ----- endpoints -------------------------------------------------------------------
    def create_repo(self):
        payload = json.loads(self._read_body())
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.base_url}/{repo_id}"
        with self.state.lock:
            if repo_id in self.state.repos:
                return self._json(409, {"error": "You already created this model repo", "url": url})
            repo = Repo(repo_id, payload.get("visibility") == "private" or bool(payload.get("private")))
            tree = {".gitattributes": Blob(b"*.tar.gz filter=lfs diff=lfs merge=lfs -text\n", False)}
            sha = _commit_id(None, tree, "initial commit")
            repo.commits[sha] = tree
            repo.branches["main"] = sha
            self.state.repos[repo_id] = repo
        return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def whoami(self):
        auth = self.headers.get("Authorization") or ""
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if not token or token in self.state.rejected_tokens:
            return self._error(401, "Invalid credentials in Authorization header", "Unauthorized")
        role = "read" if token in self.state.read_only_tokens else "write"
        return self._json(
            200,
            {
                "type": "user",
                "name": "standin-user",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}},
            },
        )

    def validate_yaml(self):
        payload = json.loads(self._read_body())
        content = payload.get("content", "")
        errors = []
        if content.startswith("---"):
            front = content.split("---", 2)[1]
            try:
                meta = yaml.safe_load(front) or {}
            except yaml.YAMLError as exc:
                errors.append({"message": f"invalid YAML: {exc}"})
            else:
                if not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a mapping"})
                elif "license" in meta and not isinstance(meta["license"], str):
                    errors.append({"message": "license must be a string"})
        if errors:
            return self._json(400, {"errors": errors, "warnings": []})
        return self._json(200, {"errors": [], "warnings": []})

    def repo_info(self, repo_id, rev=None):
        repo = self._repo(repo_id)
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        sha = repo.resolve(rev or "main")
        if sha is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        tree = repo.commits[sha]
        return self._json(
            200,
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": sha,
                "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(tree)],
                "tags": [],
                "lastModified": "2026-01-01T00:00:00.000Z",
            },
        )

    def refs(self, repo_id):
        repo = self._repo(repo_id)
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound")

        def ref(kind, name, target):
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": target}

        return self._json(
            200,
            {
                "branches": [ref("heads", n, t) for n, t in repo.branches.items()],
                "tags": [ref("tags", n, t) for n, t in repo.tags.items()],
                "converts": [],
            },
        )

    def tree(self, repo_id, rev, sub=None):
        repo = self._repo(repo_id)
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        sha = repo.resolve(rev)
        if sha is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        prefix = (sub or "").strip("/")
        entries, dirs = [], set()
        for path, blob in sorted(repo.commits[sha].items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            parts = path.split("/")
            for i in range(1, len(parts)):
                dirs.add("/".join(parts[:i]))
            entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": 134}
            entries.append(entry)
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)]
        return self._json(200, entries)

    def preupload(self, repo_id, rev):
        payload = json.loads(self._read_body())
        if self._repo(repo_id) is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        files = []
        for item in payload["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["size"] >= LFS_MIN_SIZE or bool(LFS_PATTERNS.search(item["path"])) or b"\0" in sample
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        return self._json(200, {"files": files, "commitOid": self._repo(repo_id).resolve(unquote(rev))})

    def lfs_batch(self, repo_id):
        payload = json.loads(self._read_body())
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.state.lfs:
                entry["actions"] = {
                    "upload": {"href": f"{self.base_url}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{self.base_url}/lfs-verify/{obj['oid']}"},
                }
            objects.append(entry)
        return self._json(200, {"transfer": "basic", "objects": objects})

    def lfs_upload(self, oid):
        data = self._read_body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "sha256 mismatch")
        with self.state.lock:
            self.state.lfs[oid] = data
        return self._json(200, {})

    def lfs_verify(self, oid):
        payload = json.loads(self._read_body())
        ok = oid in self.state.lfs and len(self.state.lfs[oid]) == payload["size"]
        return self._json(200, {}) if ok else self._error(404, "object not found")

    def commit(self, repo_id, rev):
        lines = [json.loads(line) for line in self._read_body().splitlines() if line.strip()]
        repo = self._repo(repo_id)
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        if not lines or lines[0]["key"] != "header":
            return self._error(400, "first line must be the header")
        header = lines[0]["value"]
        self.state.commit_headers.append(header)
        branch = unquote(rev)
        with self.state.lock:
            head = repo.branches.get(branch)
            if head is None:
                return self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent and parent != head:
                return self._error(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(repo.commits[head])
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "file":
                    tree[value["path"]] = Blob(base64.b64decode(value["content"]), False)
                elif line["key"] == "lfsFile":
                    data = self.state.lfs.get(value["oid"])
                    if data is None:
                        return self._error(422, f"LFS object {value['oid']} was not uploaded")
                    tree[value["path"]] = Blob(data, True)
                elif line["key"] == "deletedFile":
                    if tree.pop(value["path"], None) is None:
                        return self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                elif line["key"] == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    tree = {p: b for p, b in tree.items() if not p.startswith(prefix)}
                else:
                    return self._error(400, f"unknown key {line['key']}")
            sha = _commit_id(head, tree, header.get("summary", ""))
            repo.commits[sha] = tree
            repo.branches[branch] = sha
        url = f"{self.base_url}/{repo_id}/commit/{sha}"
        return self._json(200, {"commitOid": sha, "commitUrl": url, "success": True, "pullRequestUrl": None})

    def tag(self, repo_id, rev):
        payload = json.loads(self._read_body())
        repo = self._repo(repo_id)
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        with self.state.lock:
            sha = repo.resolve(unquote(rev))
            if sha is None:
                return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            if payload["tag"] in repo.tags:
                return self._error(409, f"Tag {payload['tag']} already exists")
            repo.tags[payload["tag"]] = sha
        return self._json(200, {})

    def resolve(self, repo_id, rev, path):
        head_only = self.command == "HEAD"
        repo = self._repo(repo_id)
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound", body=not head_only)
        sha = repo.resolve(rev)
        if sha is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound", body=not head_only)
        blob = repo.commits[sha].get(path)
        if blob is None:
            return self._error(404, "Entry not found", "EntryNotFound", body=not head_only)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(blob.data)))
        self.send_header("X-Repo-Commit", sha)
        self.send_header("ETag", f'"{blob.sha256 if blob.lfs else blob.git_oid}"')
        if blob.lfs:
            self.send_header("X-Linked-Etag", f'"{blob.sha256}"')
            self.send_header("X-Linked-Size", str(len(blob.data)))
        self.end_headers()
        if not head_only:
            self.wfile.write(blob.data)
        return None


def start_standin() -> tuple[ThreadingHTTPServer, HubState, str]:
    """Start the stand-in on 127.0.0.1 (free port) in a daemon thread."""
    state = HubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandinHandler)
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    server.RequestHandlerClass = type("BoundStandin", (StandinHandler,), {"state": state, "base_url": base_url})
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state, base_url


def start_silent_server() -> tuple[str, Callable[[], None]]:
    """A server on 127.0.0.1 that accepts connections and never answers: ``(url, close)``."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)  # read nothing, answer nothing

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()

    return f"http://127.0.0.1:{listener.getsockname()[1]}", close


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
