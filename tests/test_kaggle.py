"""Publishing to Kaggle Models (``--hub kaggle://OWNER``) with the real kagglehub 1.0.3 client, against
the in-repo stand-in in tests/kaggle_standin.py (Kaggle publishes no server and cannot be reached from
here). The stand-in owns 127.0.0.1:7777, the only port kagglehub's test mode talks to, so this module
and test_kaggle_standin.py run one after the other, never in parallel workers.

One A0 release (random weights, every deployment format) is built once and published to the stand-in
and to a local hub, so what Kaggle serves can be compared with the local hub's bytes and outputs; the
tests of numbering and failures publish small stand-in releases (tests/release_stubs.py).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import time
from pathlib import Path

import kagglehub
import keras
import numpy as np
import pytest
import tensorflow_hub as hub
import tf_keras
from kaggle_standin import DEFAULT_TOKEN, client_env, client_environment, start_standin, stop_standin, tree_digests
from release_stubs import stage_stub_release as _stage
from typer.testing import CliRunner

from repvgg_registry.cli import app
from repvgg_registry.errors import (
    HubError,
    InvalidNameError,
    MissingTokenError,
    UsageError,
    VersionExistsError,
    VersionSkewError,
)
from repvgg_registry.publish.build import build_artifacts
from repvgg_registry.publish.formats import DEPLOY_FORMATS
from repvgg_registry.publish.release import stage_release
from repvgg_registry.publish.tasks import RELEASE_TASKS
from repvgg_registry.registry import Handle, LocalHub, open_hub
from repvgg_registry.registry.kaggle import KaggleHub, parse_record, release_plan
from repvgg_registry.registry.operations import publish_variant
from repvgg_registry.variants.equivalence import sample_images

OWNER = "alice"
runner = CliRunner()


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    """The stand-in, with this process's kagglehub pointed at it (``client_env``) for the module."""
    folder = tmp_path_factory.mktemp("kaggle")
    (folder / "home").mkdir()
    server, state, _ = start_standin()
    standin = {"server": server, "state": state, "folder": folder}
    try:
        env = {**client_env(folder, home=folder / "home"), "REPVGG_REGISTRY_KAGGLE_PENDING": str(folder / "pending")}
        with client_environment(env):
            yield standin
    finally:
        stop_standin(standin["server"])  # a test may have restarted it


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """One A0 release (random weights, every format installed) staged once."""
    root = tmp_path_factory.mktemp("release")
    build_artifacts("A0", root / "a0", weights="random", seed=3, formats=DEPLOY_FORMATS)
    stage_release(root / "a0")
    return root / "a0"


def _hub(**kwargs) -> KaggleHub:
    return KaggleHub(OWNER, backoff_s=0.01, deadline_s=5, **kwargs)


def _copy(release: Path, tmp_path: Path) -> Path:
    target = tmp_path / "staged"
    shutil.copytree(release, target)
    return target


def _handles(slug: str, manifests_release: Path) -> list[str]:
    from repvgg_registry.publish.release import read_staged

    return [inst.handle(OWNER, slug) for inst in release_plan(read_staged(manifests_release))]


@pytest.fixture(scope="module")
def published(kaggle, release, tmp_path_factory):
    """A0 published twice to the stand-in and once to a local hub, from the same staged bytes."""
    base = tmp_path_factory.mktemp("published")
    first = _hub().publish_staged("a0", _copy(release, base / "1"))
    second = _hub().publish_staged("a0", _copy(release, base / "2"))
    local = LocalHub(base / "local")
    local.publish_staged("a0", _copy(release, base / "3"))
    return {"first": first, "second": second, "local": local}


