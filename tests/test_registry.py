"""The local hub: immutable versions, manifests, verify, crash safety, concurrency, and `serve`
with a real tensorflow_hub client over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras
from typer.testing import CliRunner

from repvgg_registry.cli import app
from repvgg_registry.hashing import sha256_file
from repvgg_registry.publish.archive import write_archive
from repvgg_registry.publish.tasks import KERAS_TASKS
from repvgg_registry.registry import Handle, LocalHub
from repvgg_registry.registry.local import COMMIT_PAUSE_ENV
from repvgg_registry.registry.operations import publish_variant, verify
from repvgg_registry.registry.server import serve_in_thread

runner = CliRunner()
FV1 = "repvgg/a0/feature_vector/1"


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    """A hub with A0 published twice (random weights: works offline)."""
    root = tmp_path_factory.mktemp("hub")
    local = LocalHub(root)
    publish_variant(local, "A0", weights="random", seed=0)
    publish_variant(local, "A0", weights="random", seed=1)
    return root


@pytest.fixture(scope="module")
def server(hub_root):
    srv, url = serve_in_thread(LocalHub(hub_root))
    yield url
    srv.shutdown()
    srv.server_close()


def _copy(hub_root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "hub"
    shutil.copytree(hub_root, target, symlinks=True)
    return target


def _cli_publish(root: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "repvgg_registry.cli", "publish", "A0", "--weights", "random", "--hub", str(root)]
    return subprocess.Popen(
        [*command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )


def _assert_hub_consistent(root: Path) -> list[str]:
    """Every indexed version is complete and verifies; nothing else is visible."""
    local = LocalHub(root)
    handles = [str(v.handle) for v in local.all_versions()]
    for handle in handles:
        report = verify(local, handle)
        assert report.ok, (handle, report.problems)
    counts = {}
    for v in local.all_versions():
        counts.setdefault(v.handle.version, set()).add(v.handle.task)
    assert all(tasks == set(KERAS_TASKS) for tasks in counts.values()), counts
    return handles


# ----- publish, layout, versions ---------------------------------------------------------------


def test_publish_twice_gives_versions_1_and_2(hub_root):
    result = runner.invoke(app, ["versions", "A0", "--hub", str(hub_root), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted((r["version"], r["task"]) for r in rows) == [
        (n, task) for n in (1, 2) for task in sorted(KERAS_TASKS)
    ]
    for row in rows:
        assert row["weights_source"] == "random" and len(row["sha256"]) == 64 and row["created"]
        folder = hub_root / "repvgg" / "a0" / row["task"] / str(row["version"])
        if row["task"] == "train":  # a .keras file only: the handle's sha256 is the file's
            assert not folder.exists() and sha256_file(folder.with_name(f"{row['version']}.keras")) == row["sha256"]
            continue
        assert (folder / "saved_model.pb").is_file()
        assert sha256_file(folder.with_name(f"{row['version']}.tar.gz")) == row["sha256"]
    listing = json.loads(runner.invoke(app, ["list", "--hub", str(hub_root), "--json"]).stdout)
    assert next(r for r in listing if r["name"] == "A0")["published"] == [1, 2]
    assert next(r for r in listing if r["name"] == "B0")["published"] == []


def test_index_and_manifest(hub_root):
    index = json.loads((hub_root / "index.json").read_text())
    entry = next(e for e in index["entries"] if e["handle"] == FV1)
    assert {"variant", "task", "version", "created", "weights_source", "sha256"} <= set(entry)
    manifest = json.loads((hub_root / "repvgg/a0/feature_vector/1.manifest.json").read_text())
    assert manifest["archive"]["sha256"] == entry["sha256"]
    listed = {f["path"] for f in manifest["files"]}
    assert {"saved_model.pb", "metadata.json", "README.md", "variables/variables.index"} <= listed
    for item in manifest["files"]:
        path = hub_root / "repvgg/a0/feature_vector/1" / item["path"]
        assert path.stat().st_size == item["size"] and sha256_file(path) == item["sha256"]


def test_archive_is_a_flat_reproducible_tar(hub_root, tmp_path):
    archive = hub_root / "repvgg/a0/feature_vector/1.tar.gz"
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and "saved_model.pb" in names
    assert all(m.isfile() or m.isdir() for m in members)
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 and not m.name.startswith(("/", ".")) for m in members)
    again = write_archive(hub_root / "repvgg/a0/feature_vector/1", tmp_path / "again.tar.gz")
    assert again == sha256_file(archive)


def test_taken_version_is_refused_with_one_line(hub_root):
    result = runner.invoke(app, ["publish", "A0", "--weights", "random", "--hub", str(hub_root), "--version", "1"])
    assert result.exit_code != 0
    assert "version 1 is already published and versions are immutable" in result.stderr
    assert [v.handle.version for v in LocalHub(hub_root).versions("a0")].count(1) == len(KERAS_TASKS)


def test_publish_goes_on_past_a_failure_and_exits_non_zero(tmp_path):
    result = runner.invoke(
        app, ["publish", "A0", "B1g2", "--weights", str(tmp_path / "none.safetensors"), "--hub", str(tmp_path / "h")]
    )
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and all("checkpoint file not found" in line for line in errors)
    assert [line.split(":")[1].strip() for line in errors] == ["A0", "B1g2"]
    assert "nothing published" in result.stdout
    assert LocalHub(tmp_path / "h").all_versions() == []


def test_hub_location_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REPVGG_REGISTRY_HUB", str(tmp_path / "env-hub"))
    assert LocalHub().root == tmp_path / "env-hub"
    monkeypatch.delenv("REPVGG_REGISTRY_HUB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert LocalHub().root == tmp_path / "data" / "repvgg-registry" / "hub"


# ----- verify ----------------------------------------------------------------------------------


def test_verify_passes_on_good_artifacts(hub_root):
    result = runner.invoke(app, ["verify", FV1, "--hub", str(hub_root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["signature"]["shape"] == [1, 1280]
    by_path = runner.invoke(app, ["verify", str(hub_root / "repvgg/a0/classification/2")])
    assert by_path.exit_code == 0, by_path.output


@pytest.mark.parametrize(
    "relative",
    [
        "repvgg/a0/feature_vector/1/variables/variables.data-00000-of-00001",
        "repvgg/a0/feature_vector/1/saved_model.pb",
        "repvgg/a0/feature_vector/1/metadata.json",
        "repvgg/a0/feature_vector/1.tar.gz",
        "repvgg/a0/feature_vector/1.manifest.json",
    ],
)
def test_a_single_flipped_byte_fails_verify_naming_the_file(hub_root, tmp_path, relative):
    root = _copy(hub_root, tmp_path)
    path = root / relative
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", FV1, "--hub", str(root)])
    assert result.exit_code != 0
    assert Path(relative).name in result.stderr, result.stderr


# ----- crash safety and concurrency --------------------------------------------------------------


def test_sigkill_mid_commit_leaves_no_partial_version_and_no_stale_lock(hub_root, tmp_path):
    root = _copy(hub_root, tmp_path)
    proc = _cli_publish(root, env={COMMIT_PAUSE_ENV: "30"})
    partial = root / "repvgg/a0/feature_vector/3"
    deadline = time.monotonic() + 240
    while not partial.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "publish never reached its commit"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists()  # renamed in, but not indexed:
    assert [v.handle.version for v in LocalHub(root).versions("a0")] == [1] * 4 + [2] * 4
    assert runner.invoke(app, ["verify", "repvgg/a0/feature_vector/3", "--hub", str(root)]).exit_code != 0
    _assert_hub_consistent(root)
    follow = _cli_publish(root)
    out, err = follow.communicate(timeout=300)
    assert follow.returncode == 0, err[-2000:]
    assert [v.handle.version for v in LocalHub(root).versions("a0")] == [1] * 4 + [2] * 4 + [3] * 4
    _assert_hub_consistent(root)


def test_sigkill_at_a_random_moment(hub_root, tmp_path):
    root = _copy(hub_root, tmp_path)
    proc = _cli_publish(root)
    time.sleep(random.Random(os.getpid()).uniform(1.0, 12.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _assert_hub_consistent(root)
    follow = _cli_publish(root)
    _, err = follow.communicate(timeout=300)
    assert follow.returncode == 0, err[-2000:]
    after = _assert_hub_consistent(root)
    assert len(after) == len(before) + len(KERAS_TASKS)


def test_two_concurrent_publishes_give_two_complete_versions(tmp_path):
    root = tmp_path / "race"
    procs = [_cli_publish(root), _cli_publish(root)]
    for proc in procs:
        _, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-2000:]
    assert sorted({v.handle.version for v in LocalHub(root).versions("a0")}) == [1, 2]
    _assert_hub_consistent(root)


# ----- serve -------------------------------------------------------------------------------------


def _request(url: str, path: str, method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes]:
    """Status, headers (looked up case-insensitively, as HTTP names are) and body."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.headers, body


