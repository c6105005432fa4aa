"""`serve` on Starlette and uvicorn: the TF Hub download contract (ETag, immutable caching, 304,
HEAD, Range), the .keras files of every task (train has no archive), refusals, a broken index, idle
and vanishing clients, one log line per request, workers, and tensorflow_hub and Keras 3's
``get_file`` against this server, tensorflow_hub against plain static hosting.

The hub here is built without building a RepVGG: each version's folder holds a tiny Reusable
SavedModel (feature_vector only), metadata.json and an incompressible payload, and each .keras file
is a stand-in (bytes, never loaded), staged and published through LocalHub like a real release
(tests/test_registry.py serves a real published A0)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
from release_stubs import add_keras_stubs

from repvgg_registry.publish.release import stage_release
from repvgg_registry.publish.tasks import KERAS_TASKS, TASKS
from repvgg_registry.registry import LocalHub
from repvgg_registry.registry.server import (
    KEEP_ALIVE_S,
    _log_line,
    make_server,
    run_server,
    serve_in_thread,
)

FV1 = "repvgg/a0/feature_vector/1"
CL1 = "repvgg/a0/classification/1"
CL2 = "repvgg/a0/classification/2"
TR1 = "repvgg/a0/train/1"
ALL_V1 = [f"repvgg/a0/{task}/1" for task in KERAS_TASKS]
#: One access line: ISO time (UTC, ms), client, method, target, status, bytes, duration.
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 127\.0\.0\.1:\d+ (\S+) (\S+) (\d{3}) (\d+) \d+ms")
OUTPUTS = {
    "feature_vector": {"name": "feature_vector", "num_features": 1280},
    "classification": {"name": "logits", "num_classes": 1000, "background_class": False},
    "feature_maps": {
        "name": "feature_maps",
        "maps": [{"key": f"stride_{s}", "stride": s, "channels": c} for s, c in ((2, 48), (4, 48), (32, 1280))],
        "output_stride": 32,
    },
}


# ----- a small hub -----------------------------------------------------------------------------
def _tiny_savedmodel(folder: Path, scale: float) -> None:
    """A Reusable SavedModel (``__call__`` and variables): what hub.KerasLayer needs to load."""

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.fill([3], scale))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            return tf.reduce_mean(images, axis=[1, 2]) * self.w

    tf.saved_model.save(Tiny(), str(folder))


def _stage(base: Path, version: int, source: str, payload: int) -> Path:
    staged = base / f"staged-{version}"
    for task in TASKS:
        folder = staged / task
        if task == "feature_vector":
            _tiny_savedmodel(folder, float(version))
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "variant": "A0",
            "display_name": "RepVGG-A0",
            "task": task,
            "created": "2026-01-01T00:00:00+00:00",
            "weights": {"source": source},
            "input": {"default_size": 224},
            "output": OUTPUTS[task],
            "params": 8_309_384,
            "top1": 72.41,
        }
        (folder / "metadata.json").write_text(json.dumps(meta))
        (folder / "payload.bin").write_bytes(np.random.default_rng(version).bytes(payload))
    add_keras_stubs(staged, version, np.random.default_rng(version + 100).bytes(payload // 10))
    stage_release(staged)
    return staged


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    """repvgg/a0/{feature_vector,classification,train}/{1,2}: version 1 random weights (2 MB
    archives, 200 kB .keras stand-ins), version 2 timm weights (12 MB archives, big enough to leave
    mid-download)."""
    base = tmp_path_factory.mktemp("server")
    root = base / "hub"
    local = LocalHub(root)
    local.publish_staged("a0", _stage(base, 1, "random", 2_000_000))
    local.publish_staged("a0", _stage(base, 2, "timm", 12_000_000))
    return root


class Served:
    """A server on a hub and the access lines it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lines: list[str] = []
        self.server, self.url = serve_in_thread(LocalHub(root), log=self.lines.append)
        self.host, self.port = self.server.server_address

    def request(self, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body

    def raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Send bytes on a fresh socket; everything the server answers until it closes."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            with contextlib.suppress(OSError):  # the server may answer and close before reading it all
                sock.sendall(data)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except ConnectionResetError:
                pass
        return b"".join(chunks)

    def wait_for_lines(self, count: int, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.lines

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def served(hub_root):
    served = Served(hub_root)
    yield served
    served.close()


@pytest.fixture
def own_hub(hub_root, tmp_path):
    """A copy of the hub with its own server, for tests that damage it."""
    root = tmp_path / "hub"
    shutil.copytree(hub_root, root, symlinks=True)
    served = Served(root)
    yield served
    served.close()


def _entry(root: Path, handle: str) -> dict:
    return next(e for e in json.loads((root / "index.json").read_text())["entries"] if e["handle"] == handle)


# ----- the download contract -------------------------------------------------------------------
def test_archive_download_has_etag_immutable_caching_304_and_head(hub_root, served):
    status, headers, body = served.request(f"/{CL1}?tf-hub-format=compressed")
    sha = _entry(hub_root, CL1)["sha256"]
    assert status == 200 and hashlib.sha256(body).hexdigest() == sha
    assert body == (hub_root / f"{CL1}.tar.gz").read_bytes()
    assert headers["content-length"] == str(len(body)) and headers["etag"] == f'"{sha}"'
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["accept-ranges"] == "bytes" and headers["content-type"] == "application/gzip"
    assert headers["content-disposition"] == 'attachment; filename="a0-classification-1.tar.gz"'
    status, again, empty = served.request(f"/{CL1}?tf-hub-format=compressed", headers={"If-None-Match": f'"{sha}"'})
    assert status == 304 and empty == b"" and again["etag"] == f'"{sha}"'
    status, _, _ = served.request(f"/{CL1}?tf-hub-format=compressed", headers={"If-None-Match": '"other"'})
    assert status == 200
    status, head, nothing = served.request(f"/{CL1}?tf-hub-format=compressed", "HEAD")
    assert status == 200 and nothing == b"" and head["content-length"] == str(len(body)) and head["etag"] == f'"{sha}"'


def test_the_tar_gz_route_serves_the_same_archive(served):
    _, plain_headers, plain = served.request(f"/{CL1}?tf-hub-format=compressed")
    for path in (f"/{CL1}.tar.gz", f"/{CL1}.tar.gz?tf-hub-format=compressed"):  # tensorflow_hub appends the query
        status, headers, body = served.request(path)
        assert status == 200 and body == plain and headers["etag"] == plain_headers["etag"]
        assert "immutable" in headers["cache-control"]
    assert served.request(f"/{CL1}.tar.gz", "HEAD")[0] == 200
    assert served.request(f"/{CL1}.tgz")[0] == 404 and served.request(f"/{CL1}.manifest.json")[0] == 404


@pytest.mark.parametrize("route", [f"/{CL1}?tf-hub-format=compressed", f"/{CL1}.tar.gz"])
@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [("bytes=0-9", 0, 9), ("bytes=1000-", 1000, None), ("bytes=-5", -5, None), ("bytes=7-7", 7, 7)],
)
def test_single_range_gets_206_with_content_range(hub_root, served, route, spec, first, last):
    data = (hub_root / f"{CL1}.tar.gz").read_bytes()
    size = len(data)
    start = first % size
    end = size - 1 if last is None else last
    status, headers, body = served.request(route, headers={"Range": spec})
    assert status == 206 and body == data[start : end + 1]
    assert headers["content-range"] == f"bytes {start}-{end}/{size}" and headers["content-length"] == str(len(body))
    assert headers["etag"] == f'"{_entry(hub_root, CL1)["sha256"]}"' and headers["accept-ranges"] == "bytes"


def test_unsatisfiable_range_is_416_and_if_range_falls_back_to_the_whole_file(hub_root, served):
    data = (hub_root / f"{CL1}.tar.gz").read_bytes()
    etag = f'"{_entry(hub_root, CL1)["sha256"]}"'
    status, headers, _ = served.request(f"/{CL1}.tar.gz", headers={"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
    status, _, body = served.request(f"/{CL1}.tar.gz", headers={"Range": "bytes=0-3", "If-Range": etag})
    assert status == 206 and body == data[:4]
    status, _, body = served.request(f"/{CL1}.tar.gz", headers={"Range": "bytes=0-3", "If-Range": '"stale"'})
    assert status == 200 and body == data


def test_a_format_other_than_compressed_is_a_clear_400(served, tmp_path, monkeypatch):
    for fmt in ("uncompressed", "zip", ""):
        status, headers, body = served.request(f"/{FV1}?tf-hub-format={fmt}")
        text = body.decode()
        assert status == 400 and headers["content-type"].startswith("text/plain")
        assert text.count("\n") == 1 and "only tf-hub-format=compressed" in text, text
    # what tensorflow_hub itself says when told to load uncompressed models from this server
    monkeypatch.setenv("TFHUB_MODEL_LOAD_FORMAT", "UNCOMPRESSED")
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="400"):
        hub.resolve(f"{served.url}/{FV1}")


def test_a_missing_version_404_lists_the_published_ones(served):
    for path, expected in (
        ("/repvgg/a0/classification/7?tf-hub-format=compressed", "not found: repvgg/a0/classification/7; "),
        ("/repvgg/a0/classification/7", "not found: repvgg/a0/classification/7; "),
        ("/repvgg/a0/classification/7.tar.gz", "not found: repvgg/a0/classification/7.tar.gz; "),
        ("/repvgg/a0/classification/7.keras", "not found: repvgg/a0/classification/7.keras; "),
        ("/repvgg/a0/train/7.keras", "not found: repvgg/a0/train/7.keras; "),
        ("/repvgg/a0/train/7", "not found: repvgg/a0/train/7; "),
    ):
        status, _, body = served.request(path)
        assert status == 404 and body.decode() == expected + "published versions: 1, 2\n"
    status, _, body = served.request("/repvgg/b0/feature_vector/1")
    assert status == 404
    assert body.decode() == "not found: repvgg/b0/feature_vector/1; nothing is published as repvgg/b0/feature_vector\n"
    assert served.request("/repvgg/a0/feature_vector/01")[0] == 404


@pytest.mark.parametrize("handle", ALL_V1)
def test_keras_download_has_etag_immutable_caching_304_head_and_range(hub_root, served, handle):
    data = (hub_root / f"{handle}.keras").read_bytes()
    sha = _entry(hub_root, handle)["keras_sha256"]
    status, headers, body = served.request(f"/{handle}.keras")
    assert status == 200 and body == data and hashlib.sha256(body).hexdigest() == sha
    assert headers["content-length"] == str(len(data)) and headers["etag"] == f'"{sha}"'
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["content-type"] == "application/octet-stream" and headers["accept-ranges"] == "bytes"
    task = handle.split("/")[2]
    assert headers["content-disposition"] == f'attachment; filename="a0-{task}-1.keras"'
    status, again, empty = served.request(f"/{handle}.keras", headers={"If-None-Match": f'W/"x", "{sha}"'})
    assert status == 304 and empty == b"" and again["etag"] == f'"{sha}"'
    status, head, nothing = served.request(f"/{handle}.keras", "HEAD")
    assert status == 200 and nothing == b"" and head["content-length"] == str(len(data)) and head["etag"] == f'"{sha}"'
    status, headers, part = served.request(f"/{handle}.keras", headers={"Range": "bytes=5-14"})
    assert status == 206 and part == data[5:15] and headers["content-range"] == f"bytes 5-14/{len(data)}"


def test_each_task_serves_its_own_keras_file(hub_root, served):
    bodies = {handle: served.request(f"/{handle}.keras")[2] for handle in (*ALL_V1, "repvgg/a0/train/2")}
    assert len(set(bodies.values())) == len(bodies)
    assert all(body == (hub_root / f"{handle}.keras").read_bytes() for handle, body in bodies.items())


def test_train_is_keras_only_a_clear_404_for_archives_and_a_page_for_people(served):
    for path in (f"/{TR1}.tar.gz", f"/{TR1}?tf-hub-format=compressed", f"/{TR1}?tf-hub-format=uncompressed"):
        status, headers, body = served.request(path)
        text = body.decode()
        assert status == 404 and headers["content-type"].startswith("text/plain") and text.count("\n") == 1, text
        assert "train is a .keras-only artifact" in text and f"GET /{TR1}.keras" in text, text
    assert served.request(f"/{TR1}.tar.gz", "HEAD")[0] == 404
    status, headers, page = served.request(f"/{TR1}")
    text = page.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "multi-branch train form" in text and "repvgg_registry.variants.fusion.fuse" in text
    assert "deployed = fuse(model)" in text and "hub.KerasLayer" not in text and ".tar.gz" not in text
    assert "output: logits [batch, 1000]" in text and "random weights, for pipeline tests only" in text


def test_tensorflow_hub_gets_a_404_for_train(served, tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(Exception, match="404"):
        hub.resolve(f"{served.url}/{TR1}")


@pytest.mark.parametrize("handle", ALL_V1)
def test_the_page_shows_the_keras_snippet_first(hub_root, served, handle):
    status, _, page = served.request(f"/{handle}")
    text = page.decode()
    sha = _entry(hub_root, handle)["keras_sha256"]
    name = handle.replace("/", "-") + ".keras"
    snippet = (
        "import keras\n"
        f'path = keras.utils.get_file("{name}", origin="{served.url}/{handle}.keras", file_hash="{sha}")\n'
        "model = keras.saving.load_model(path)"
    )
    assert status == 200 and snippet in text and f'href="/{handle}.keras"' in text
    assert f".keras sha256: {sha}" in text
    if handle.split("/")[2] in TASKS:
        layer = f'hub.KerasLayer("{served.url}/{handle}", trainable=True)'
        assert layer in text and text.index(snippet) < text.index(layer)
    if handle.split("/")[2] == "feature_maps":  # how a neck takes its levels, and their channels
        assert 'maps = layer(images)  # a dict: maps["stride_8"], maps["stride_16"], maps["stride_32"]' in text
        assert "output: feature_maps stride_2..stride_32 [batch, h/s, w/s, 48..1280]" in text


def test_keras_get_file_downloads_through_the_server(hub_root, served, tmp_path):
    """Keras 3's own downloader, as a user calls it. ``cache_dir`` must exist: get_file silently
    falls back to /tmp/.keras for a folder it cannot write to."""
    import keras

    shared = tmp_path / "shared"
    shared.mkdir()
    for handle in ALL_V1:
        data = (hub_root / f"{handle}.keras").read_bytes()
        url = f"{served.url}/{handle}.keras"
        own = tmp_path / handle.replace("/", "-")
        own.mkdir()
        assert Path(keras.utils.get_file(origin=url, cache_dir=str(own))).read_bytes() == data
        # the page's form: a name per handle and the sha256 the index records
        name = handle.replace("/", "-") + ".keras"
        sha = _entry(hub_root, handle)["keras_sha256"]
        path = Path(keras.utils.get_file(name, origin=url, file_hash=sha, cache_dir=str(shared)))
        assert path.read_bytes() == data and path.name == name
    # why the page names the file: unnamed, every handle's 1.keras is one cache entry
    unnamed = tmp_path / "unnamed"
    unnamed.mkdir()
    first, second = (keras.utils.get_file(origin=f"{served.url}/{h}.keras", cache_dir=str(unnamed)) for h in (FV1, CL1))
    assert first == second and Path(second).read_bytes() != (hub_root / f"{CL1}.keras").read_bytes()


def test_index_json_rows_name_the_keras_and_archive_urls(hub_root, served):
    rows = {r["handle"]: r for r in json.loads(served.request("/index.json")[2])}
    for handle in ALL_V1:
        row, entry = rows[handle], _entry(hub_root, handle)
        assert row["keras_url"] == f"{served.url}/{handle}.keras"
        assert (row["keras_sha256"], row["keras_size"]) == (entry["keras_sha256"], entry["keras_size"])
        assert row["keras_size"] == (hub_root / f"{handle}.keras").stat().st_size
    assert rows[CL1]["archive_url"] == f"{served.url}/{CL1}.tar.gz" and "archive_url" not in rows[TR1]
    assert rows[TR1]["sha256"] == rows[TR1]["keras_sha256"]


def test_a_version_from_before_keras_files_has_no_keras_route(own_hub):
    index = own_hub.root / "index.json"
    data = json.loads(index.read_text())
    for entry in data["entries"]:
        if entry["handle"] == CL1:
            del entry["keras_sha256"], entry["keras_size"]
    index.write_text(json.dumps(data))
    (own_hub.root / f"{CL1}.keras").unlink()
    status, _, body = own_hub.request(f"/{CL1}.keras")
    assert (
        status == 404
        and body.decode() == f"not found: {CL1}.keras; this version was published before .keras files existed\n"
    )
    status, _, page = own_hub.request(f"/{CL1}")
    assert status == 200 and b"keras.utils.get_file" not in page and b"hub.KerasLayer" in page
    assert f'href="/{CL1}.keras"'.encode() not in page
    rows = {r["handle"]: r for r in json.loads(own_hub.request("/index.json")[2])}
    assert "keras_url" not in rows[CL1] and "keras_url" in rows[CL2]
    assert own_hub.request(f"/{CL1}.tar.gz")[0] == 200


def test_a_symlinked_or_missing_keras_file_is_404(own_hub, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    keras_file = own_hub.root / f"{TR1}.keras"
    keras_file.unlink()
    status, _, body = own_hub.request(f"/{TR1}.keras")
    assert status == 404 and body == f"not found: {TR1}.keras\n".encode()
    keras_file.symlink_to(secret)
    status, _, body = own_hub.request(f"/{TR1}.keras")
    assert status == 404 and b"secret" not in body
    keras_file.unlink()
    keras_file.symlink_to(own_hub.root / "repvgg/a0/train/2.keras")
    assert own_hub.request(f"/{TR1}.keras")[0] == 404
    assert own_hub.request("/repvgg/a0/train/2.keras")[0] == 200
    assert any("outside the hub" in line for line in own_hub.lines)


# ----- pages -----------------------------------------------------------------------------------
def test_model_page_shows_formatted_facts_and_the_random_weights_banner(served):
    status, headers, page = served.request(f"/{CL1}")
    text = page.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "output: logits [batch, 1000]" in text and "parameters: 8,309,384" in text
    assert f'hub.KerasLayer("{served.url}/{CL1}", trainable=True)' in text
    assert "random weights, for pipeline tests only; the reference accuracy does not apply" in text
    assert f'href="/{CL1}.tar.gz"' in text
    status, _, page = served.request("/repvgg/a0/feature_vector/2")
    text = page.decode()
    assert status == 200 and "output: feature_vector [batch, 1280]" in text and "weights: timm" in text
    assert "random weights" not in text
    assert "{" not in text and "'name'" not in text and "None" not in text  # no Python reprs
    assert served.request(f"/{FV1}", "HEAD")[2] == b""


def test_model_page_escapes_metadata(own_hub):
    meta_file = own_hub.root / FV1 / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta.update(display_name="<script>alert(1)</script>", output={"name": "<b>x</b>", "num_features": 8})
    meta_file.write_text(json.dumps(meta))
    status, _, page = own_hub.request(f"/{FV1}")
    assert status == 200 and b"<script>" not in page and b"<b>" not in page
    assert b"&lt;script&gt;" in page and b"output: &lt;b&gt;x&lt;/b&gt; [batch, 8]" in page
    meta_file.write_text("not json")
    status, _, page = own_hub.request(f"/{FV1}")
    assert status == 200 and b"weights: random" in page


def test_listing_and_index_json_without_server_paths(hub_root, served):
    status, headers, listing = served.request("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    handles = {f"repvgg/a0/{task}/{n}" for task in KERAS_TASKS for n in (1, 2)}
    for handle in handles:
        assert f'href="/{handle}"'.encode() in listing and f'href="/{handle}.keras"'.encode() in listing
    assert f'href="/{TR1}.tar.gz"'.encode() not in listing and f'href="/{CL1}.tar.gz"'.encode() in listing
    status, headers, body = served.request("/index.json")
    rows = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert {r["handle"] for r in rows} == handles
    assert all(r["sha256"] == _entry(hub_root, r["handle"])["sha256"] and "location" not in r for r in rows)
    assert str(hub_root).encode() not in body and str(hub_root.resolve()).encode() not in body


# ----- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/../index.json",
        "/repvgg/../../etc/passwd",
        "/repvgg/a0/feature_vector/%2e%2e/%2e%2e/index.json",
        "/repvgg/a0/feature_vector/%2E%2E/1?tf-hub-format=compressed",
        "/repvgg/a0/feature_vector/1/../../../../index.json?tf-hub-format=compressed",
        "/repvgg/a0/./feature_vector/1?tf-hub-format=compressed",
        "//etc/passwd",
        "/etc/passwd",
        "/repvgg/a0/feature_vector/1/saved_model.pb",
        "/repvgg/a0/feature_vector/1/metadata.json",
        "/repvgg/a0/feature_vector/..%2f..%2f..%2findex.json",
        "/repvgg/a0/feature_vector/..\\..\\..\\index.json",
        "/repvgg/a0/feature_vector/%5c..%5cindex.json",
        "/repvgg/a0/feature_vector/1.manifest.json",
        "/.lock",
        "/repvgg/a0/feature_vector/1/",
        "/repvgg/a0/train/1.tar.gz",
        "/repvgg/a0/train/1.manifest.json",
        "/repvgg/a0/train/1/1.keras",
        "/repvgg/a0/train/1.keras/",
        "/repvgg/a0/train/..keras",
        "/repvgg/a0/train/.keras",
        "/repvgg/a0/train/1.keras.tar.gz",
        "/repvgg/a0/train/1.tar.gz.keras",
        "/repvgg/a0/train/%2e%2e.keras",
        "/repvgg/a0/train/1/../../feature_vector/1.keras",
        "/repvgg/a0/../../index.keras",
        "/repvgg/a0/classification/1/saved_model.keras",
    ],
)
def test_traversal_is_refused(served, path):
    status, _, body = served.request(path)
    assert status in (400, 404) and b"root:" not in body and b"entries" not in body and len(body) < 200
    assert body.count(b"\n") == 1


def test_symlinked_or_escaping_archives_are_404(own_hub, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    archive = own_hub.root / f"{FV1}.tar.gz"
    archive.unlink()
    archive.symlink_to(secret)
    status, _, body = own_hub.request(f"/{FV1}?tf-hub-format=compressed")
    assert status == 404 and b"secret" not in body
    assert own_hub.request(f"/{FV1}.tar.gz")[0] == 404
    # a symlink to a file inside the hub is refused too: only the file itself is the version
    archive.unlink()
    archive.symlink_to(own_hub.root / f"{CL1}.tar.gz")
    assert own_hub.request(f"/{FV1}.tar.gz")[0] == 404
    # a task folder that resolves outside the hub
    outside = tmp_path / "outside"
    shutil.move(own_hub.root / "repvgg/a0/classification", outside)
    (own_hub.root / "repvgg/a0/classification").symlink_to(outside)
    status, _, body = own_hub.request(f"/{CL1}?tf-hub-format=compressed")
    assert status == 404 and len(body) < 200
    assert own_hub.request("/repvgg/a0/feature_vector/2.tar.gz")[0] == 200
    assert any("outside the hub" in line for line in own_hub.lines)


# ----- a broken index --------------------------------------------------------------------------
def _corrupt(root: Path, how: str) -> None:
    index = root / "index.json"
    data = json.loads(index.read_text())
    if how == "garbage":
        index.write_bytes(b"\x00\xffnot json{")
    elif how == "list":
        index.write_text("[]")
    elif how == "entries-not-a-list":
        index.write_text(json.dumps({"format": 1, "entries": 5}))
    elif how == "folder":
        index.unlink()
        index.mkdir()
    elif how == "missing-keys":
        del data["entries"][0]["sha256"]
        index.write_text(json.dumps(data))
    elif how == "bad-handle":
        data["entries"][0]["handle"] = "../../etc/passwd"
        index.write_text(json.dumps(data))
    elif how == "not-a-dict":
        data["entries"].insert(0, "repvgg/a0/feature_vector/1")
        index.write_text(json.dumps(data))


def _restore(root: Path, saved: bytes) -> None:
    index = root / "index.json"
    if index.is_dir():
        index.rmdir()
    index.write_bytes(saved)


@pytest.mark.parametrize("how", ["garbage", "list", "entries-not-a-list", "folder"])
def test_an_unreadable_index_is_a_500_and_the_server_keeps_serving(own_hub, how):
    saved = (own_hub.root / "index.json").read_bytes()
    _corrupt(own_hub.root, how)
    for path in ("/", "/index.json", f"/{CL2}?tf-hub-format=compressed", f"/{CL2}.tar.gz", f"/{CL2}"):
        status, headers, body = own_hub.request(path)
        assert status == 500 and headers["content-type"].startswith("text/plain"), (path, status, body)
        assert body.count(b"\n") == 1 and b"index" in body and str(own_hub.root).encode() not in body
    assert all(" 500 " in line and " -- " in line for line in own_hub.lines if " 500 " in line)
    _restore(own_hub.root, saved)
    status, _, body = own_hub.request(f"/{CL2}?tf-hub-format=compressed")
    assert status == 200 and body == (own_hub.root / f"{CL2}.tar.gz").read_bytes()


@pytest.mark.parametrize("how", ["missing-keys", "bad-handle", "not-a-dict"])
def test_a_single_bad_entry_is_skipped_and_the_rest_is_served(own_hub, how):
    _corrupt(own_hub.root, how)
    status, _, listing = own_hub.request("/")
    assert status == 200 and f"/{CL2}".encode() in listing
    status, _, body = own_hub.request("/index.json")
    rows = json.loads(body)
    assert status == 200 and CL2 in {r["handle"] for r in rows} and "../../etc/passwd" not in body.decode()
    status, _, body = own_hub.request(f"/{CL2}?tf-hub-format=compressed")
    assert status == 200 and body == (own_hub.root / f"{CL2}.tar.gz").read_bytes()
    assert own_hub.request("/../../etc/passwd")[0] == 400


# ----- the wire: limits, idle and vanishing clients --------------------------------------------
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET /\x1b[2J HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),  # a TLS hello on the plain port
    ],
    ids=["100kB-url", "garbage", "three-part-request-line", "escape-in-target", "100kB-header", "tls-hello"],
)
def test_oversized_or_malformed_requests_get_a_4xx_response(served, request_bytes):
    before = len(served.lines)
    answer = served.raw(request_bytes)
    assert re.match(rb"HTTP/1\.1 4\d\d ", answer), answer[:200]
    if len(request_bytes) > 100_000:  # 414 / 431 here, or h11's 400 when the head came in pieces
        assert re.match(rb"HTTP/1\.1 (414|431|400) ", answer), answer[:200]
    assert all(len(line) < 1500 for line in served.lines[before:])
    assert served.request(f"/{CL1}.tar.gz", "HEAD")[0] == 200


def test_control_characters_are_escaped_in_log_lines(served, capfd):
    before = len(served.lines)
    served.raw(b"GET /\x1b[31mred HTTP/1.1\r\nHost: x\r\n\r\n")
    served.request("/%1b[31m?x=%1b")
    lines = served.wait_for_lines(before + 1)[before:]
    assert lines and all("\x1b" not in line for line in lines)
    assert "\x1b" not in capfd.readouterr().err
    scope = {
        "client": ("127.0.0.1", 1),
        "method": "GET",
        "raw_path": b"/\x1b[2Jx",
        "path": "/",
        "query_string": b"q=\x07\x1b",
    }
    line = _log_line(scope, "/\x1b[2Jx", 404, 10, time.perf_counter())
    assert "\x1b" not in line and "\x07" not in line and "/\\x1b[2Jx?q=\\x07\\x1b 404 10" in line


def test_one_access_line_per_request_with_time_client_status_and_bytes(hub_root, served):
    requests = [
        ("GET", "/", {}),
        ("GET", f"/{CL1}?tf-hub-format=compressed", {}),
        ("HEAD", f"/{CL1}?tf-hub-format=compressed", {}),
        ("GET", f"/{CL1}.tar.gz", {"Range": "bytes=0-99"}),
        ("GET", f"/{CL1}.tar.gz", {"If-None-Match": f'"{_entry(hub_root, CL1)["sha256"]}"'}),
        ("GET", "/nope", {}),
        ("GET", "/%2e%2e/x", {}),
        ("POST", "/index.json", {}),
    ]
    before = len(served.lines)
    bodies = [served.request(path, method, headers) for method, path, headers in requests]
    lines = served.wait_for_lines(before + len(requests))[before:]
    assert len(lines) == len(requests), lines
    for (method, path, _), (status, _, body), line in zip(requests, bodies, lines, strict=True):
        match = LINE.match(line)
        assert match, line
        assert match.groups() == (method, path, str(status), str(len(body))), line


def test_idle_connections_are_closed_by_the_server(served):
    """Silent sockets, a dribbled request line and a finished keep-alive request: all closed
    after the keep-alive timeout (uvicorn alone keeps a silent connection open forever)."""
    started = time.monotonic()
    socks = [socket.create_connection((served.host, served.port), timeout=KEEP_ALIVE_S + 10) for _ in range(4)]
    socks[1].sendall(b"GET / HT")
    socks[2].sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        for sock in socks:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert data == b"" or data.startswith(b"HTTP/1.1 200"), data[:100]
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert KEEP_ALIVE_S - 1 < elapsed < 10, elapsed
    assert served.request("/")[0] == 200


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_leaving_mid_download_leaves_no_traceback(hub_root, served, capfd):
    records = _Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "asyncio", "starlette")]
    for logger in loggers:
        logger.addHandler(records)
    before = len(served.lines)
    try:
        for _ in range(3):
            sock = socket.create_connection((served.host, served.port), timeout=10)
            sock.sendall(f"GET /{CL2}?tf-hub-format=compressed HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            sock.close()
        lines = served.wait_for_lines(before + 3)[before:]
        time.sleep(0.5)
    finally:
        for logger in loggers:
            logger.removeHandler(records)
    size = (hub_root / f"{CL2}.tar.gz").stat().st_size
    assert len(lines) == 3 and all(" 200 " in line for line in lines), lines
    assert all(int(LINE.match(line).group(4)) < size for line in lines), lines
    assert [r.getMessage() for r in records.records if r.levelno >= logging.WARNING] == []
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception" not in err, err
    status, _, body = served.request(f"/{CL2}?tf-hub-format=compressed")
    assert status == 200 and len(body) == size


def test_64_concurrent_downloads_are_byte_identical(hub_root, served):
    expected = _entry(hub_root, CL1)["sha256"]

    def download(_: int) -> tuple[int, str]:
        conn = http.client.HTTPConnection(served.host, served.port, timeout=60)
        conn.request("GET", f"/{CL1}?tf-hub-format=compressed")
        response = conn.getresponse()
        digest = hashlib.sha256()
        while chunk := response.read(1 << 16):
            digest.update(chunk)
        conn.close()
        return response.status, digest.hexdigest()

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(download, range(64)))
    assert results == [(200, expected)] * 64


