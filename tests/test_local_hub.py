"""The local folder hub's own records under stress: names that would escape the hub, a lost or
malformed index, commits cut short (SIGKILL, a full disk), other publishers' staging folders and
locks, file modes. Fast: releases are fabricated (a dummy file per task, archived and manifested by
the real ``stage_release``); one test publishes a real A0 to check that a repaired hub verifies."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from release_stubs import stage_stub_release as _stage

from repvgg_registry.errors import (
    HubError,
    HubLockedError,
    HubStateError,
    InvalidNameError,
    NotPublishedError,
    UsageError,
    VersionExistsError,
)
from repvgg_registry.hashing import sha256_file
from repvgg_registry.publish.tasks import KERAS_TASKS, TASKS
from repvgg_registry.registry import local as local_module
from repvgg_registry.registry.hub import MAX_VERSION, Handle
from repvgg_registry.registry.local import (
    COMMIT_PAUSE_ENV,
    JOURNAL,
    LEGACY_STAGING_AGE,
    LOCK_TIMEOUT_ENV,
    STAGING,
    LocalHub,
)

REPO = Path(__file__).resolve().parents[1]
FV1 = Handle("repvgg", "a0", "feature_vector", 1)


def _publish(hub: LocalHub, tmp_path: Path, tag: object = 0, **kwargs) -> list[int]:
    return sorted({v.handle.version for v in hub.publish_staged("a0", _stage(tmp_path, tag), **kwargs)})


def _versions(hub: LocalHub) -> list[int]:
    return sorted({v.handle.version for v in hub.versions("a0")})


def _files(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` but the lock files, with its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (".lock",)
    }


def _published_files(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in _files(root).items() if not k.startswith((".", "index.json"))}


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text and text, text
    return text


def _child(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """A Python child (no TensorFlow: only the hub is imported) that prints lines we wait for."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _readline(proc: subprocess.Popen, timeout: float = 60) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert box and box[0], f"child said nothing: {proc.poll()} {proc.stderr.read() if proc.poll() is not None else ''}"
    return box[0].strip()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


# ----- D1: names that become paths ----------------------------------------------------------------

BAD_NAMES = ["..", "../escaped", ".", "MyOrg", "<script>", "", "a/b", "a\\b", ".hidden", "-x", "x" * 65, "é"]