def test_keraslayer_over_http_matches_the_local_artifact(hub_root, server, tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub-cache"))
    images = np.random.default_rng(0).random((2, 96, 128, 3), dtype=np.float32)
    remote = tf_keras.Sequential([tf_keras.Input((96, 128, 3)), hub.KerasLayer(f"{server}/{FV1}")])
    local = tf_keras.Sequential([tf_keras.Input((96, 128, 3)), hub.KerasLayer(str(hub_root / FV1))])
    np.testing.assert_array_equal(remote.predict(images, verbose=0), local.predict(images, verbose=0))
    assert any((tmp_path / "tfhub-cache").iterdir())


def test_keras_files_over_http_load_and_match_the_savedmodel(hub_root, server, tmp_path):
    """What a Keras 3 user does with the served URL: get_file, then load_model (safe mode)."""
    images = np.random.default_rng(1).random((2, 80, 64, 3), dtype=np.float32)
    outputs = {}
    for task in KERAS_TASKS:
        url = f"{server}/repvgg/a0/{task}/1.keras"
        path = keras.utils.get_file(f"a0-{task}-1.keras", origin=url, cache_dir=str(tmp_path))
        assert Path(path).read_bytes() == (hub_root / f"repvgg/a0/{task}/1.keras").read_bytes()
        outputs[task] = np.asarray(keras.saving.load_model(path)(images, training=False))
    served = tf.saved_model.load(str(hub_root / "repvgg/a0/classification/1")).signatures["serving_default"]
    logits = served(images=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(outputs["classification"], logits, rtol=0, atol=1e-5 * max(1, np.abs(logits).max()))
    np.testing.assert_allclose(outputs["train"], logits, rtol=0, atol=1e-4 * max(1, np.abs(logits).max()))
    assert outputs["feature_vector"].shape == (2, 1280)


def test_archive_headers_head_and_pages(hub_root, server):
    status, headers, body = _request(server, f"/{FV1}?tf-hub-format=compressed")
    sha = sha256_file(hub_root / "repvgg/a0/feature_vector/1.tar.gz")
    assert status == 200 and hashlib.sha256(body).hexdigest() == sha
    assert headers["Content-Length"] == str(len(body)) and headers["ETag"] == f'"{sha}"'
    assert "immutable" in headers["Cache-Control"]
    status, head_headers, head_body = _request(server, f"/{FV1}?tf-hub-format=compressed", "HEAD")
    assert status == 200 and head_body == b"" and head_headers["Content-Length"] == str(len(body))
    status, headers, page = _request(server, f"/{FV1}")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"hub.KerasLayer" in page
    status, _, listing = _request(server, "/")
    assert status == 200 and b"repvgg/a0/classification/2" in listing
    assert _request(server, "/repvgg/a0/feature_vector/9?tf-hub-format=compressed")[0] == 404
    assert _request(server, "/repvgg/b0/feature_vector/1")[0] == 404


def test_32_concurrent_downloads_are_byte_identical(hub_root, server):
    expected = (hub_root / "repvgg/a0/classification/2.tar.gz").read_bytes()
    path = "/repvgg/a0/classification/2?tf-hub-format=compressed"
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda _: _request(server, path), range(32)))
    assert all(status == 200 and body == expected for status, _, body in results)