def test_two_publishes_are_versions_1_and_2_of_every_instance(kaggle, release, published):
    state = kaggle["state"]
    handles = _handles("repvgg-a0", release)
    frameworks = {h.split("/")[2] for h in handles}
    assert frameworks == {"tensorFlow2", "keras", "tfLite", "onnx"}
    assert f"{OWNER}/repvgg-a0/keras/train" in handles
    assert f"{OWNER}/repvgg-a0/tensorFlow2/classification-serving" in handles
    for handle in handles:
        assert state.version_numbers(handle) == [1, 2], handle
        assert state.instance(handle).license_name == "MIT"
    assert [v.handle.version for v in published["first"]] == [1] * len(published["first"])
    assert [v.handle.task for v in published["second"]] == [
        t for t in RELEASE_TASKS if (release / f"{t}.manifest.json").exists()
    ]
    # the SavedModel at the instance root, with its task's manifest; the .keras instance its file
    files = state.files(f"{OWNER}/repvgg-a0/tensorFlow2/feature-vector", 1)
    assert "saved_model.pb" in files and "feature_vector.manifest.json" in files
    assert set(state.files(f"{OWNER}/repvgg-a0/keras/train", 2)) == {"train.keras", "train.manifest.json"}
    model = state.model(OWNER, "repvgg-a0")
    assert model.title == "RepVGG-A0" and model.is_private is False
    assert "# RepVGG-A0 for Keras 3 and TensorFlow / TF Hub" in model.description
    assert 'kagglehub.model_download("alice/repvgg-a0/tensorFlow2/feature-vector/2")' in model.description
    assert "Weights: random" in model.provenance_sources
    # the checksum record: in the overview for every version, in the notes from version 2 on
    inst = state.instance(f"{OWNER}/repvgg-a0/keras/classification")
    rows = parse_record(inst.overview)
    assert {(r.version, r.file) for r in rows} == {
        (n, f) for n in (1, 2) for f in ("classification.keras", "classification.manifest.json")
    }
    keras_sha = hashlib.sha256((release / "classification.keras").read_bytes()).hexdigest()
    assert {r.sha256 for r in rows if r.file == "classification.keras"} == {keras_sha}
    assert inst.versions[1].notes == ""  # kagglehub sends no notes with a first version
    assert f"classification.keras sha256 {keras_sha}" in inst.versions[2].notes
    assert inst.fine_tunable and 'keras.saving.load_model(path + "/classification.keras")' in inst.usage
    assert state.errors == []


def test_download_loads_in_tf_keras_and_keras_like_the_local_hub(kaggle, release, published, tmp_path):
    local = published["local"]
    handle = f"{OWNER}/repvgg-a0/tensorFlow2/feature-vector/1"
    path = kagglehub.model_download(handle)
    local_files = local.artifact_files(Handle.parse("repvgg/a0/feature_vector/1"))
    expected = tree_digests(local_files.folder)
    got = tree_digests(path)
    staged_manifest = (release / "feature_vector.manifest.json").read_bytes()
    assert got.pop("feature_vector.manifest.json") == hashlib.sha256(staged_manifest).hexdigest()
    assert got == expected  # the local hub's SavedModel, byte for byte

    images = sample_images(2, 64, 64, seed=5)
    ours = tf_keras.Sequential([hub.KerasLayer(path, trainable=True)])(images).numpy()
    theirs = tf_keras.Sequential([hub.KerasLayer(str(local_files.folder))])(images).numpy()
    np.testing.assert_array_equal(ours, theirs)

    keras_path = Path(kagglehub.model_download(f"{OWNER}/repvgg-a0/keras/classification/1"))
    model = keras.saving.load_model(keras_path / "classification.keras")
    local_cls = local.artifact_files(Handle.parse("repvgg/a0/classification/1"))
    reference = keras.saving.load_model(local_cls.keras)
    np.testing.assert_array_equal(np.asarray(model(images)), np.asarray(reference(images)))


def test_versions_verify_and_list_read_the_records(kaggle, published):
    kaggle_hub = _hub()
    rows = [(str(v.handle), v.weights_source, v.base_variant) for v in kaggle_hub.versions("A0")]
    tasks = [v.handle.task for v in published["first"]]
    assert rows == [(f"repvgg/a0/{task}/{n}", "random", "A0") for n in (1, 2) for task in tasks]
    assert [v.sha256 for v in kaggle_hub.versions("A0")][: len(tasks)] == [v.sha256 for v in published["first"]]
    for task in ("feature_vector", "train", "classification-serving"):
        report = kaggle_hub.verify(f"repvgg/a0/{task}/2")
        assert report.ok, report.problems
    assert kaggle_hub.published_models() == {"A0": {"a0": [1, 2]}}
    result = runner.invoke(app, ["list", "--hub", f"kaggle://{OWNER}", "--json"])
    assert result.exit_code == 0, result.output
    assert '"published": [\n      1,\n      2\n    ]' in result.stdout
    result = runner.invoke(app, ["versions", "A0", "--hub", f"kaggle://{OWNER}"])
    assert result.exit_code == 0 and "repvgg/a0/train/2" in result.stdout


def test_verify_names_a_record_that_differs(kaggle, published):
    inst = kaggle["state"].instance(f"{OWNER}/repvgg-a0/keras/train")
    original = inst.overview
    row = next(r for r in parse_record(original) if r.version == 1 and r.file == "train.keras")
    inst.overview = original.replace(row.sha256, "0" * 64)
    try:
        report = _hub().verify("repvgg/a0/train/1")
    finally:
        inst.overview = original
    assert not report.ok and report.problems[0] == "train.keras: sha256 differs from the hub's record"


