"""Publishing to the Hugging Face Hub with the real huggingface_hub client, against the in-repo
stand-in server in tests/hf_standin.py, which speaks the documented wire protocol (create, preupload,
LFS batch/upload/verify, validate-yaml, NDJSON commit with parentCommit, tags, refs, tree, resolve)
on 127.0.0.1: the real hub cannot be reached from here. Xet is disabled (HF_HUB_DISABLE_XET=1) so
large files travel over LFS, which the stand-in implements."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import keras
import numpy as np
import pytest
import tensorflow_hub as hub
import tf_keras
import yaml
from huggingface_hub import constants as hf_constants

from repvgg_registry.errors import HubStateError, InvalidNameError, MissingTokenError, NameTakenError, NotPublishedError
from repvgg_registry.hashing import sha256_file
from repvgg_registry.publish.build import build_artifacts
from repvgg_registry.publish.card import RANDOM_WEIGHTS_BANNER
from repvgg_registry.publish.release import ArtifactFiles, stage_release, staged_files
from repvgg_registry.publish.tasks import KERAS_TASKS, TASKS, TRAIN
from repvgg_registry.registry import Handle, HubUnreachableError, LocalHub, VersionExistsError, open_hub
from repvgg_registry.registry.huggingface import HuggingFaceHub, repo_card
from repvgg_registry.registry.operations import publish_variant, verify
from repvgg_registry.variants import get_variant
from repvgg_registry.variants.equivalence import sample_images

DIGITS = [f"digit {i}" for i in range(10)]


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub-cache"))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """One A0 release (random weights) staged once, published to both hubs by the tests."""
    root = tmp_path_factory.mktemp("release")
    build_artifacts("A0", root / "a0", weights="random", seed=3)
    stage_release(root / "a0")
    return root / "a0"


def _hf(url: str, namespace: str, **kwargs) -> HuggingFaceHub:
    return HuggingFaceHub(namespace, token="hf_test_token", endpoint=url, backoff_s=0.01, **kwargs)


def _copy(release: Path, tmp_path: Path) -> Path:
    target = tmp_path / "staged"
    shutil.copytree(release, target)
    return target


def test_two_versions_are_two_tagged_commits(standin, release, tmp_path):
    state, url = standin
    hf = _hf(url, "org1")
    first = hf.publish_staged("a0", _copy(release, tmp_path / "1"))
    second = hf.publish_staged("a0", _copy(release, tmp_path / "2"))
    assert [v.handle.version for v in first] == [1] * 4 and [v.handle.version for v in second] == [2] * 4
    assert [v.handle.task for v in first] == list(KERAS_TASKS)
    repo = state.repos["org1/repvgg-a0"]
    assert set(repo.tags) == {"v1", "v2"} and repo.tags["v2"] == repo.branches["main"]
    tree = repo.commits[repo.tags["v1"]]
    for path in (
        "feature_vector/saved_model.pb",
        "classification/assets/labels.txt",
        "feature_vector.tar.gz",
        "classification.tar.gz",
        "feature_vector.manifest.json",
        "feature_vector.keras",
        "classification.keras",
        "train.keras",
        "train.manifest.json",
        "feature_maps/saved_model.pb",
        "feature_maps.tar.gz",
        "feature_maps.keras",
        "feature_maps.manifest.json",
        "README.md",
    ):
        assert path in tree, path
    card = tree["README.md"].data.decode()
    assert "* `feature_maps.keras`: the same network's multi-scale maps, a dict (`stride_2` 48," in card
    assert "`stride_32` 1280 channels; output stride 32)" in card and "| feature_maps.keras sha256 |" in card
    assert tree["feature_vector.tar.gz"].data == (release / "feature_vector.tar.gz").read_bytes()
    assert tree["feature_vector.tar.gz"].lfs  # large files went through the LFS batch API
    # each commit named its parent, so a concurrent publisher could not interleave
    assert all(h.get("parentCommit") for h in state.commit_headers[-2:])
    rows = [(str(v.handle), v.weights_source) for v in hf.versions("A0")]
    assert rows == [(f"repvgg/a0/{task}/{n}", "random") for n in (1, 2) for task in KERAS_TASKS]


def test_existing_tag_is_refused_and_never_moved(standin, release, tmp_path):
    state, url = standin
    hf = _hf(url, "org2")
    hf.publish_staged("a0", _copy(release, tmp_path / "1"))
    tagged = state.repos["org2/repvgg-a0"].tags["v1"]
    with pytest.raises(VersionExistsError, match="tag v1"):
        hf.publish_staged("a0", _copy(release, tmp_path / "2"), version=1)
    with pytest.raises(VersionExistsError):  # refused before any build work
        publish_variant(hf, "A0", weights="random", version=1)
    assert state.repos["org2/repvgg-a0"].tags == {"v1": tagged}


def test_stale_parent_commit_is_rejected_by_the_protocol(standin, release, tmp_path):
    """What makes racing publishers safe: a commit on top of an outdated parent gets 412."""
    state, url = standin
    hf = _hf(url, "org3")
    hf.publish_staged("a0", _copy(release, tmp_path / "1"))
    api = huggingface_hub.HfApi(endpoint=url, token="hf_test_token")
    old = state.repos["org3/repvgg-a0"].commits
    stale = next(sha for sha in old if sha != state.repos["org3/repvgg-a0"].branches["main"])
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError) as err:
        api.create_commit(
            "org3/repvgg-a0",
            operations=[huggingface_hub.CommitOperationAdd("x.txt", b"x")],
            commit_message="racer",
            parent_commit=stale,
        )
    assert err.value.response.status_code == 412


def test_snapshot_download_and_keraslayer_equal_the_local_artifact(standin, release, tmp_path):
    state, url = standin
    hf = _hf(url, "org4")
    hf.publish_staged("a0", _copy(release, tmp_path / "hf"))
    local = LocalHub(tmp_path / "local")
    local.publish_staged("a0", _copy(release, tmp_path / "local-staged"))
    path = huggingface_hub.snapshot_download("org4/repvgg-a0", revision="v1", endpoint=url)
    assert (
        Path(path, "feature_vector.tar.gz").read_bytes()
        == (local.root / "repvgg/a0/feature_vector/1.tar.gz").read_bytes()
    )
    images = np.random.default_rng(0).random((2, 96, 96, 3), dtype=np.float32)

    def run(handle):
        model = tf_keras.Sequential([tf_keras.Input((96, 96, 3)), hub.KerasLayer(handle)])
        return model.predict(images, verbose=0)

    expected = run(str(local.root / "repvgg/a0/feature_vector/1"))
    np.testing.assert_array_equal(run(path + "/feature_vector"), expected)
    # straight from the URL of the archive, through tensorflow_hub's HTTP resolver
    np.testing.assert_array_equal(run(f"{url}/org4/repvgg-a0/resolve/v1/feature_vector.tar.gz"), expected)
    report = verify(hf, "repvgg/a0/classification/1")
    assert report.ok, report.problems


def test_model_card(standin, release, tmp_path):
    state, url = standin
    _hf(url, "org5").publish_staged("a0", _copy(release, tmp_path / "s"))
    repo = state.repos["org5/repvgg-a0"]
    card = repo.commits[repo.tags["v1"]]["README.md"].data.decode()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "tf-keras" and meta["pipeline_tag"] == "image-classification"
    assert meta["license"] == "mit" and meta["datasets"] == ["imagenet-1k"] and "repvgg" in meta["tags"]
    assert 'snapshot_download("org5/repvgg-a0", revision="v1")' in card
    assert f"{url}/org5/repvgg-a0/resolve/v1/feature_vector.tar.gz" in card and "TFSMLayer" in card
    manifest = json.loads(repo.commits[repo.tags["v1"]]["feature_vector.manifest.json"].data)
    assert manifest["archive"]["sha256"] in card
    keras_snippet = (
        "import keras\n"
        "from huggingface_hub import hf_hub_download\n"
        'path = hf_hub_download("org5/repvgg-a0", "feature_vector.keras", revision="v1")\n'
        "backbone = keras.saving.load_model(path)   # images in [0, 1], any size -> [batch, 1280]\n"
    )
    assert keras_snippet in card
    # the .keras route comes first, the SavedModel routes after it
    assert card.index("feature_vector.keras") < card.index("hub.KerasLayer") < card.index("TFSMLayer")
    assert "Adam" in card and "cannot pin a tag" in card
    # the variant's own release: no custom section, ImageNet-1k's head, the train form offered
    assert "# RepVGG-A0 for Keras 3 and TensorFlow / TF Hub" in card.splitlines()
    assert "What this model is" not in card and "logits `[batch, 1000]` (ImageNet-1k" in card
    assert 'hf_hub_download("org5/repvgg-a0", "train.keras", revision="v1")' in card
    for task in KERAS_TASKS:
        keras_sha = json.loads(repo.commits[repo.tags["v1"]][f"{task}.manifest.json"].data)["keras"]["sha256"]
        assert f"| {task}.keras sha256 | `{keras_sha}` |" in card.splitlines()


def test_failure_before_the_tag_leaves_no_tag_and_a_rerun_publishes(standin, release, tmp_path):
    state, url = standin
    hf = _hf(url, "org6", retries=2)
    state.fail["commit"] = 3  # more than the retries
    with pytest.raises(HubUnreachableError, match="did not answer create_commit"):
        hf.publish_staged("a0", _copy(release, tmp_path / "1"))
    assert state.repos["org6/repvgg-a0"].tags == {}
    assert hf.versions("a0") == []
    state.fail["commit"] = 1  # a transient error is retried
    published = hf.publish_staged("a0", _copy(release, tmp_path / "2"))
    assert published[0].handle.version == 1 and set(state.repos["org6/repvgg-a0"].tags) == {"v1"}


def test_unreachable_hub_is_one_line():
    hf = HuggingFaceHub("org", token="t", endpoint="http://127.0.0.1:9", retries=1, backoff_s=0.01)
    with pytest.raises(HubUnreachableError) as err:
        hf.versions("a0")
    assert "\n" not in str(err.value) and "did not answer" in str(err.value)


def _cli(args, env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run(
        [sys.executable, "-m", "repvgg_registry.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_DISABLE_XET": "1", **env},
        timeout=600,
    )


def test_cli_publish_and_versions_over_hf_endpoint(standin, tmp_path):
    state, url = standin
    env = {"HF_ENDPOINT": url, "HF_TOKEN": "hf_test_token", "HF_HOME": str(tmp_path / "hf-home")}
    proc = _cli(["publish", "A0", "--weights", "random", "--hub", "hf://cli-org", "--json"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)[0]["handles"] == [f"repvgg/a0/{task}/1" for task in KERAS_TASKS]
    listing = _cli(["versions", "A0", "--hub", "hf://cli-org", "--json"], env)
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert {row["version"] for row in json.loads(listing.stdout)} == {1}


def test_missing_token_stops_before_any_build(standin, tmp_path):
    state, url = standin
    env = {"HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "empty-home")}
    proc = _cli(["publish", "A0", "--weights", "random", "--hub", "hf://org7"], env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: no Hugging Face token: run 'hf auth login' or set HF_TOKEN (a token with write access), then rerun"
    ]
    assert "org7/repvgg-a0" not in state.repos


# ----- names, preflight and the card (issue 11) ----------------------------------------------
@pytest.mark.parametrize("name", ["bad name!", "-bad--", "a..b", "trailing-", ".hidden", "x" * 97, "org/sub", ""])
def test_bad_hf_namespace_is_refused_before_anything(name):
    with pytest.raises(InvalidNameError, match="invalid Hugging Face namespace .*96 characters"):
        HuggingFaceHub(name, token="hf_test_token", endpoint="http://127.0.0.1:9")


@pytest.mark.parametrize("name", ["my-org", "Org_1.x", "a", "x" * 80])
def test_good_hf_namespace_is_accepted(name):
    assert HuggingFaceHub(name, token="t", endpoint="http://127.0.0.1:9").location == f"hf://{name}"


def test_open_hub_refuses_a_bad_hf_namespace():
    with pytest.raises(InvalidNameError):
        open_hub("hf://bad name!")


def test_preflight_accepts_a_good_token_and_a_free_version(standin, release, tmp_path):
    state, url = standin
    hf = _hf(url, "org8")
    before = state.calls.count("whoami")
    hf.preflight("a0", version=None)
    hf.check_can_publish()  # the base class's contract: no arguments
    assert state.calls.count("whoami") == before + 1  # asked once per hub
    hf.publish_staged("a0", _copy(release, tmp_path / "1"))
    hf.preflight("a0", version=2)
    with pytest.raises(VersionExistsError, match=r"org8/repvgg-a0 \(tag v1\) version 1 is already published"):
        hf.preflight("a0", version=1)


def test_preflight_names_a_rejected_token_without_showing_it(standin):
    state, url = standin
    secret = "hf_rejected_secret_0123456789"
    state.rejected_tokens.add(secret)
    with pytest.raises(MissingTokenError) as err:
        HuggingFaceHub("org9", token=secret, endpoint=url).preflight("a0")
    message = str(err.value)
    assert message.startswith("Hugging Face token rejected by") and "401" in message and "HF_TOKEN" in message
    assert secret not in message and "\n" not in message and message.endswith("then rerun")


def test_preflight_refuses_a_read_only_token(standin):
    state, url = standin
    state.read_only_tokens.add("hf_read_only")
    with pytest.raises(MissingTokenError, match="read-only"):
        HuggingFaceHub("org10", token="hf_read_only", endpoint=url).preflight("a0")


def test_preflight_without_a_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(MissingTokenError, match="no Hugging Face token"):
        HuggingFaceHub("org", endpoint="http://127.0.0.1:9").preflight("a0")


def test_preflight_of_an_unreachable_hub_is_one_line():
    hf = HuggingFaceHub("org", token="hf_test_token", endpoint="http://127.0.0.1:9")
    with pytest.raises(HubUnreachableError, match="did not answer whoami: the connection was refused"):
        hf.preflight("a0", version=1)


def _manifests(source: str, sha: str | None = None) -> dict:
    """Manifests shaped like a release's: all three tasks, a ``.keras`` record each, an archive for
    the SavedModel tasks only (``train`` is a ``.keras`` file alone)."""
    weights = {"source": source, "sha256": sha}
    output = {"name": "feature_vector", "num_features": 1280}

    def manifest(task: str) -> dict:
        data = {"variant": "A0", "weights": weights, "created": "2026-01-01", "output": output}
        data["keras"] = {"name": f"{task}.keras", "size": 1, "sha256": "c" * 64}
        if task in TASKS:
            data["archive"] = {"name": f"{task}.tar.gz", "size": 1, "sha256": "a" * 64}
        return data

    return {task: manifest(task) for task in KERAS_TASKS}


def test_card_of_random_weights_has_a_banner():
    card = repo_card("a0", 1, _manifests("random"), "org/repvgg-a0", "https://huggingface.co")
    lines = card.splitlines()
    banner = f"> **Warning: {RANDOM_WEIGHTS_BANNER}.**"
    assert banner in lines and lines.index(banner) < lines.index("| | |")
    assert banner not in repo_card("a0", 1, _manifests("timm", "b" * 64), "org/repvgg-a0", "https://huggingface.co")


@pytest.mark.parametrize(
    "source",
    ["<img src=x onerror=alert(1)>.safetensors", "a|b\nc.pth", "x\r\n| injected | row |\n.pt", "`code`[l](u).pt"],
)
def test_card_escapes_the_weights_file_name(source):
    card = repo_card("a0", 1, _manifests(source, "<b>not a digest</b>"), "org/repvgg-a0", "https://huggingface.co")
    assert "<img" not in card and "<b>" not in card and "injected | row" not in card
    rows = [line for line in card.splitlines() if line.startswith("| weights |")]
    assert len(rows) == 1
    assert len(re.findall(r"(?<!\\)\|", rows[0])) == 3  # still two cells: every other | is escaped
    if source.startswith("<img"):
        assert "&lt;img src=x onerror=alert\\(1\\)&gt;.safetensors" in rows[0]


# ----- Keras 3 .keras files --------------------------------------------------------------------
def test_tag_holds_the_three_keras_files_at_the_repo_root(standin, release, tmp_path):
    """What the card tells users to do: hf_hub_download(..., revision="v1") gives the staged bytes,
    and the fused feature vector loads in Keras 3 and takes any image size."""
    state, url = standin
    _hf(url, "org11").publish_staged("a0", _copy(release, tmp_path / "s"))
    paths = {
        task: huggingface_hub.hf_hub_download("org11/repvgg-a0", f"{task}.keras", revision="v1", endpoint=url)
        for task in KERAS_TASKS
    }
    for task, path in paths.items():
        assert Path(path).read_bytes() == staged_files(release, task).keras.read_bytes(), task
    backbone = keras.saving.load_model(paths["feature_vector"])
    images = np.random.default_rng(1).random((1, 64, 48, 3), dtype=np.float32)
    assert list(np.asarray(backbone(images)).shape) == [1, 1280]


def test_versions_and_artifact_files_of_the_train_handle(standin, release, tmp_path):
    state, url = standin
    hf = _hf(url, "org12")
    published = hf.publish_staged("a0", _copy(release, tmp_path / "s"))
    files = hf.artifact_files(Handle.parse("repvgg/a0/train/1"))
    assert isinstance(files, ArtifactFiles) and files.folder is None and files.archive is None
    assert set(files.roles()) == {"keras", "manifest"}
    assert files.keras.read_bytes() == staged_files(release, TRAIN).keras.read_bytes()
    # only the train artifact was downloaded, not the SavedModels beside it
    assert sorted(p.name for p in files.manifest.parent.iterdir()) == ["train.keras", "train.manifest.json"]
    train = next(v for v in hf.versions("a0") if v.handle.task == TRAIN)
    manifest = json.loads(staged_files(release, TRAIN).manifest.read_text())
    assert train == published[-1]
    assert str(train.handle) == "repvgg/a0/train/1" and train.sha256 == manifest["keras"]["sha256"]
    assert train.location == f"{url}/org12/repvgg-a0/blob/v1/train.keras"


def test_artifact_files_of_a_savedmodel_handle_has_every_role(standin, release, tmp_path):
    state, url = standin
    hf = _hf(url, "org13")
    hf.publish_staged("a0", _copy(release, tmp_path / "s"))
    files = hf.artifact_files(Handle.parse("repvgg/a0/classification/1"))
    staged = staged_files(release, "classification")
    # the release was built without deployment files (tests/conftest.py): its manifest records none
    assert set(files.required(json.loads(files.manifest.read_text()))) == {"folder", "archive", "keras", "manifest"}
    for role in ("archive", "keras", "manifest"):
        assert files.roles()[role].read_bytes() == staged.roles()[role].read_bytes(), role
    assert (files.folder / "saved_model.pb").is_file()
    assert not (files.manifest.parent / "feature_vector.keras").exists()  # nothing of the other tasks


def test_a_version_from_before_keras_files_has_no_train_handle(standin, release, tmp_path):
    """An older release (the two SavedModels only: no .keras files, no feature maps) at tag v1 next
    to a current one at v2: versions skips train and feature_maps for v1 instead of failing, and
    asking for its train handle is "not published"."""
    state, url = standin
    hf = _hf(url, "org14")
    hf.publish_staged("a0", _copy(release, tmp_path / "s"))
    api = huggingface_hub.HfApi(endpoint=url, token="hf_test_token")
    old = [f"{task}.keras" for task in KERAS_TASKS] + ["train.manifest.json"]
    old += ["feature_maps/", "feature_maps.tar.gz", "feature_maps.manifest.json"]
    commit = api.create_commit(
        "org14/repvgg-a0",
        operations=[huggingface_hub.CommitOperationDelete(path) for path in old],
        commit_message="an older layout",
    )
    repo = state.repos["org14/repvgg-a0"]
    repo.tags = {"v1": commit.oid, "v2": repo.tags["v1"]}  # the older layout as the older version
    rows = [str(v.handle) for v in hf.versions("a0")]
    assert rows == [
        "repvgg/a0/feature_vector/1",
        "repvgg/a0/classification/1",
        "repvgg/a0/feature_vector/2",
        "repvgg/a0/classification/2",
        "repvgg/a0/feature_maps/2",
        "repvgg/a0/train/2",
    ]
    with pytest.raises(NotPublishedError, match="published before .keras files"):
        hf.artifact_files(Handle.parse("repvgg/a0/train/1"))
    with pytest.raises(NotPublishedError, match="published before feature maps existed"):
        hf.artifact_files(Handle.parse("repvgg/a0/feature_maps/1"))


def test_a_staged_release_without_train_keras_is_refused_before_the_hub(standin, release, tmp_path):
    state, url = standin
    staged = _copy(release, tmp_path / "s")
    staged_files(staged, TRAIN).keras.unlink()
    with pytest.raises(HubStateError, match="train.keras: is missing from the staged release"):
        _hf(url, "org15").publish_staged("a0", staged)
    assert "org15/repvgg-a0" not in state.repos


# ----- models of their own: --name, any number of classes, deploy-form sources ----------------
@pytest.fixture(scope="module")
def digits_release(tmp_path_factory):
    """One 10-class A0 release (a timm checkpoint with a 10-class head, ``--labels``, ``--name
    digits``), built and staged once for the module: ``(staged folder, checkpoint)``. torch is
    imported here, not at the top, so the other tests do not pay for it."""
    import torch_reference as ref

    root = tmp_path_factory.mktemp("digits")
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    calibration = [np.clip(sample_images(2, 96, 96, seed=3) * 0.25 + 0.5, 0, 1)]
    model = ref.timm_model(get_variant("A0"), [(x - mean) / std for x in calibration], seed=5, num_classes=10)
    checkpoint = ref.save_timm_safetensors(model, root / "a0-10.safetensors")
    labels = root / "digits.txt"
    labels.write_text("".join(f"{name}\n" for name in DIGITS), encoding="utf-8")
    build_artifacts("A0", root / "digits", weights=str(checkpoint), labels=labels, name="digits")
    stage_release(root / "digits")
    return root / "digits", checkpoint


def _card(state, repo_id: str, tag: str = "v1") -> str:
    repo = state.repos[repo_id]
    return repo.commits[repo.tags[tag]]["README.md"].data.decode()


def test_a_custom_name_publishes_to_a_repo_of_its_own(standin, release, tmp_path):
    """``--name my-model`` goes to ``<ns>/my-model``; the variant's own name keeps ``repvgg-a0``."""
    state, url = standin
    hf = _hf(url, "org16")
    published = hf.publish_staged("my-model", _copy(release, tmp_path / "custom"))
    hf.publish_staged("a0", _copy(release, tmp_path / "own"))
    assert {"org16/my-model", "org16/repvgg-a0"} <= set(state.repos) and "org16/repvgg-my-model" not in state.repos
    assert set(state.repos["org16/my-model"].tags) == {"v1"}
    rows = hf.versions("my-model")
    assert [str(v.handle) for v in rows] == [f"repvgg/my-model/{task}/1" for task in KERAS_TASKS]
    assert rows == published and {v.base_variant for v in rows} == {"A0"}
    assert all(v.location.startswith(f"{url}/org16/my-model/") for v in rows)
    assert {v.base_variant for v in hf.versions("A0")} == {"A0"}
    files = hf.artifact_files(Handle.parse("repvgg/my-model/classification/1"))
    assert files.archive.read_bytes() == staged_files(release, "classification").archive.read_bytes()
    card = _card(state, "org16/my-model")
    assert "# my-model (RepVGG-A0) for Keras 3 and TensorFlow / TF Hub" in card.splitlines()
    assert "**my-model** is a custom model built on RepVGG-A0." in card
    # an ImageNet-1k head under a name of its own is still ImageNet-1k's
    assert (
        "logits `[batch, 1000]` (ImageNet-1k" in card
        and "imagenet-1k" in yaml.safe_load(card.split("---")[1])["datasets"]
    )