@pytest.mark.parametrize(
    "path",
    [
        "/../index.json",
        "/repvgg/../../etc/passwd",
        "/repvgg/a0/feature_vector/%2e%2e/%2e%2e/index.json",
        "/repvgg/a0/feature_vector/1/../../../../index.json?tf-hub-format=compressed",
        "//etc/passwd",
        "/etc/passwd",
        "/repvgg/a0/feature_vector/1/saved_model.pb",
        "/repvgg/a0/feature_vector/..%2f..%2f..%2findex.json",
    ],
)
def test_traversal_is_refused(server, path):
    status, _, body = _request(server, path)
    assert status in (400, 404) and b"root:" not in body and b"entries" not in body


def test_symlink_escape_is_refused(hub_root, tmp_path):
    root = _copy(hub_root, tmp_path)
    archive = root / "repvgg/a0/feature_vector/1.tar.gz"
    archive.unlink()
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    archive.symlink_to(secret)
    srv, url = serve_in_thread(LocalHub(root))
    try:
        status, _, body = _request(url, f"/{FV1}?tf-hub-format=compressed")
    finally:
        srv.shutdown()
        srv.server_close()
    assert status == 404 and b"secret" not in body


def test_handles_parse_strictly():
    assert str(Handle.parse("repvgg/b3g4/feature_vector/12")) == "repvgg/b3g4/feature_vector/12"
    for bad in (
        "repvgg/a0/feature_vector/0",
        "repvgg/a0/other/1",
        "repvgg/../feature_vector/1",
        "a/b/c",
        "x/a0/classification/1a",
    ):
        with pytest.raises(ValueError):
            Handle.parse(bad)


