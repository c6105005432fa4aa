"""Publishing your own RepVGG: the head follows the weights (any number of classes, named by
``--labels``), ``--name`` publishes under a model name of its own, deploy-form sources publish
without a train form, and the whole fine-tune -> fuse -> publish -> load loop on a real dataset."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras
import torch_reference as ref
from typer.testing import CliRunner

from repvgg_registry.cli import app
from repvgg_registry.hashing import sha256_file
from repvgg_registry.publish.build import build_artifacts
from repvgg_registry.registry import LocalHub
from repvgg_registry.registry.server import serve_in_thread
from repvgg_registry.variants import build_model, get_variant
from repvgg_registry.variants.equivalence import compare_outputs, sample_images

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
DIGITS = [f"digit {i}" for i in range(10)]
runner = CliRunner()


def _images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, height, width, 3), dtype=np.float32)


def _labels(tmp_path: Path, names: list[str], file_name: str = "labels.txt") -> Path:
    path = tmp_path / file_name
    path.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return path


def _serve(folder: Path, images: np.ndarray, key: str = "logits") -> np.ndarray:
    return tf.saved_model.load(str(folder)).signatures["serving_default"](images=tf.constant(images))[key].numpy()


def _close(reference: np.ndarray, candidate: np.ndarray, rtol: float = 1e-4) -> None:
    diff, _, tol = compare_outputs(reference, candidate, rtol=rtol)
    assert diff <= tol, f"{diff} > {tol}"


@pytest.fixture(scope="module")
def timm_10_class(tmp_path_factory):
    """timm's A0 with a 10-class head, random weights and randomised BN statistics."""
    root = tmp_path_factory.mktemp("timm10")
    calibration = [np.clip(sample_images(2, 96, 96, seed=3) * 0.25 + 0.5, 0, 1)]
    model = ref.timm_model(get_variant("A0"), [(x - MEAN) / STD for x in calibration], seed=5, num_classes=10)
    return model, ref.save_timm_safetensors(model, root / "a0-10.safetensors")


def test_a_10_class_checkpoint_publishes_under_its_own_name_with_its_labels(timm_10_class, tmp_path):
    model, checkpoint = timm_10_class
    labels = _labels(tmp_path, DIGITS)
    root = tmp_path / "hub"
    args = ["--weights", str(checkpoint), "--labels", str(labels), "--hub", str(root)]
    result = runner.invoke(app, ["publish", "A0", *args, "--name", "digits-a0"])
    assert result.exit_code == 0, result.output
    hub_ = LocalHub(root)
    assert [str(v.handle) for v in hub_.versions("digits-a0")] == [
        "repvgg/digits-a0/classification/1",
        "repvgg/digits-a0/feature_maps/1",
        "repvgg/digits-a0/feature_vector/1",
        "repvgg/digits-a0/train/1",
    ]
    assert {v.base_variant for v in hub_.versions("digits-a0")} == {"A0"}

    folder = root / "repvgg/digits-a0/classification/1"
    images = _images(2, 96, 128, seed=1)
    expected = ref.logits(model, (images - MEAN) / STD)
    served = _serve(folder, images)
    assert served.shape == (2, 10)
    _close(expected, served)
    assert (folder / "assets/labels.txt").read_text() == labels.read_text()
    assert not (folder / "assets/synsets.txt").exists()
    meta = json.loads((folder / "metadata.json").read_text())
    assert (meta["base_variant"], meta["name"], meta["output"]["num_classes"]) == ("A0", "digits-a0", 10)
    assert meta["output"]["labels_source"] == "labels.txt" and meta["top1"] is None
    card = (folder / "README.md").read_text()
    assert "custom model built on RepVGG-A0" in card and "`digit 0`" in card and "classes: 10" in card
    assert sha256_file(checkpoint) in card
    keras_logits = np.asarray(keras.saving.load_model(root / "repvgg/digits-a0/classification/1.keras")(images))
    _close(expected, keras_logits)

    listing = json.loads(runner.invoke(app, ["list", "--hub", str(root), "--json"]).stdout)
    a0 = next(r for r in listing if r["name"] == "A0")
    assert a0["models"] == {"digits-a0": [1]} and a0["published"] == []
    versions = runner.invoke(app, ["versions", "digits-a0", "--hub", str(root), "--json"])
    assert versions.exit_code == 0 and {r["base_variant"] for r in json.loads(versions.stdout)} == {"A0"}
    assert runner.invoke(app, ["verify", "repvgg/digits-a0/train/1", "--hub", str(root)]).exit_code == 0
    server, url = serve_in_thread(hub_, log=lambda line: None)
    try:
        with urllib.request.urlopen(f"{url}/repvgg/digits-a0/classification/1") as response:
            page = response.read().decode()
    finally:
        server.shutdown()
    assert "base variant: RepVGG-A0" in page and "classes: 10 (labels.txt)" in page