def test_a_publish_cut_short_is_finished_by_rerunning_it_without_a_gap(kaggle, tmp_path):
    state = kaggle["state"]
    slug = "cut-a0"
    kaggle_hub = _hub()
    kaggle_hub.publish_staged(slug, _stage(tmp_path, "1"))
    handles = _handles(slug, _stage(tmp_path, "plan"))
    state.fail_blob_puts(after=12, times=None)  # four instances go through, then every upload fails
    with pytest.raises(HubError) as caught:
        kaggle_hub.publish_staged(slug, _stage(tmp_path, "2"))
    message = str(caught.value)
    assert "version 2 of alice/cut-a0 is unfinished: rerun the same publish to finish it" in message
    assert "\n" not in message and DEFAULT_TOKEN not in message
    numbers = [state.version_numbers(h)[-1] for h in handles]
    assert 2 in numbers and 1 in numbers  # cut midway
    assert kaggle_hub.pending_version(slug) == 2

    with pytest.raises(VersionSkewError, match=r"instance \S+ is at version 1 but \S+ is at 2: an earlier publish"):
        _hub(pending_dir=tmp_path / "elsewhere").preflight(slug)  # another machine: nothing to finish from

    state.blob_put_failure_after = None
    started = len(state.log)
    finished = publish_variant(_hub(), "A0", weights="random", name=slug)  # no build: from the kept files
    assert {v.handle.version for v in finished} == {2}
    assert all(state.version_numbers(h) == [1, 2] for h in handles)
    assert "CreateModel" not in state.rpc_calls()[started:]
    # the lagging instances got the kept files: the manifest each holds is its twin's from before the cut
    for handle, number in zip(handles, numbers, strict=True):
        task = handle.split("/")[3].replace("-", "_")
        twin = f"{OWNER}/{slug}/tensorFlow2/{handle.split('/')[3]}"
        if number == 1 and handle.split("/")[2] == "keras" and twin in handles and twin != handle:
            name = f"{task}.manifest.json"
            assert state.files(handle, 2)[name] == state.files(twin, 2)[name]
    assert kaggle_hub.pending_version(slug) is None
    again = kaggle_hub.publish_staged(slug, _stage(tmp_path, "3"))
    assert {v.handle.version for v in again} == {3}


def test_a_transient_failure_is_retried_and_nothing_is_sent_twice(kaggle, tmp_path):
    state = kaggle["state"]
    slug = "retry-a0"
    state.fail["CreateModelInstance"] = 1
    state.fail["ListModelInstances"] = 2
    state.fail_blob_puts(after=3, times=1)
    published = _hub().publish_staged(slug, _stage(tmp_path, "1"))
    assert {v.handle.version for v in published} == {1}
    assert all(state.version_numbers(h) == [1] for h in _handles(slug, _stage(tmp_path, "plan")))


def test_a_network_gone_mid_upload_is_one_line_within_a_minute(kaggle, tmp_path):
    """kagglehub alone would retry each dropped upload for about three minutes, silently."""
    state = kaggle["state"]
    state.puts_dropped = True
    started = time.monotonic()
    try:
        with pytest.raises(HubError) as caught:
            KaggleHub(OWNER, backoff_s=0.01, deadline_s=20).publish_staged("dropped-a0", _stage(tmp_path, "1"))
    finally:
        state.puts_dropped = False
    assert time.monotonic() - started < 60
    message = str(caught.value)
    assert message.startswith(f"Kaggle answered the upload of {OWNER}/dropped-a0/tensorFlow2/feature-vector with")
    assert "was not fully uploaded" in message and "\n" not in message
    assert [e for e in state.log if e.summary.get("dropped")]  # the drops happened and were retried
    assert state.version_numbers(f"{OWNER}/dropped-a0/tensorFlow2/feature-vector") == []


def test_a_version_kaggle_numbers_otherwise_is_refused(kaggle, tmp_path):
    state = kaggle["state"]
    slug = "renumbered-a0"
    _hub().publish_staged(slug, _stage(tmp_path, "1"))
    state.renumber(f"{OWNER}/{slug}/keras/classification", skip=1)  # someone published in between
    with pytest.raises(VersionSkewError) as caught:
        _hub().publish_staged(slug, _stage(tmp_path, "2"))
    assert str(caught.value).startswith(f"Kaggle numbered {OWNER}/{slug}/keras/classification version 3, not 2")
    assert (caught.value.where, caught.value.found, caught.value.expected) == ("keras/classification", 3, 2)
    with pytest.raises(VersionSkewError, match="keras/classification is at version 3, not 1 or 2"):
        _hub().publish_staged(slug, _stage(tmp_path, "3"))  # the rerun cannot finish it either