@pytest.mark.parametrize("namespace", BAD_NAMES)
def test_a_bad_namespace_is_refused_before_anything_is_built_or_written(tmp_path, namespace):
    with pytest.raises(InvalidNameError) as caught:
        LocalHub(tmp_path / "hub", namespace=namespace)
    assert "namespace" in _one_line(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("model", ["..", "../x", "A/B", "a0/../../x", ".x", "", "a" * 65])
def test_a_bad_model_name_is_refused_before_anything_is_written(tmp_path, model):
    staged = _stage(tmp_path)
    before = _files(tmp_path)
    hub = LocalHub(tmp_path / "hub")
    with pytest.raises(InvalidNameError) as caught:
        hub.publish_staged(model, staged)
    assert "model name" in _one_line(caught.value)
    assert not (tmp_path / "hub").exists() and _files(tmp_path) == before


def test_paths_check_every_part_of_a_handle(tmp_path):
    hub = LocalHub(tmp_path)
    for bad in (
        Handle("..", "a0", "feature_vector", 1),
        Handle("repvgg", "../..", "feature_vector", 1),
        Handle("repvgg", "a0", "../../etc", 1),
        Handle("repvgg", "a0", "feature_vector", 0),
    ):
        with pytest.raises(InvalidNameError):
            hub.paths(bad)
    with pytest.raises(InvalidNameError):
        hub.task_dir("a0", "feature_vector", namespace="../x")
    files = hub.paths(FV1)
    assert files.folder == tmp_path / "repvgg/a0/feature_vector/1"
    assert files.keras == tmp_path / "repvgg/a0/feature_vector/1.keras"
    train = hub.paths(Handle("repvgg", "a0", "train", 1))
    assert (train.folder, train.archive, train.keras) == (None, None, tmp_path / "repvgg/a0/train/1.keras")


def test_location_is_the_root(tmp_path):
    assert LocalHub(tmp_path / "h").location == str(tmp_path / "h")


# ----- D2, D13: a malformed index is one line, never a traceback -----------------------------------


def _index_entry(handle: str = "repvgg/a0/feature_vector/1", **changes) -> dict:
    ns, model, task, n = handle.split("/")
    entry = {
        "handle": handle,
        "namespace": ns,
        "variant": model,
        "task": task,
        "version": int(n) if n.isdigit() else n,
        "created": "2024-01-01T00:00:00+00:00",
        "weights_source": "random",
        "sha256": "0" * 64,
        "archive_size": 10,
        "manifest_sha256": "1" * 64,
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def _readers(hub: LocalHub, tmp_path: Path) -> dict:
    return {
        "read_index": hub.read_index,
        "versions": lambda: hub.versions("a0"),
        "entry": lambda: hub.entry(FV1),
        "all_versions": hub.all_versions,
        "published_versions": hub.published_versions,
        "check_can_publish": hub.check_can_publish,
        "preflight": lambda: hub.preflight("a0"),
        "publish_staged": lambda: hub.publish_staged("a0", _stage(tmp_path)),
    }


BROKEN_INDEX = {
    "a list": "[]",
    "empty": "",
    "truncated": '{"format": 1, "entries": [{"handle": "repvgg/a0/feat',
    "entries not a list": '{"format": 1, "entries": {}}',
    "a future format": '{"format": 2, "entries": []}',
    "not utf-8": b"\xff\xfe\x00",
    "a string": '"index"',
}


@pytest.mark.parametrize("case", sorted(BROKEN_INDEX))
def test_an_unreadable_index_is_one_line_for_every_reader(tmp_path, case):
    root = tmp_path / "hub"
    root.mkdir()
    content = BROKEN_INDEX[case]
    (root / "index.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    hub = LocalHub(root)
    for name, call in _readers(hub, tmp_path).items():
        with pytest.raises(HubStateError) as caught:
            call()
        message = _one_line(caught.value)
        assert str(root / "index.json") in message, (name, message)
        assert "repair" in message or "upgrade" in message, (name, message)
    assert not any(root.glob("repvgg/*/*/*")), "a refused publish wrote a version"


def test_an_index_that_is_a_folder_or_a_hub_that_is_a_file(tmp_path):
    root = tmp_path / "hub"
    (root / "index.json").mkdir(parents=True)
    for name, call in _readers(LocalHub(root), tmp_path).items():
        with pytest.raises(HubStateError) as caught:
            call()
        assert "is a folder" in _one_line(caught.value), name
    afile = tmp_path / "afile"
    afile.write_text("x")
    for name, call in _readers(LocalHub(afile), tmp_path).items():
        with pytest.raises(HubError) as caught:
            call()
        assert "is a file, not a hub folder" in _one_line(caught.value) and "--hub" in str(caught.value), name
    assert afile.read_text() == "x"


BAD_ENTRIES = {
    "no created": _index_entry("repvgg/a0/feature_vector/2", created=None),
    "version as a string": _index_entry("repvgg/a0/feature_vector/2", version="2"),
    "an unparseable handle": _index_entry("MyOrg/a0/feature_vector/2"),
    "a script namespace": _index_entry("<script>/a0/feature_vector/2"),
    "a traversing handle": _index_entry("repvgg/../feature_vector/2"),
    "not an object": 42,
    "a handle that disagrees": _index_entry("repvgg/a0/feature_vector/2", variant="b0"),
    "a bad sha256": _index_entry("repvgg/a0/feature_vector/2", sha256="xyz"),
    "a repeated handle": _index_entry("repvgg/a0/feature_vector/1", created="2025-01-01T00:00:00+00:00"),
    "a control character": _index_entry("repvgg/a0/feature_vector/2\x1b[31m"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_a_bad_entry_is_skipped_by_readers_and_stops_publish(tmp_path, case, caplog):
    root = tmp_path / "hub"
    root.mkdir()
    index = {"format": 1, "entries": [_index_entry(), BAD_ENTRIES[case]]}
    (root / "index.json").write_text(json.dumps(index))
    hub = LocalHub(root)
    with caplog.at_level(logging.WARNING, logger=local_module.__name__):
        assert [e["handle"] for e in hub.read_index()] == ["repvgg/a0/feature_vector/1"]
    assert len(hub.index_warnings) == 1 and "entry 2" in hub.index_warnings[0]
    assert "entry 2" in caplog.text and "\x1b" not in caplog.text
    assert [str(v.handle) for v in hub.versions("a0")] == ["repvgg/a0/feature_vector/1"]
    assert [str(v.handle) for v in hub.all_versions()] == ["repvgg/a0/feature_vector/1"]
    assert hub.published_versions() == {"a0": [1]}
    assert hub.entry(FV1)["version"] == 1
    with pytest.raises(NotPublishedError) as caught:
        hub.entry(Handle("repvgg", "a0", "feature_vector", 2))
    assert caught.value.available == (1,) and "published versions: 1" in _one_line(caught.value)
    for name in ("check_can_publish", "preflight", "publish_staged"):
        with pytest.raises(HubStateError) as caught:
            _readers(hub, tmp_path)[name]()
        message = _one_line(caught.value)
        assert "entry 2" in message and "repair" in message, (name, message)
        assert "\x1b" not in message
    report = hub.repair()
    assert len(report.dropped) == 1 and report.backup and (root / report.backup).is_file()
    assert [e["handle"] for e in json.loads((root / "index.json").read_text())["entries"]] == [
        "repvgg/a0/feature_vector/1"
    ]


def test_an_entry_whose_handle_does_not_parse_is_never_written(tmp_path):
    hub = LocalHub(tmp_path)
    _publish(hub, tmp_path)
    before = (tmp_path / "index.json").read_bytes()
    for bad in (_index_entry("MyOrg/a0/feature_vector/9"), _index_entry("repvgg/a0/feature_vector/9", version="9")):
        with pytest.raises(HubStateError) as caught:
            hub._write_index([*hub.read_index(), bad])
        assert "refusing to write" in _one_line(caught.value)
    assert (tmp_path / "index.json").read_bytes() == before


def test_an_unwritable_task_folder_leaves_nothing_behind(tmp_path, monkeypatch):
    """The commit's 4th rename (into classification/) fails: the first three are moved back."""
    hub = LocalHub(tmp_path / "hub")
    _publish(hub, tmp_path, "v1")
    before = _files(tmp_path / "hub")
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if "/classification/" in str(dst) and "/.staging/" not in str(dst):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    staged = _stage(tmp_path, "v2")
    staged_files = _files(staged)
    with pytest.raises(HubError) as caught:
        hub.publish_staged("a0", staged)
    message = _one_line(caught.value)
    assert "permission denied" in message and "nothing was published" in message and "writable" in message
    monkeypatch.undo()
    assert _files(tmp_path / "hub") == before and _files(staged) == staged_files
    assert list((tmp_path / "hub" / STAGING).iterdir()) == []
    assert _publish(hub, tmp_path, "v2") == [2]


# ----- D27: list on a corrupt index ---------------------------------------------------------------


def test_published_versions_raises_on_a_corrupt_index_and_is_empty_without_one(tmp_path):
    assert LocalHub(tmp_path / "nothing-yet").published_versions() == {}
    assert not (tmp_path / "nothing-yet").exists()
    hub = LocalHub(tmp_path / "hub")
    _publish(hub, tmp_path)
    assert hub.published_versions() == {"a0": [1]}
    (tmp_path / "hub/index.json").write_text('{"format": 1, "entr')
    with pytest.raises(HubStateError):
        hub.published_versions()


# ----- D24: version bounds -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, -1, MAX_VERSION + 1, 99999999999999999999, True, "1", 1.0])
def test_an_out_of_range_version_is_refused_before_anything_is_written(tmp_path, version):
    hub = LocalHub(tmp_path / "hub")
    staged = _stage(tmp_path)
    with pytest.raises(UsageError) as caught:
        hub.publish_staged("a0", staged, version=version)
    assert "--version" in _one_line(caught.value)
    with pytest.raises(UsageError):
        hub.preflight("a0", version=version)
    assert not any((tmp_path / "hub").glob("repvgg/**/*"))
    assert _publish(hub, tmp_path, version=MAX_VERSION) == [MAX_VERSION]
    with pytest.raises(HubError, match="every version"):
        _publish(hub, tmp_path)


# ----- D3: versions the index does not list are never deleted, their numbers never reused -------------


def test_a_deleted_index_stops_publish_and_repair_brings_the_versions_back(tmp_path):
    root = tmp_path / "hub"
    hub = LocalHub(root)
    assert _publish(hub, tmp_path, "v1") == [1] and _publish(hub, tmp_path, "v2") == [2]
    original = json.loads((root / "index.json").read_text())["entries"]
    published = _published_files(root)
    (root / "index.json").unlink()

    for call in (hub.check_can_publish, lambda: hub.preflight("a0"), lambda: _publish(hub, tmp_path, "v3")):
        with pytest.raises(HubStateError) as caught:
            call()
        message = _one_line(caught.value)
        assert "is missing" in message and f"repvgg-registry repair --hub {root}" in message
    assert _published_files(root) == published  # nothing deleted, nothing added
    assert hub.versions("a0") == []

    dry = hub.repair(dry_run=True)
    assert dry.changed and not dry.written and not (root / "index.json").exists()
    report = hub.repair()
    assert report.index == "missing" and report.written and report.backup is None
    assert sorted(report.added) == sorted(e["handle"] for e in original)
    assert f"{2 * len(KERAS_TASKS)} added from manifests" in report.describe() and json.dumps(report.to_dict())
    rebuilt = {e["handle"]: e for e in json.loads((root / "index.json").read_text())["entries"]}
    for entry in original:
        again = rebuilt[entry["handle"]]
        for key in ("namespace", "variant", "task", "version", "weights_source", "sha256", "archive_size"):
            assert again[key] == entry[key], key
        assert again["manifest_sha256"] == entry["manifest_sha256"]
    assert _versions(hub) == [1, 2]
    assert _publish(hub, tmp_path, "v3") == [3]
    assert _published_files(root).items() >= published.items()
    assert hub.repair().changed is False


@pytest.mark.parametrize("state", ["truncated", "empty entries", "older backup"])
def test_a_stale_or_truncated_index_stops_publish_and_repair_restores_it(tmp_path, state):
    root = tmp_path / "hub"
    hub = LocalHub(root)
    _publish(hub, tmp_path, "v1")
    older = (root / "index.json").read_text()
    _publish(hub, tmp_path, "v2")
    published = _published_files(root)
    text = {"truncated": "", "empty entries": '{"format": 1, "entries": []}', "older backup": older}[state]
    (root / "index.json").write_text(text)
    with pytest.raises(HubStateError) as caught:
        _publish(hub, tmp_path, "v3")
    assert "repair" in _one_line(caught.value)
    assert _published_files(root) == published
    report = hub.repair()
    assert report.backup and (root / report.backup).read_text() == text
    assert _versions(hub) == [1, 2] and _publish(hub, tmp_path, "v3") == [3]


def test_an_orphan_without_a_journal_keeps_its_number_and_its_files(tmp_path):
    """Files that no index entry owns and no dead commit claims (an old crash, a hand copy) are
    left alone, and the next version goes above them."""
    root = tmp_path / "hub"
    hub = LocalHub(root)
    _publish(hub, tmp_path, "v1")
    orphan = root / "repvgg/a0/feature_vector/2"
    orphan.mkdir()
    (orphan / "saved_model.pb").write_bytes(b"half")
    (root / "repvgg/a0/classification/3.tar.gz").write_bytes(b"half")
    assert hub.taken_versions("a0") == {1, 2, 3}
    for call in (lambda: hub.preflight("a0", version=2), lambda: _publish(hub, tmp_path, version=3)):
        with pytest.raises(VersionExistsError):
            call()
    assert _publish(hub, tmp_path, "v4") == [4]
    assert (orphan / "saved_model.pb").read_bytes() == b"half"
    assert (root / "repvgg/a0/classification/3.tar.gz").read_bytes() == b"half"
    report = hub.repair()
    assert not report.changed and len(report.incomplete) == 2 and report.kept


PUBLISH_IN_CHILD = """
    import sys
    from pathlib import Path
    from repvgg_registry.registry.local import LocalHub
    LocalHub(sys.argv[1]).publish_staged("a0", Path(sys.argv[2]))
    print("done", flush=True)
"""


@pytest.mark.parametrize("moment", ["first rename", "last rename"])
def test_sigkill_mid_commit_is_rolled_back_by_the_next_publish(tmp_path, moment):
    root = tmp_path / "hub"
    hub = LocalHub(root)
    _publish(hub, tmp_path, "v1")
    published = _published_files(root)
    # The commit sleeps this long after each rename; the last one is reached after five sleeps.
    pause = "60" if moment == "first rename" else "1.5"
    child = _child(PUBLISH_IN_CHILD, str(root), str(_stage(tmp_path, "killed")), env={COMMIT_PAUSE_ENV: pause})
    mark = root / (
        "repvgg/a0/feature_vector/2" if moment == "first rename" else "repvgg/a0/classification/2.manifest.json"
    )
    deadline = time.monotonic() + 60
    try:
        while not mark.exists():
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the child never reached its commit"
            time.sleep(0.02)
    finally:
        _kill(child)
    assert _versions(hub) == [1]  # renamed in, never indexed: invisible
    with pytest.raises(NotPublishedError):
        hub.entry(Handle("repvgg", "a0", "feature_vector", 2))
    [area] = (root / STAGING).iterdir()
    assert (area / JOURNAL).is_file()
    left = _files(root)
    dry = hub.repair(dry_run=True)
    assert not dry.changed and not dry.added and not dry.incomplete, dry
    assert len(dry.swept) == 1 and "rolled back repvgg/a0/" in dry.swept[0] and _files(root) == left

    # The cut-short commit is moved out; its number was never visible, so the next publish gets it.
    staged = _stage(tmp_path, "next")
    expected = sha256_file(staged / "feature_vector.tar.gz")
    [info] = [v for v in hub.publish_staged("a0", staged) if v.handle.task == "feature_vector"]
    assert info.handle.version == 2 and info.sha256 == expected
    assert sha256_file(root / "repvgg/a0/feature_vector/2.tar.gz") == expected
    assert _versions(hub) == [1, 2]
    assert list((root / STAGING).iterdir()) == []
    assert _published_files(root).items() >= published.items()
    assert LocalHub(root).repair().changed is False


def test_a_dead_journal_is_only_rolled_back_when_the_index_shows_it_never_completed(tmp_path):
    root = tmp_path / "hub"
    hub = LocalHub(root)
    _publish(hub, tmp_path, "v1")
    published = _published_files(root)

    def dead_journal_for_v1() -> Path:
        area = root / STAGING / "dead"
        area.mkdir(parents=True)
        (area / ".lock").write_text("")
        moves = []
        for task in TASKS:
            for name in ("1", "1.tar.gz", "1.manifest.json"):
                st = os.lstat(root / "repvgg/a0" / task / name)
                moves.append({"target": f"repvgg/a0/{task}/{name}", "ino": st.st_ino, "dev": st.st_dev})
        handles = [f"repvgg/a0/{task}/1" for task in TASKS]
        (area / JOURNAL).write_text(json.dumps({"format": 1, "handles": handles, "moves": moves}))
        return area

    # Killed after the index was replaced, before the journal was dropped: v1 is published, kept.
    area = dead_journal_for_v1()
    assert _publish(hub, tmp_path, "v2") == [2]
    assert not area.exists() and _published_files(root).items() >= published.items()

    # The index is missing: it cannot tell, so nothing is touched and repair brings v1, v2 back.
    area = dead_journal_for_v1()
    (root / "index.json").unlink()
    with pytest.raises(HubStateError):
        _publish(hub, tmp_path, "v3")
    assert area.exists() and _published_files(root).items() >= published.items()
    hub.repair()
    assert _versions(hub) == [1, 2] and not area.exists()

    # A journal naming a target whose inode is not the one it renamed: that file is not touched.
    area = dead_journal_for_v1()
    journal = json.loads((area / JOURNAL).read_text())
    for move in journal["moves"]:
        move["ino"] += 1
    journal["handles"] = ["repvgg/a0/feature_vector/7"]
    (area / JOURNAL).write_text(json.dumps(journal))
    assert _publish(hub, tmp_path, "v3") == [3]
    assert _published_files(root).items() >= published.items() and _versions(hub) == [1, 2, 3]


# ----- D4: staging folders are judged by their lock, not a PID -------------------------------------

HOLD_STAGING = """
    import sys, time
    from repvgg_registry.registry.local import LocalHub
    area = LocalHub(sys.argv[1]).staging_dir()
    (area / "work").write_text("live")
    print(area, flush=True)
    time.sleep(120)
"""


def test_a_live_staging_folder_of_another_process_is_never_swept(tmp_path):
    root = tmp_path / "hub"
    hub = LocalHub(root)
    child = _child(HOLD_STAGING, str(root))
    try:
        area = Path(_readline(child))
        # Named like a dead PID's folder would have been: the name means nothing now.
        renamed = area.with_name(f"999999999-{area.name}")
        area.rename(renamed)
        same_process = LocalHub(root).staging_dir()
        assert _publish(hub, tmp_path, "v1") == [1] and _publish(hub, tmp_path, "v2") == [2]
        assert (renamed / "work").read_text() == "live" and same_process.is_dir()
    finally:
        _kill(child)
    assert _publish(hub, tmp_path, "v3") == [3]
    assert not renamed.exists() and same_process.is_dir()
    assert not hasattr(local_module, "_pid_alive")


def test_old_lockless_staging_folders_are_swept_only_when_old(tmp_path):
    root = tmp_path / "hub"
    young, old = root / STAGING / "12345-young", root / STAGING / "12345-old"
    for area in (young, old):
        (area / "release").mkdir(parents=True)
    past = time.time() - LEGACY_STAGING_AGE - 60
    os.utime(old, (past, past))
    (root / ".index-abc123").write_text("{")  # a temporary index of a writer that died
    hub = LocalHub(root)
    assert _publish(hub, tmp_path) == [1]
    assert young.exists() and not old.exists() and not (root / ".index-abc123").exists()


# ----- D6: file modes --------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_index_mode_follows_the_umask_like_every_other_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        hub = LocalHub(tmp_path / "hub")
        _publish(hub, tmp_path)
        mode = (tmp_path / "hub/index.json").stat().st_mode & 0o777
        assert mode == 0o666 & ~umask
        assert mode == (tmp_path / "hub/repvgg/a0/feature_vector/1.manifest.json").stat().st_mode & 0o777
        (tmp_path / "hub/index.json").unlink()
        hub.repair()
        assert (tmp_path / "hub/index.json").stat().st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(old)


# ----- D7: a full disk during the commit ---------------------------------------------------------------


def _enospc(name: str) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)


@pytest.mark.parametrize("where", ["replace the index", "write the index", "write the journal", "first publish"])
def test_a_full_disk_during_the_commit_leaves_nothing_and_the_next_publish_works(tmp_path, monkeypatch, where):
    root = tmp_path / "hub"
    hub = LocalHub(root)
    if where != "first publish":
        _publish(hub, tmp_path, "v1")
    before = _files(root)
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst, *args, **kwargs):
        if where in ("replace the index", "first publish") and Path(dst).name == "index.json":
            raise _enospc(str(src))
        return real_replace(src, dst, *args, **kwargs)

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if (where == "write the index" and "/.index-" in target) or (
            where == "write the journal" and "/.commit-" in target
        ):
            raise _enospc(target)
        return real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    staged = _stage(tmp_path, "full")
    staged_files = _files(staged)
    with pytest.raises(HubError) as caught:
        hub.publish_staged("a0", staged)
    message = _one_line(caught.value)
    assert "no space left on device" in message and "free space and rerun" in message
    assert "nothing was published" in message
    monkeypatch.undo()
    after = _files(root)
    if where == "first publish":  # the empty index of the first commit could not be written either
        assert set(after) <= {"index.json"} and not any(root.glob("repvgg/*/*/*"))
    else:
        assert after == before
    assert not list(root.glob(".index-*")) and list((root / STAGING).iterdir()) == []
    assert _files(staged) == staged_files  # the caller's release is given back
    want = [1] if where == "first publish" else [2]
    assert sorted({v.handle.version for v in hub.publish_staged("a0", staged)}) == want


# ----- D19: the hub lock says who holds it and gives up -------------------------------------------------


def test_a_waiting_publish_says_who_holds_the_lock_and_gives_up(tmp_path):
    root = tmp_path / "hub"
    holder = LocalHub(root)
    told: list[str] = []
    waiter = LocalHub(root, lock_timeout=0.3, on_lock_wait=told.append)
    staged = _stage(tmp_path)
    staged_files = _files(staged)
    with holder.lock():  # a second open file description: flock conflicts within one process too
        start = time.monotonic()
        with pytest.raises(HubLockedError) as caught:
            waiter.publish_staged("a0", staged)
        assert time.monotonic() - start >= 0.3
    message = _one_line(caught.value)
    who = f"pid {os.getpid()} on {socket.gethostname()}"
    assert who in message and LOCK_TIMEOUT_ENV in message and caught.value.waited_s >= 0.3
    assert len(told) == 1 and who in told[0] and str(root / ".lock") in told[0]
    assert _files(staged) == staged_files and waiter.versions("a0") == []
    assert (root / ".lock").read_text() == ""  # released: no holder
    assert _publish(waiter, tmp_path) == [1]


HOLD_LOCK = """
    import sys, time
    from repvgg_registry.registry.local import LocalHub
    with LocalHub(sys.argv[1]).lock():
        print("held", flush=True)
        time.sleep(120)
"""


def test_the_lock_timeout_comes_from_the_environment_and_a_lock_of_another_process(tmp_path, monkeypatch, caplog):
    root = tmp_path / "hub"
    child = _child(HOLD_LOCK, str(root))
    try:
        assert _readline(child) == "held"
        monkeypatch.setenv(LOCK_TIMEOUT_ENV, "0.2")
        hub = LocalHub(root)
        with caplog.at_level(logging.WARNING, logger=local_module.__name__), pytest.raises(HubLockedError) as caught:
            hub.check_can_publish()
        assert f"pid {child.pid} on" in str(caught.value)
        assert f"pid {child.pid} on" in caplog.text and "waiting for the hub lock" in caplog.text
        monkeypatch.setenv(LOCK_TIMEOUT_ENV, "soon")
        with pytest.raises(UsageError, match=LOCK_TIMEOUT_ENV):
            hub.check_can_publish()
    finally:
        _kill(child)
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "5")
    LocalHub(root).check_can_publish()  # the kernel released the dead holder's lock


def test_a_wait_ends_when_the_lock_is_released(tmp_path):
    root = tmp_path / "hub"
    held, release = threading.Event(), threading.Event()

    def hold():
        with LocalHub(root).lock():
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(30)
    told: list[str] = []
    threading.Timer(0.5, release.set).start()
    waiter = LocalHub(root, lock_timeout=30, on_lock_wait=told.append)
    assert _publish(waiter, tmp_path) == [1]
    thread.join(30)
    assert len(told) == 1


# ----- what stays: immutability, concurrency ------------------------------------------------------------


def test_versions_are_immutable_and_a_refused_publish_gives_the_release_back(tmp_path):
    root = tmp_path / "hub"
    hub = LocalHub(root)
    _publish(hub, tmp_path, "v1")
    before = _files(root)
    staged = _stage(tmp_path, "again")
    staged_files = _files(staged)
    with pytest.raises(VersionExistsError) as caught:
        hub.publish_staged("a0", staged, version=1)
    assert "immutable" in _one_line(caught.value)
    assert _files(root) == before and _files(staged) == staged_files
    assert [v.handle.version for v in hub.publish_staged("a0", staged, version=5)] == [5] * len(KERAS_TASKS)
    assert not staged.exists()


def test_concurrent_publishes_get_distinct_complete_versions(tmp_path):
    root = tmp_path / "hub"
    releases = [_stage(tmp_path, i) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda r: LocalHub(root).publish_staged("a0", r), releases))
    assert sorted(r[0].handle.version for r in results) == [1, 2, 3, 4, 5, 6]
    assert all({v.handle.version for v in r} == {r[0].handle.version} for r in results)
    hub = LocalHub(root)
    assert len(hub.all_versions()) == 6 * len(KERAS_TASKS)
    assert list((root / STAGING).iterdir()) == [] and hub.repair().changed is False


def test_a_staged_release_inside_the_hub_is_renamed_in_place(tmp_path):
    hub = LocalHub(tmp_path / "hub")
    area = hub.staging_dir()
    staged = _stage(area, "inside")
    inode = os.lstat(staged / "feature_vector").st_ino
    assert _publish(hub, tmp_path, "first") == [1]
    [info] = [v for v in hub.publish_staged("a0", staged) if v.handle.task == "feature_vector"]
    assert info.handle.version == 2 and os.lstat(info.location).st_ino == inode
    shutil.rmtree(area)


# ----- a real artifact: repair gives back a hub that verifies ---------------------------------------------


@pytest.fixture(scope="module")
def real_hub(tmp_path_factory):
    from repvgg_registry.registry.operations import publish_variant

    root = tmp_path_factory.mktemp("real-hub")
    publish_variant(LocalHub(root), "A0", weights="random", seed=0)
    return root


def test_repair_of_a_real_hub_verifies(real_hub, tmp_path):
    from repvgg_registry.registry.operations import verify

    root = tmp_path / "hub"
    shutil.copytree(real_hub, root, symlinks=True)
    original = json.loads((root / "index.json").read_text())["entries"]
    (root / "index.json").unlink()
    hub = LocalHub(root)
    with pytest.raises(HubStateError, match="repair"):
        hub.check_can_publish()
    hub.repair()
    again = json.loads((root / "index.json").read_text())["entries"]
    strip = lambda entries: [{k: v for k, v in e.items() if k != "created"} for e in entries]  # noqa: E731
    assert strip(again) == strip(original)
    for v in hub.all_versions():
        report = verify(hub, str(v.handle))
        assert report.ok, report.problems


def test_every_keras_file_of_a_real_version_is_checked_by_verify(real_hub, tmp_path):
    """Each task's ``<N>.keras`` and ``train/<N>.keras`` are in the index and the manifests: a
    flipped byte in any of them fails ``verify`` of its handle, naming the file."""
    from repvgg_registry.registry.operations import verify

    root = tmp_path / "hub"
    shutil.copytree(real_hub, root, symlinks=True)
    hub = LocalHub(root)
    entries = {e["handle"]: e for e in hub.read_index()}
    assert sorted(entries) == [f"repvgg/a0/{t}/1" for t in sorted(KERAS_TASKS)]
    train = entries["repvgg/a0/train/1"]
    assert train["sha256"] == train["keras_sha256"] == sha256_file(root / "repvgg/a0/train/1.keras")
    assert sorted(p.name for p in (root / "repvgg/a0/train").iterdir()) == ["1.keras", "1.manifest.json"]
    for task in KERAS_TASKS:
        handle = f"repvgg/a0/{task}/1"
        assert verify(hub, handle).ok
        path = root / "repvgg/a0" / task / "1.keras"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        report = verify(hub, handle)
        assert not report.ok and report.problems[0] == "1.keras: sha256 differs from the hub's record", report.problems
        assert "1.keras: sha256 differs from the manifest" in report.problems


def test_a_truncated_keras_file_is_named_by_verify_of_its_path(real_hub, tmp_path):
    """Verify of a path (no hub record) still compares with the manifest, and a file that is not a
    zip any more is named, in one line."""
    from repvgg_registry.publish.verify import verify_keras
    from repvgg_registry.registry.operations import verify

    root = tmp_path / "hub"
    shutil.copytree(real_hub, root, symlinks=True)
    path = root / "repvgg/a0/train/1.keras"
    path.write_bytes(path.read_bytes()[:1000])
    report = verify(LocalHub(root), str(path))
    assert not report.ok and len(report.problems) == 1
    assert report.problems[0].startswith("1.keras: size 1000 != ") and "in the manifest" in report.problems[0]
    problems, _ = verify_keras(path, {"name": "logits", "num_classes": 1000})
    assert problems == ["1.keras: not a .keras file (BadZipFile)"]


def test_train_files_the_index_does_not_list_stop_publish_until_repair(tmp_path):
    """``train/<N>.keras`` with its manifest is a published version on disk like the SavedModel
    tasks: an index that lost it stops publish, and repair brings it back from its manifest."""
    root = tmp_path / "hub"
    hub = LocalHub(root)
    _publish(hub, tmp_path, "v1")
    index = json.loads((root / "index.json").read_text())
    index["entries"] = [e for e in index["entries"] if e["task"] != "train"]
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(HubStateError, match="repvgg/a0/train/1"):
        _publish(hub, tmp_path, "v2")
    assert hub.repair().added == ["repvgg/a0/train/1"]
    assert [v.handle.task for v in hub.versions("a0")] == sorted(KERAS_TASKS)


def test_a_version_from_before_keras_files_still_reads_and_repairs(tmp_path):
    """Versions published before ``.keras`` files existed have no ``keras`` in their manifest and
    no train handle: the hub still counts them as complete."""
    root = tmp_path / "hub"
    hub = LocalHub(root)
    _publish(hub, tmp_path, "v1")
    for task in TASKS:
        manifest = root / "repvgg/a0" / task / "1.manifest.json"
        data = json.loads(manifest.read_text())
        del data["keras"]
        manifest.write_text(json.dumps(data))
        (root / "repvgg/a0" / task / "1.keras").unlink()
    shutil.rmtree(root / "repvgg/a0/train")
    (root / "index.json").unlink()
    report = hub.repair()
    assert sorted(report.added) == [f"repvgg/a0/{t}/1" for t in sorted(TASKS)] and report.incomplete == []
    assert _publish(hub, tmp_path, "v2") == [2]


def test_a_version_from_before_feature_maps_still_reads_repairs_and_verifies(tmp_path):
    """Versions published before the feature_maps task existed have no such handle: the hub still
    counts them as complete, repairs them and publishes the next version beside them."""
    root = tmp_path / "hub"
    hub = LocalHub(root)
    _publish(hub, tmp_path, "v1")
    shutil.rmtree(root / "repvgg/a0/feature_maps")
    (root / "index.json").unlink()
    report = hub.repair()
    expected = sorted(f"repvgg/a0/{t}/1" for t in KERAS_TASKS if t != "feature_maps")
    assert sorted(report.added) == expected and report.incomplete == []
    assert sorted(str(v.handle) for v in hub.versions("a0")) == expected
    assert _publish(hub, tmp_path, "v2") == [2]
    assert "repvgg/a0/feature_maps/2" in {str(v.handle) for v in hub.versions("a0")}