def test_preflight_refuses_a_name_taken_by_another_base_variant(standin, release, tmp_path):
    state, url = standin
    hf = _hf(url, "org17")
    hf.publish_staged("my-model", _copy(release, tmp_path / "s"))
    hf.preflight("my-model", version=2, base_variant="A0")  # the same model: fine
    hf.preflight("free-name", base_variant="B0")  # nothing published under it yet
    with pytest.raises(NameTakenError) as err:
        hf.preflight("my-model", base_variant="B0")
    assert str(err.value) == (
        "the model name 'my-model' is taken in hf://org17 by a RepVGG-A0 model, not RepVGG-B0; choose another --name"
    )
    with pytest.raises(NameTakenError):  # publish asks first, before minutes of build work
        publish_variant(hf, "B0", weights="random", name="my-model")
    assert set(state.repos["org17/my-model"].tags) == {"v1"}


@pytest.mark.parametrize(
    ("name", "why"),
    [("repvgg-a0", "share org/repvgg-a0 with RepVGG-A0's own releases"), ("a--b", "Hugging Face repo name")],
)
def test_a_name_the_hub_cannot_hold_is_refused_before_anything(name, why):
    """A custom name that is a variant's repo, or one Hugging Face refuses, stops at preflight: no
    request is made (the endpoint does not exist)."""
    hf = HuggingFaceHub("org", token="hf_test_token", endpoint="http://127.0.0.1:9")
    with pytest.raises(InvalidNameError, match=re.escape(why)) as err:
        hf.preflight(name, base_variant="A0")
    assert "\n" not in str(err.value)