def test_serve_command_binds_loopback_and_logs_each_request(hub_root):
    """The CLI's own `serve` (not just the library server): port 0 picks a free port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "repvgg_registry.cli", "serve", "--hub", str(hub_root), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        assert "http://127.0.0.1:" in line, line
        url = line.split(" on ")[1].split()[0].rstrip("/")
        status, _, body = _request(url, f"/{FV1}?tf-hub-format=compressed")
        assert status == 200 and hashlib.sha256(body).hexdigest() == sha256_file(
            hub_root / "repvgg/a0/feature_vector/1.tar.gz"
        )
        assert _request(url, "/nope")[0] == 404
        log = [proc.stderr.readline(), proc.stderr.readline()]
        assert f"GET /{FV1}?tf-hub-format=compressed 200" in log[0] and "GET /nope 404" in log[1], log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_recreated_hubs_v1_has_another_etag_than_the_old_v1(hub_root, tmp_path):
    """tensorflow_hub caches a URL forever; what the README says about it must hold: the same
    build inputs republished as v1 in a new hub give another archive sha256 (the served ETag)."""
    fresh = LocalHub(tmp_path / "fresh")
    published = publish_variant(fresh, "A0", weights="random", seed=0)
    old = {v.handle.task: v.sha256 for v in LocalHub(hub_root).versions("a0") if v.handle.version == 1}
    assert published[0].handle.version == 1
    assert all(v.sha256 != old[v.handle.task] for v in published)


def test_versions_table_never_cuts_a_handle_at_80_columns(hub_root):
    from rich.console import Console

    import repvgg_registry.cli as cli

    saved = cli.console
    cli.console = Console(width=80, record=True, force_terminal=False)
    try:
        result = runner.invoke(app, ["versions", "A0", "--hub", str(hub_root)])
        text = cli.console.export_text()
    finally:
        cli.console = saved
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    for handle in ("repvgg/a0/feature_vector/1", "repvgg/a0/classification/2"):
        assert handle in text
