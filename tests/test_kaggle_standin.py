"""The Kaggle Models stand-in (tests/kaggle_standin.py) driven by the real kagglehub 1.0.3 and
kagglesdk clients, no mocks: uploads and their numbering, downloads of a version, of one file and of
the latest, the failures it injects, auth, and port 7777 (the only one kagglehub's test mode uses).

kagglehub reads its configuration at call time (only its log level is read at import), so the client
runs in this process with the environment of ``client_env`` set for the module and restored after.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import kagglehub
import pytest
import requests
from google.protobuf.field_mask_pb2 import FieldMask
from kaggle_standin import (
    DEFAULT_TOKEN,
    PortTakenError,
    client_env,
    client_environment,
    start_standin,
    stop_standin,
    subprocess_env,
    tree_digests,
)
from kagglehub.clients import build_kaggle_client
from kagglehub.exceptions import BackendError, KaggleApiHTTPError
from kagglehub.handle import parse_model_handle
from kagglesdk.models.types.model_api_service import (
    ApiGetModelInstanceRequest,
    ApiGetModelRequest,
    ApiListModelInstancesRequest,
    ApiListModelInstanceVersionsRequest,
    ApiUpdateModelInstanceRequest,
    ApiUpdateModelRequest,
)
from kagglesdk.models.types.model_enums import ModelFramework

OWNER = "alice"
HANDLE = f"{OWNER}/repvgg/tensorFlow2/a0"


class Standin:
    def __init__(self, server, state, folder: Path) -> None:
        self.server, self.state, self.folder = server, state, folder


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kaggle")
    (folder / "home").mkdir()
    server, state, _ = start_standin()
    standin = Standin(server, state, folder)
    library_logger = logging.getLogger("kagglehub")
    level = library_logger.level
    library_logger.setLevel(logging.WARNING)  # kagglehub logs every file it uploads
    try:
        with client_environment(client_env(folder, home=folder / "home")):
            yield standin
    finally:
        library_logger.setLevel(level)
        stop_standin(standin.server)


def _digests(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def _model_files(seed: int) -> dict[str, bytes]:
    return {
        "saved_model.pb": os.urandom(1000 + seed),
        "variables/variables.index": os.urandom(300),
        "variables/variables.data-00000-of-00001": os.urandom(200_000),
        "assets/deep/er/labels.txt": f"labels {seed}\n".encode(),
        "empty.txt": b"",
    }


def _instance_request(cls, handle: str):
    """A kagglesdk request naming the instance ``handle``, its framework mapped as kagglehub does."""
    h = parse_model_handle(handle)
    r = cls()
    r.owner_slug, r.model_slug, r.instance_slug, r.framework = h.owner, h.model, h.variation, h.framework_enum()
    return r


@pytest.fixture(scope="module")
def published(kaggle, tmp_path_factory):
    """HANDLE uploaded twice with different files: ``{1: local folder, 2: local folder}``."""
    base = tmp_path_factory.mktemp("published")
    v1 = _write(base / "v1", _model_files(1))
    v2 = _write(base / "v2", {**_model_files(2), "README.md": b"# v2\n"})
    kagglehub.model_upload(HANDLE, str(v1), license_name="Apache 2.0", version_notes="first upload")
    kagglehub.model_upload(HANDLE, str(v2), license_name="Apache 2.0", version_notes="second upload")
    return {1: v1, 2: v2}


def test_two_uploads_are_versions_1_and_2_with_the_same_bytes(kaggle, published):
    state = kaggle.state
    assert state.version_numbers(HANDLE) == [1, 2]
    for number, folder in published.items():
        assert _digests(state.files(HANDLE, number)) == tree_digests(folder)  # nested folders, full paths
    assert "assets/deep/er/labels.txt" in state.files(HANDLE, 1)

    with build_kaggle_client() as client:
        api = client.models.model_api_client
        instance = api.get_model_instance(_instance_request(ApiGetModelInstanceRequest, HANDLE))
        versions = api.list_model_instance_versions(_instance_request(ApiListModelInstanceVersionsRequest, HANDLE))
        listing = ApiListModelInstancesRequest()
        listing.owner_slug, listing.model_slug = OWNER, "repvgg"
        instances = api.list_model_instances(listing).instances
    assert instance.version_number == 2
    assert instance.license_name == "Apache 2.0"
    assert instance.framework == ModelFramework.MODEL_FRAMEWORK_TENSOR_FLOW_2
    assert [v.version_number for v in versions.version_list.versions] == [2, 1]
    assert [(i.slug, i.version_number, i.version_notes) for i in instances] == [("a0", 2, "second upload")]
    # kagglehub sends no notes with the first version (CreateModelInstance has no such field)
    inst = state.instance(HANDLE)
    assert (inst.versions[1].notes, inst.versions[2].notes) == ("", "second upload")
    create = state.model(OWNER, "repvgg").create_request
    assert (create["title"], create["isPrivate"]) == ("repvgg", True)
    assert state.rpc_calls()[:2] == ["GetModel", "CreateModel"]
    assert state.errors == []


def test_update_model_applies_its_mask(kaggle, published):
    with build_kaggle_client() as client:
        r = ApiUpdateModelRequest()
        r.owner_slug, r.model_slug = OWNER, "repvgg"
        r.title, r.subtitle, r.description = "RepVGG", "reparameterised VGG", "A *card*."
        r.provenance_sources = "timm weights"
        r.update_mask = FieldMask(paths=["subtitle", "description", "provenance_sources"])
        assert client.models.model_api_client.update_model(r).error == ""
        unmasked = ApiUpdateModelRequest()
        unmasked.owner_slug, unmasked.model_slug, unmasked.description = OWNER, "repvgg", "lost"
        assert "updateMask" in client.models.model_api_client.update_model(unmasked).error
        get = ApiGetModelRequest()
        get.owner_slug, get.model_slug = OWNER, "repvgg"
        model = client.models.model_api_client.get_model(get)
    assert (model.title, model.subtitle, model.description) == ("repvgg", "reparameterised VGG", "A *card*.")
    assert model.provenance_sources == "timm weights"
    assert kaggle.state.model(OWNER, "repvgg").updates[0]["updateMask"] == "subtitle,description,provenanceSources"

    with build_kaggle_client() as client:
        r = _instance_request(ApiUpdateModelInstanceRequest, HANDLE)
        r.overview, r.usage, r.license_name = "The A0 variant.", "model = keras.saving.load_model(...)", "MIT"
        r.update_mask = FieldMask(paths=["overview", "usage"])
        assert client.models.model_api_client.update_model_instance(r).error == ""
        instance = client.models.model_api_client.get_model_instance(
            _instance_request(ApiGetModelInstanceRequest, HANDLE)
        )
    assert (instance.overview, instance.usage, instance.license_name) == (r.overview, r.usage, "Apache 2.0")


def test_download_a_version_one_file_and_the_latest(kaggle, published):
    first = kagglehub.model_download(f"{HANDLE}/1")
    assert tree_digests(first) == tree_digests(published[1])
    one = kagglehub.model_download(f"{HANDLE}/1", path="assets/deep/er/labels.txt")
    assert Path(one).read_bytes() == b"labels 1\n"
    latest = kagglehub.model_download(HANDLE)
    assert Path(latest).name == "2"
    assert tree_digests(latest) == tree_digests(published[2])
    assert kaggle.state.errors == []


def test_more_than_50_files_go_as_an_archive_both_ways(kaggle, tmp_path):
    handle = f"{OWNER}/many/pyTorch/small"
    files = {f"part-{i:02d}/w.bin": os.urandom(64) for i in range(60)}
    kagglehub.model_upload(handle, str(_write(tmp_path / "src", files)), license_name="MIT")
    assert _digests(kaggle.state.files(handle)) == _digests(files)  # archive.zip unpacked
    folder = kagglehub.model_download(f"{handle}/1")  # more than 25 files: one .tar.gz
    assert tree_digests(folder) == _digests(files)
    assert kaggle.state.log[-1].path.endswith("/archive.tar.gz")


def test_blob_put_failing_midway_numbers_nothing(kaggle, tmp_path):
    handle = f"{OWNER}/flaky/tensorFlow2/b0"
    state = kaggle.state
    kagglehub.model_upload(handle, str(_write(tmp_path / "v1", _model_files(1))))
    state.fail_blob_puts(after=2, times=1)
    start = len(state.log)
    with pytest.raises(BackendError, match="status code 500"):
        kagglehub.model_upload(handle, str(_write(tmp_path / "v2", _model_files(2))), version_notes="broken")
    called = [e.name for e in state.log[start:]]
    assert "CreateModelInstance" not in called and "CreateModelInstanceVersion" not in called
    assert state.version_numbers(handle) == [1]

    state.fail_blob_puts(after=0, times=None)  # every upload fails from now on
    for _ in range(2):
        with pytest.raises(BackendError):
            kagglehub.model_upload(handle, str(tmp_path / "v2"))
    state.blob_put_failure_after = None
    kagglehub.model_upload(handle, str(tmp_path / "v2"), version_notes="retried")
    assert state.version_numbers(handle) == [1, 2]  # the next number, no gap
    assert state.instance(handle).versions[2].notes == "retried"


def test_dropped_upload_resumes_from_the_range_the_probe_reports(kaggle, tmp_path):
    handle = f"{OWNER}/resume/jax/c0"
    data = os.urandom(100_000)
    kaggle.state.short_blob_puts = 1
    kagglehub.model_upload(handle, str(_write(tmp_path / "src", {"params.bin": data})))
    assert kaggle.state.files(handle) == {"params.bin": data}
    puts = [e.summary["contentRange"] for e in kaggle.state.log if e.name == "BlobPut"][-3:]
    assert puts == ["bytes 0-99999/100000", "bytes */100000", "bytes 50000-99999/100000"]


def test_failing_version_creation_numbers_nothing(kaggle, tmp_path):
    handle = f"{OWNER}/repvgg/tensorFlow2/fails"
    state = kaggle.state
    kagglehub.model_upload(handle, str(_write(tmp_path / "v1", _model_files(1))))
    state.fail["CreateModelInstanceVersion"] = 1
    with pytest.raises(requests.HTTPError) as caught:
        kagglehub.model_upload(handle, str(tmp_path / "v1"))
    assert caught.value.response.status_code == 500
    state.reject["CreateModelInstanceVersion"] = 1
    with pytest.raises(BackendError, match="injected rejection"):
        kagglehub.model_upload(handle, str(tmp_path / "v1"))
    assert state.version_numbers(handle) == [1]
    kagglehub.model_upload(handle, str(tmp_path / "v1"))
    assert state.version_numbers(handle) == [1, 2]


def test_renumbering_is_observable(kaggle, tmp_path):
    handle = f"{OWNER}/repvgg/tensorFlow2/renumbered"
    state = kaggle.state
    kagglehub.model_upload(handle, str(_write(tmp_path / "v1", _model_files(1))))
    state.renumber(handle, skip=1)  # someone published in between
    kagglehub.model_upload(handle, str(_write(tmp_path / "v2", _model_files(2))), version_notes="mine")
    assert state.version_numbers(handle) == [1, 3]
    with build_kaggle_client() as client:
        request = _instance_request(ApiGetModelInstanceRequest, handle)
        assert client.models.model_api_client.get_model_instance(request).version_number == 3
    assert Path(kagglehub.model_download(handle)).name == "3"
    kagglehub.model_upload(handle, str(tmp_path / "v2"))
    assert state.version_numbers(handle) == [1, 3, 4]  # one-shot
    assert state.add_version(handle, {"theirs.bin": b"x"}, notes="theirs") == 5  # published by someone else
    kagglehub.model_upload(handle, str(tmp_path / "v2"))
    assert state.version_numbers(handle) == [1, 3, 4, 5, 6]
    assert state.add_version(f"{OWNER}/seeded/pyTorch/p0", {"w.pt": b"w"}) == 1
    assert kaggle.state.instance(f"{OWNER}/seeded/pyTorch/p0").framework == "MODEL_FRAMEWORK_PY_TORCH"
    assert Path(kagglehub.model_download(f"{OWNER}/seeded/pyTorch/p0/1", path="w.pt")).read_bytes() == b"w"


def test_forbidden_owner_is_403(kaggle, tmp_path, monkeypatch):
    kaggle.state.forbidden_owners.add("mallory")
    folder = _write(tmp_path / "src", {"w.bin": b"x"})
    with pytest.raises(requests.HTTPError) as caught:  # GetModel 403, then CreateModel 403
        kagglehub.model_upload("mallory/stolen/tensorFlow2/a0", str(folder))
    assert caught.value.response.status_code == 403
    assert kaggle.state.rpc_calls()[-2:] == ["GetModel", "CreateModel"]
    with pytest.raises(KaggleApiHTTPError) as caught:
        kagglehub.model_download("mallory/stolen/tensorFlow2/a0/1")
    assert caught.value.response.status_code == 403


def test_without_a_valid_token_401_and_read_only_403(kaggle, published, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))  # nothing cached: it must ask
    folder = _write(tmp_path / "src", {"w.bin": b"x"})
    monkeypatch.delenv("KAGGLE_API_TOKEN")
    for call in (
        lambda: kagglehub.model_upload(HANDLE, str(folder)),
        lambda: kagglehub.model_download(f"{HANDLE}/1"),
    ):
        with pytest.raises(KaggleApiHTTPError) as caught:
            call()
        assert caught.value.response.status_code == 401
    assert kaggle.state.log[-1].token is None

    monkeypatch.setenv("KAGGLE_API_TOKEN", "not-a-token")
    with pytest.raises(KaggleApiHTTPError) as caught:
        kagglehub.model_download(f"{HANDLE}/1")
    assert caught.value.response.status_code == 401

    kaggle.state.read_only_tokens.add("reader")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "reader")
    assert tree_digests(kagglehub.model_download(f"{HANDLE}/1")) == tree_digests(published[1])
    with pytest.raises(KaggleApiHTTPError) as caught:  # StartBlobUpload
        kagglehub.model_upload(HANDLE, str(folder))
    assert caught.value.response.status_code == 403
    assert kaggle.state.version_numbers(HANDLE) == [1, 2]


def test_a_client_in_a_subprocess(kaggle, published, tmp_path):
    """``subprocess_env`` gives a child process the same client setup (and a cold cache)."""
    env = subprocess_env({**client_env(tmp_path, home=kaggle.folder / "home"), "TQDM_DISABLE": "1"})
    code = f"import kagglehub; print(kagglehub.model_download({HANDLE + '/2'!r}, path='README.md'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.is_relative_to(tmp_path) and path.read_bytes() == b"# v2\n"


def test_second_standin_fails_at_once_and_the_port_is_freed(kaggle, published):
    started = time.monotonic()
    with pytest.raises(PortTakenError, match="7777") as caught:
        start_standin()
    assert time.monotonic() - started < 5
    assert "localhost:7777" in str(caught.value) and "one at a time" in str(caught.value)

    stop_standin(kaggle.server)  # the next module's stand-in can bind it at once
    server, _, _ = start_standin()
    stop_standin(server)
    kaggle.server, _, _ = start_standin(kaggle.state)
    assert os.environ["KAGGLE_API_TOKEN"] == DEFAULT_TOKEN
    assert kaggle.state.version_numbers(HANDLE) == [1, 2]
    assert Path(kagglehub.model_download(f"{HANDLE}/2", force_download=True)).name == "2"