def test_a_release_without_train_publishes_two_handles(standin, release, tmp_path):
    """A deploy-form source has no train form: two handles, no train files, and a card that offers none."""
    state, url = standin
    hf = _hf(url, "org18")
    staged = _copy(release, tmp_path / "s")
    train = staged_files(staged, TRAIN)
    train.keras.unlink()
    train.manifest.unlink()
    published = hf.publish_staged("a0", staged)
    assert [str(v.handle) for v in published] == [f"repvgg/a0/{task}/1" for task in TASKS]
    assert hf.versions("a0") == published
    repo = state.repos["org18/repvgg-a0"]
    tree = repo.commits[repo.tags["v1"]]
    assert "train.keras" not in tree and "train.manifest.json" not in tree
    with pytest.raises(NotPublishedError, match="deploy-form source"):
        hf.artifact_files(Handle.parse("repvgg/a0/train/1"))
    card = _card(state, "org18/repvgg-a0")
    assert "* no train form: this model was built from a deploy-form (fused) source, so no `train.keras`" in card
    assert '"train.keras"' not in card and "fuse(train)" not in card and "train.keras sha256" not in card
    assert "* `train.keras`" not in card
    assert 'hf_hub_download("org18/repvgg-a0", "classification.keras", revision="v1")' in card