def test_a_head_other_than_imagenet_needs_labels_and_a_1000_class_one_does_not(timm_10_class, tmp_path):
    _, checkpoint = timm_10_class
    out = tmp_path / "out"
    result = runner.invoke(app, ["build", "A0", "--weights", str(checkpoint), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.strip() == (
        "error: the classifier has 10 outputs, not ImageNet-1k's 1000, and no labels; "
        "pass --labels FILE with 10 lines, one class name per line"
    )
    built = build_artifacts("A0", out, weights="random")
    assert (built.out_dir / "classification/assets/synsets.txt").is_file()
    assert json.loads((out / "classification/metadata.json").read_text())["output"]["labels_source"] == "imagenet-1k"


@pytest.mark.parametrize("source", ["timm", "official"])
def test_deploy_form_checkpoints_publish_without_a_train_form(source, tmp_path):
    """Already fused checkpoints (timm's ``reparam_conv``, the authors' ``rbr_reparam``) skip fusion
    but not the check, give timm's logits, and ship no train.keras; the card says so."""
    calibration = [np.clip(sample_images(2, 96, 96, seed=7) * 0.25 + 0.5, 0, 1)]
    fused = ref.fused(ref.timm_model(get_variant("A0"), [(x - MEAN) / STD for x in calibration], seed=9))
    path = (
        ref.save_timm_safetensors(fused, tmp_path / "a0-deploy.safetensors")
        if source == "timm"
        else ref.save_official_pth(fused, tmp_path / "RepVGG-A0-deploy.pth")
    )
    root = tmp_path / "hub"
    result = runner.invoke(app, ["publish", "A0", "--weights", str(path), "--hub", str(root)])
    assert result.exit_code == 0, result.output
    assert [v.handle.task for v in LocalHub(root).versions("a0")] == [
        "classification",
        "feature_maps",
        "feature_vector",
    ]
    assert not (root / "repvgg/a0/train").exists()
    images = _images(2, 80, 112, seed=2)
    expected = ref.logits(fused, (images - MEAN) / STD)
    _close(expected, _serve(root / "repvgg/a0/classification/1", images))
    _close(expected, np.asarray(keras.saving.load_model(root / "repvgg/a0/classification/1.keras")(images)))
    meta = json.loads((root / "repvgg/a0/classification/1/metadata.json").read_text())
    assert meta["weights"]["form"] == "deploy" and meta["fusion"]["train_form"] is False
    assert "so no\n`train.keras` ships" in (root / "repvgg/a0/classification/1/README.md").read_text()


# ----- the user's loop: fine-tune the train form, fuse, publish, load --------------------------------
SIZE = 32


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (shipped inside the package), upscaled to 32x32 RGB in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[..., None]
    images = np.repeat(np.repeat(images, SIZE // 8, axis=1), SIZE // 8, axis=2)
    images = np.repeat(images, 3, axis=-1)
    order = np.random.default_rng(0).permutation(len(images))
    split = int(0.8 * len(images))
    train, test = order[:split], order[split:]
    return images[train], data.target[train], images[test], data.target[test]


def test_fine_tune_the_train_form_then_publish_it_as_your_own_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub-cache"))
    built = build_artifacts("A0", tmp_path / "a0", weights="random")
    train = keras.saving.load_model(built.keras_files["train"])
    features = train.get_layer("pool").output  # the name the README documents
    model = keras.Model(train.input, keras.layers.Dense(10, name="head")(features))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x_train, y_train, x_test, y_test = _digits()
    model.fit(x_train, y_train, batch_size=64, epochs=3, verbose=0)
    reference = np.asarray(model.predict(x_test, batch_size=128, verbose=0))
    assert (reference.argmax(-1) == y_test).mean() > 0.5, "the fine-tune learned nothing"
    model.save(tmp_path / "digits-a0.keras")

    labels = _labels(tmp_path, DIGITS)
    root = tmp_path / "hub"
    result = runner.invoke(
        app,
        ["publish", "A0", "--weights", str(tmp_path / "digits-a0.keras"), "--labels", str(labels)]
        + ["--name", "digits-a0", "--hub", str(root)],
    )
    assert result.exit_code == 0, result.output

    layer = hub.KerasLayer(str(root / "repvgg/digits-a0/classification/1"))
    served = tf_keras.Sequential([tf_keras.Input((SIZE, SIZE, 3)), layer]).predict(x_test, batch_size=128, verbose=0)
    loaded = keras.saving.load_model(root / "repvgg/digits-a0/classification/1.keras")
    from_keras = np.asarray(loaded.predict(x_test, batch_size=128, verbose=0))
    for got in (served, from_keras):
        _close(reference, got)
        np.testing.assert_array_equal(got.argmax(-1), reference.argmax(-1))
    assert (root / "repvgg/digits-a0/classification/1/assets/labels.txt").read_text().splitlines() == DIGITS


# ----- bad input: one line, exit 2, nothing published --------------------------------------------------
@pytest.fixture(scope="module")
def published_a0_name(tmp_path_factory, timm_10_class):
    """A hub where the name 'flowers' is a RepVGG-A0 model (10 classes)."""
    root = tmp_path_factory.mktemp("names") / "hub"
    labels = _labels(root.parent, DIGITS)
    _, checkpoint = timm_10_class
    result = runner.invoke(
        app,
        [
            "publish",
            "A0",
            "--weights",
            str(checkpoint),
            "--labels",
            str(labels),
            "--name",
            "flowers",
            "--hub",
            str(root),
        ],
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("count", r"labels\.txt has 9 labels but the classifier has 10 outputs; give it exactly 10 lines"),
        ("empty", r"labels\.txt is empty; write one class name per line"),
        ("not utf-8", r"labels\.txt is not UTF-8 text \(byte 0xff at offset 0\)"),
        ("blank line", r"labels\.txt has an empty line 3"),
        (
            "taken name",
            r"the model name 'flowers' is taken in .* by a RepVGG-A0 model, not RepVGG-A1; choose another --name",
        ),
        ("a variant's own name", r"the model name 'a0' is taken in .* by a RepVGG-A0 model, not RepVGG-A1"),
        ("invalid name", r"invalid model name '\.\./x': use lower-case letters"),
        ("two variants", r"invalid --name 'one': names one model: publish one variant with it"),
    ],
)
def test_bad_publish_input_is_one_line_and_publishes_nothing(published_a0_name, timm_10_class, tmp_path, case, message):
    root = tmp_path / "hub"
    shutil.copytree(published_a0_name, root)
    before = (root / "index.json").read_text()
    _, checkpoint = timm_10_class
    labels = tmp_path / "labels.txt"
    labels.write_bytes(
        {
            "count": "".join(f"{n}\n" for n in DIGITS[:9]).encode(),
            "empty": b"",
            "not utf-8": b"\xff\xfe digit\n",
            "blank line": b"a\nb\n\nd\n",
        }.get(case, "".join(f"{n}\n" for n in DIGITS).encode())
    )
    variants, name, weights = ["A0"], "digits", str(checkpoint)
    if case == "taken name":
        variants, name, weights = ["A1"], "flowers", "random"
    elif case == "a variant's own name":
        variants, name, weights = ["A1"], "a0", "random"
    elif case == "invalid name":
        name = "../x"
    elif case == "two variants":
        variants, name = ["A0", "A1"], "one"
    args = ["publish", *variants, "--weights", weights, "--labels", str(labels), "--name", name, "--hub", str(root)]
    result = runner.invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(message, lines[0]), lines[0]
    assert (root / "index.json").read_text() == before
    assert not (root / "repvgg/digits").exists()


def test_check_fusion_takes_any_head_and_refuses_a_source_with_nothing_to_fuse(timm_10_class, tmp_path):
    _, checkpoint = timm_10_class
    result = runner.invoke(app, ["check-fusion", "A0", "--weights", str(checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True
    build_model("A0", "deploy", num_classes=10).save(tmp_path / "deploy.keras")  # a deploy-form .keras
    result = runner.invoke(app, ["check-fusion", "A0", "--weights", str(tmp_path / "deploy.keras")])
    assert result.exit_code == 2
    assert "is a deploy-form (fused) source: there is no train form to fuse and check" in result.stderr