def test_someone_elses_version_stops_the_publish_before_the_build(kaggle, tmp_path):
    state = kaggle["state"]
    slug = "shared-a0"
    _hub().publish_staged(slug, _stage(tmp_path, "1"))
    state.add_version(f"{OWNER}/{slug}/tensorFlow2/classification", {"theirs.bin": b"x"})
    with pytest.raises(VersionSkewError) as caught:
        _hub().preflight(slug, base_variant="A0")
    assert "is at version 1 but tensorFlow2/classification is at 2" in str(caught.value)
    assert (caught.value.found, caught.value.expected) == (1, 2)
    _hub().publish_staged("numbered-a0", _stage(tmp_path, "2"))
    with pytest.raises(VersionExistsError, match="the next version of alice/numbered-a0 is 2, not 7"):
        _hub().preflight("numbered-a0", version=7)
    _hub().preflight("numbered-a0", version=2)


def test_credentials_are_checked_before_any_build_and_never_shown(kaggle, published, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_API_TOKEN")
    started = time.monotonic()
    result = runner.invoke(app, ["publish", "A0", "--weights", "random", "--hub", f"kaggle://{OWNER}"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: no Kaggle credentials to publish to kaggle://alice: set KAGGLE_API_TOKEN")
    assert len(result.stderr.splitlines()) == 1 and time.monotonic() - started < 20

    monkeypatch.setenv("KAGGLE_API_TOKEN", "not-a-valid-token")
    result = runner.invoke(app, ["publish", "A0", "--weights", "random", "--hub", f"kaggle://{OWNER}"])
    assert result.exit_code == 2 and "Kaggle rejected the credentials (401" in result.stderr
    assert "not-a-valid-token" not in result.output

    monkeypatch.setenv("KAGGLE_API_TOKEN", DEFAULT_TOKEN)
    kaggle["state"].forbidden_owners.add("mallory")
    with pytest.raises(MissingTokenError, match=r"cannot write to \(or read\) the owner 'mallory'"):
        KaggleHub("mallory").preflight("a0")
    state = kaggle["state"]
    shown = [m.description for m in state.models.values()] + [
        text
        for m in state.models.values()
        for i in m.instances.values()
        for text in (i.overview, i.usage, *(v.notes for v in i.versions.values()))
    ]
    assert all(DEFAULT_TOKEN not in text for text in shown)


@pytest.mark.parametrize(
    "location, expected",
    [
        ("kaggle://", "invalid --hub 'kaggle://': use kaggle://OWNER"),
        ("kaggle://alice/models", "invalid --hub 'kaggle://alice/models'"),
        ("kaggle:alice", "invalid --hub 'kaggle:alice'"),
        ("kaggle://Alice_B", "invalid Kaggle owner 'Alice_B'"),
    ],
)
def test_malformed_locations_are_one_line(location, expected):
    result = runner.invoke(app, ["versions", "A0", "--hub", location])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {expected}"), result.output
    assert len(result.stderr.splitlines()) == 1


def test_names_kaggle_refuses_are_refused_before_the_build(kaggle):
    with pytest.raises(InvalidNameError, match="Kaggle model slug"):
        _hub().preflight("my_model")
    with pytest.raises(InvalidNameError, match="share alice/repvgg-b0 with RepVGG-B0"):
        _hub().preflight("repvgg-b0")
    with pytest.raises(UsageError):
        open_hub("kaggle://")


def test_a_network_error_is_one_line_at_once(kaggle):
    level = logging.getLogger("kagglehub").level
    stop_standin(kaggle["server"])
    try:
        started = time.monotonic()
        result = runner.invoke(app, ["versions", "A0", "--hub", f"kaggle://{OWNER}"])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: Kaggle at http://localhost:7777 did not answer the listing of")
        assert "connection was refused" in result.stderr and len(result.stderr.splitlines()) == 1
        assert time.monotonic() - started < 10
    finally:
        kaggle["server"], _, _ = start_standin(kaggle["state"])
    kaggle["state"].fail["ListModelInstances"] = 100  # a failing Kaggle: retried, then one line
    try:
        with pytest.raises(HubError, match=r"answered the listing of alice/repvgg-a0 with 500: .* after \d tries"):
            _hub().versions("A0")
    finally:
        kaggle["state"].fail["ListModelInstances"] = 0
    assert logging.getLogger("kagglehub").level == level  # quieted only during the calls


def test_without_kagglehub_one_line_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)
    result = runner.invoke(app, ["versions", "A0", "--hub", f"kaggle://{OWNER}"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: kaggle:// hubs need the official kagglehub client: pip install 'repvgg-registry[kaggle]'"
    )