def test_custom_card_names_the_model_its_base_and_its_classes(standin, digits_release, tmp_path):
    """A 10-class checkpoint published as ``digits``: its repo, its card (name, base variant,
    ``[batch, 10]``, the first labels, the weights file and sha256, no ImageNet-1k claim) and a
    ``classification.keras`` that gives 10 logits."""
    state, url = standin
    staged, checkpoint = digits_release
    hf = _hf(url, "org19")
    published = hf.publish_staged("digits", _copy(staged, tmp_path / "s"))
    assert [str(v.handle) for v in published] == [f"repvgg/digits/{task}/1" for task in KERAS_TASKS]
    assert {v.base_variant for v in hf.versions("digits")} == {"A0"}
    card = _card(state, "org19/digits")
    lines = card.splitlines()
    meta = yaml.safe_load(card.split("---")[1])
    assert "datasets" not in meta and "repvgg-a0" in meta["tags"]
    assert "# digits (RepVGG-A0) for Keras 3 and TensorFlow / TF Hub" in lines
    assert "## What this model is" in lines and "**digits** is a custom model built on RepVGG-A0." in lines
    assert "* classes: 10 (`digit 0`, `digit 1`, `digit 2`, `digit 3`, `digit 4`, ...)" in lines
    assert "`digit 5`" not in card and "* labels: digits.txt" in lines
    assert f"* weights: a0-10.safetensors (sha256 `{sha256_file(checkpoint)}`)" in lines
    assert "logits `[batch, 10]`" in card and "one per class of digits.txt (not ImageNet-1k)" in card
    assert "[batch, 1000]" not in card
    path = huggingface_hub.hf_hub_download("org19/digits", "classification.keras", revision="v1", endpoint=url)
    images = np.random.default_rng(2).random((1, 64, 64, 3), dtype=np.float32)
    assert list(np.asarray(keras.saving.load_model(path)(images)).shape) == [1, 10]