# ----- tensorflow_hub: this server, and plain static hosting -----------------------------------
def _outputs(url_or_path: str) -> np.ndarray:
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    return np.asarray(hub.KerasLayer(url_or_path)(tf.constant(images)))


def test_tensorflow_hub_loads_the_handle_and_the_tar_gz_url(hub_root, served, tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    local = _outputs(str(hub_root / FV1))
    np.testing.assert_array_equal(_outputs(f"{served.url}/{FV1}"), local)
    np.testing.assert_array_equal(_outputs(f"{served.url}/{FV1}.tar.gz"), local)


class _StaticHandler(SimpleHTTPRequestHandler):
    """A plain static file server (what any web host does), quiet."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class _RewritingHandler(_StaticHandler):
    """The one rewrite static hosting needs for bare handles:
    ``/<ns>/<model>/<task>/<N>?tf-hub-format=compressed`` -> ``/<ns>/<model>/<task>/<N>.tar.gz``."""

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if re.fullmatch(r"(/[a-z0-9][a-z0-9._-]*){2}/[a-z_-]+/[1-9][0-9]*", path) and (
            "tf-hub-format=compressed" in query.split("&")
        ):
            self.path = f"{path}.tar.gz"
        super().do_GET()


@pytest.mark.parametrize("handler", [_StaticHandler, _RewritingHandler])
def test_static_hosting_of_the_hub_folder_works_with_tensorflow_hub(hub_root, tmp_path, monkeypatch, handler):
    """Copying the hub folder to any static host serves `<handle>.tar.gz` URLs as they are
    (tensorflow_hub appends ?tf-hub-format=compressed, which a static host ignores); bare handles
    need the one rewrite."""
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    static = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(hub_root)))
    threading.Thread(target=static.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{static.server_address[1]}"
    handle = "repvgg/a0/feature_vector/2"
    try:
        local = _outputs(str(hub_root / handle))
        np.testing.assert_array_equal(_outputs(f"{base}/{handle}.tar.gz"), local)
        if handler is _RewritingHandler:
            np.testing.assert_array_equal(_outputs(f"{base}/{handle}"), local)
        else:
            with pytest.raises(OSError, match="does not appear to be a valid module"):  # a folder listing there
                _outputs(f"{base}/{handle}")
    finally:
        static.shutdown()
        static.server_close()


# ----- run_server: the CLI's entry point, one worker or several --------------------------------
def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live child processes of ``pid``."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                cmdline = (stat_file.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append((int(stat_file.parent.name), cmdline))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_run_server_binds_loopback_and_serves_with_n_workers(hub_root, workers):
    code = "import sys; from pathlib import Path; from repvgg_registry.registry.server import run_server; "
    code += f"run_server(Path(sys.argv[1]), port=0, workers={workers})"
    proc = subprocess.Popen([sys.executable, "-c", code, str(hub_root)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines and f"serving {hub_root} on http://127.0.0.1:" in lines[0], lines
        url = lines[0].split(" on ")[1].split()[0].rstrip("/")
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)  # listening before the start line
        conn.request("GET", f"/{CL1}?tf-hub-format=compressed")
        response = conn.getresponse()
        status, body = response.status, response.read()
        conn.close()
        assert status == 200 and hashlib.sha256(body).hexdigest() == _entry(hub_root, CL1)["sha256"]
        worker_pids = [pid for pid, cmdline in _children(proc.pid) if "spawn_main" in cmdline]
        assert len(worker_pids) == (workers if workers > 1 else 0), _children(proc.pid)
        while len(lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert LINE.match(lines[1]) and f"GET /{CL1}?tf-hub-format=compressed 200 {len(body)}" in lines[1], lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not [pid for pid in worker_pids if Path(f"/proc/{pid}").exists()]
    assert not any("Traceback" in line for line in lines), lines


def test_the_default_bind_is_loopback(hub_root):
    server = make_server(LocalHub(hub_root), port=0)
    try:
        assert server.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
    finally:
        server.server_close()
    import inspect

    assert inspect.signature(run_server).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve_in_thread).parameters["host"].default == "127.0.0.1"
