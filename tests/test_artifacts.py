"""The TF Hub artifacts, verified with the real consumers: hub.KerasLayer in tf_keras (inference and
fine-tuning), Keras 3 TFSMLayer (inference and fit), tf.saved_model.load and saved_model_cli."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras
import torch_reference as ref
from consumer import BLOCK_PACKAGE, KERAS_LAYERS, assert_only_keras_classes, config_objects, run_script
from typer.testing import CliRunner

from repvgg_registry.cli import app
from repvgg_registry.hashing import sha256_file as sha256_of
from repvgg_registry.publish import build as build_mod
from repvgg_registry.publish.build import FORMAT_RTOL, BuildError, build_artifacts
from repvgg_registry.publish.frozen import freeze_serving
from repvgg_registry.variants import build_model, count_params, feature_maps_of, get_variant
from repvgg_registry.variants.equivalence import compare_outputs, sample_images
from repvgg_registry.variants.fusion import fuse

SIZES = [(160, 160), (224, 224), (256, 256), (192, 256)]
STRIDES = (2, 4, 8, 16, 32)
A0_WIDTHS = (48, 48, 96, 192, 1280)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope="module")
def a0_checkpoint(tmp_path_factory):
    """A0 with random weights and randomised BN statistics (via timm), as .safetensors."""
    root = tmp_path_factory.mktemp("weights")
    x = np.clip(sample_images(2, 224, 224, seed=2) * 0.25 + 0.5, 0, 1)
    model = ref.timm_model(get_variant("A0"), [(x - MEAN) / STD], seed=21)
    return ref.save_timm_safetensors(model, root / "a0.safetensors")


@pytest.fixture(scope="module")
def built(a0_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "a0"
    return build_artifacts("A0", out, weights=str(a0_checkpoint))


@pytest.fixture(scope="module")
def deploy(a0_checkpoint):
    return build_model("A0", "deploy", weights=str(a0_checkpoint))


def _images(height, width, batch=2, seed=0):
    return np.random.default_rng(seed).random((batch, height, width, 3), dtype=np.float32)


def _ours(deploy, images, features=False):
    model = keras.Model(deploy.input, deploy.get_layer("pool").output) if features else deploy
    return np.asarray(model((images - MEAN) / STD))


def test_layout_metadata_labels_and_card(built, a0_checkpoint):
    for task in ("feature_vector", "classification", "feature_maps"):
        folder = built.out_dir / task
        assert (folder / "saved_model.pb").is_file() and (folder / "variables").is_dir()
        meta = json.loads((folder / "metadata.json").read_text())
        for key in ("variant", "task", "form", "input", "weights", "fusion", "params", "gmacs_224", "tool", "license"):
            assert key in meta
        assert meta["variant"] == "A0" and meta["task"] == task and meta["form"] == "fused"
        assert meta["input"]["default_size"] == 224 and meta["input"]["crop_pct"] == 0.875
        assert meta["input"]["normalization"]["std"] == [0.229, 0.224, 0.225]
        assert meta["weights"]["sha256"] == sha256_of(a0_checkpoint) and meta["weights"]["scheme"] == "timm"
        assert 0 <= meta["fusion"]["max_abs_diff"] < (1e-2 if task == "feature_maps" else 1e-3)  # maps are large
        assert meta["output_stride"] == 32
        assert meta["tool"]["tensorflow"] == tf.__version__ and meta["tool"]["keras"] == keras.__version__
        card = (folder / "README.md").read_text()
        assert "library_name: tf-keras" in card and "hub.KerasLayer" in card and "TFSMLayer" in card
        assert "tf.saved_model.load" in card
    cls = json.loads((built.out_dir / "classification" / "metadata.json").read_text())
    assert cls["output"] == {
        "name": "logits",
        "num_classes": 1000,
        "background_class": False,
        "labels": "assets/labels.txt",
        "labels_source": "imagenet-1k",  # or the --labels file's name
    }
    assert "No background class" in (built.out_dir / "classification" / "README.md").read_text()
    labels = (built.out_dir / "classification" / "assets" / "labels.txt").read_text().splitlines()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[999] == "toilet tissue"
    fv = json.loads((built.out_dir / "feature_vector" / "metadata.json").read_text())
    assert fv["output"] == {"name": "feature_vector", "num_features": 1280}
    maps = json.loads((built.out_dir / "feature_maps" / "metadata.json").read_text())
    assert maps["output"] == {
        "name": "feature_maps",
        "maps": [{"key": f"stride_{s}", "stride": s, "channels": c} for s, c in zip(STRIDES, A0_WIDTHS, strict=True)],
        "output_stride": 32,
        "layout": "NHWC",
    }
    assert maps["params"] == fv["params"] and maps["signature"]["serving_default"]["outputs"] == [
        f"stride_{s}" for s in STRIDES
    ]
    card = (built.out_dir / "feature_maps" / "README.md").read_text()
    assert "`stride_8`: float32 `[batch, ceil(height/8), ceil(width/8), 96]` (stride 8)" in card
    assert 'maps = hub.KerasLayer("path/to/this/folder", trainable=True)(images)' in card


def test_weights_are_stored_once(built):
    spec = get_variant("A0")
    for task, include_top in (("feature_vector", False), ("classification", True)):
        folder = built.out_dir / task / "variables"
        size = sum(f.stat().st_size for f in folder.iterdir())
        assert size <= 1.05 * 4 * count_params(spec, "deploy", include_top=include_top), task


def test_reusable_savedmodel_contract(built):
    obj = tf.saved_model.load(str(built.out_dir / "feature_vector"))
    assert len(obj.variables) == len(obj.trainable_variables) > 0
    assert list(obj.regularization_losses) == []
    x = tf.constant(_images(96, 128))
    for training in (False, True):
        assert obj(x, training=training).shape == (2, 1280)
    sig = obj.signatures["serving_default"]
    assert list(sig.structured_outputs) == ["feature_vector"]
    assert sig.structured_outputs["feature_vector"].shape.as_list() == [None, 1280]
    assert sig(images=x)["feature_vector"].shape == (2, 1280)


def _source(tensor):
    """The op behind a tensor, looking through Identity ops."""
    op = tensor.op
    while op.type == "Identity":
        op = op.inputs[0].op
    return op


def test_frozen_serving_equals_the_signature_and_is_a_snapshot(built):
    """freeze_serving: same outputs as serving_default, every conv filter a graph constant (what
    lets oneDNN cache its blocked weights), and a snapshot: changing the loaded model's variables
    changes the original signature but not the frozen copy."""
    x = tf.constant(_images(96, 128))
    for task, key in (("classification", "logits"), ("feature_vector", "feature_vector")):
        obj = tf.saved_model.load(str(built.out_dir / task))
        original = obj.signatures["serving_default"]
        frozen = freeze_serving(obj)
        expected = original(images=x)[key].numpy()
        got = frozen(images=x)
        assert list(got) == [key]
        np.testing.assert_allclose(got[key].numpy(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
        np.testing.assert_array_equal(frozen(x)[key].numpy(), got[key].numpy())  # positional too

        ops = frozen.graph.get_operations()
        assert not [op.type for op in ops if "Variable" in op.type]
        convs = [op for op in ops if op.type == "Conv2D"]
        assert len(convs) == len(get_variant("A0").layers())
        assert all(_source(op.inputs[1]).type == "Const" for op in convs)  # grappler drops the Identity ops

        bias = obj.variables[-1]  # the head's (or the last block's) bias
        bias.assign(bias + 1.0)
        assert not np.allclose(original(images=x)[key].numpy(), expected)
        np.testing.assert_array_equal(frozen(images=x)[key].numpy(), got[key].numpy())

    with pytest.raises(ValueError, match="no signature 'serve'.*serving_default"):
        freeze_serving(built.out_dir / "classification", signature="serve")


def test_model_card_freeze_snippet_runs(built):
    """The card's inference-only snippet (plain TensorFlow, no repvgg_registry) does what it says."""
    card = (built.out_dir / "classification" / "README.md").read_text()
    blocks = [b.split("\n", 1)[1] for b in card.split("```")[1::2] if b.startswith("python")]
    snippet = next(b for b in blocks if "convert_variables_to_constants_v2" in b)
    obj = tf.saved_model.load(str(built.out_dir / "classification"))
    images = tf.constant(_images(64, 96))
    scope = {"obj": obj, "images": images}
    exec(snippet, scope)  # noqa: S102 - our own card's code, the point of the test
    expected = obj.signatures["serving_default"](images=images)["logits"].numpy()
    np.testing.assert_allclose(scope["y"].numpy(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_hub_keraslayer_in_tf_keras_equals_our_deploy_model(built, deploy, height, width):
    images = _images(height, width, seed=height + width)
    for task, features in (("classification", False), ("feature_vector", True)):
        model = tf_keras.Sequential([tf_keras.Input((height, width, 3)), hub.KerasLayer(str(built.out_dir / task))])
        got = model.predict(images, verbose=0)
        expected = _ours(deploy, images, features=features)
        assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max()), (task, height, width)
    maps = hub.KerasLayer(str(built.out_dir / "feature_maps"))(images)
    expected_maps = feature_maps_of(deploy)((images - MEAN) / STD)
    assert sorted(maps) == sorted(expected_maps)
    for key, expected in expected_maps.items():
        expected = np.asarray(expected)
        got = maps[key].numpy()
        assert got.shape == expected.shape, (key, got.shape, expected.shape)
        assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max()), (key, height, width)


def test_hub_keraslayer_fine_tunes(built):
    backbone = hub.KerasLayer(str(built.out_dir / "feature_vector"), trainable=True)
    model = tf_keras.Sequential([tf_keras.Input((64, 64, 3)), backbone, tf_keras.layers.Dense(5)])
    assert len(backbone.trainable_weights) > 0
    before = [w.numpy().copy() for w in backbone.trainable_weights]
    model.compile(
        optimizer=tf_keras.optimizers.SGD(0.01),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(_images(64, 64, batch=4), np.array([0, 1, 2, 3]), epochs=2, batch_size=4, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    after = [w.numpy() for w in backbone.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_keras3_tfsmlayer_inference_and_fit(built, deploy):
    layer = keras.layers.TFSMLayer(
        str(built.out_dir / "feature_vector"), call_endpoint="serving_default", trainable=True
    )
    inputs = keras.Input((64, 64, 3))
    features = layer(inputs)["feature_vector"]
    model = keras.Model(inputs, keras.layers.Dense(3)(features))
    images = _images(64, 64, batch=4)
    head_free = keras.Model(inputs, features)
    np.testing.assert_allclose(np.asarray(head_free(images)), _ours(deploy, images, features=True), atol=1e-4)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(images, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_saved_model_cli_lists_the_signature(built):
    cli = Path(sys.executable).parent / "saved_model_cli"
    proc = subprocess.run(
        [str(cli), "show", "--dir", str(built.out_dir / "classification"), "--all"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "serving_default" in proc.stdout and "images" in proc.stdout and "logits" in proc.stdout


def test_same_input_same_artifact(built, a0_checkpoint, tmp_path):
    again = build_artifacts("A0", tmp_path / "again", weights=str(a0_checkpoint))
    for task in ("feature_vector", "classification"):
        first = built.out_dir / task / "variables"
        second = again.out_dir / task / "variables"
        assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in second.iterdir())
        for f in first.iterdir():
            assert f.read_bytes() == (second / f.name).read_bytes(), f.name
        m1 = json.loads((built.out_dir / task / "metadata.json").read_text())
        m2 = json.loads((again.out_dir / task / "metadata.json").read_text())
        m1.pop("created"), m2.pop("created")
        assert m1 == m2


def test_failed_check_leaves_nothing(monkeypatch, tmp_path):
    def disagree(reference, candidate, **_):
        return 1.0, 1.0, 1e-4

    monkeypatch.setattr(build_mod, "compare_outputs", disagree)
    with pytest.raises(BuildError, match="differs from the train form"):
        build_artifacts("A0", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_and_cli_errors_are_one_line(built, tmp_path):
    with pytest.raises(BuildError, match="already exists"):
        build_artifacts("A0", built.out_dir)
    runner = CliRunner()
    result = runner.invoke(
        app, ["build", "A0", "--weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "checkpoint file not found" in result.stderr
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []


# ----- the .keras files ---------------------------------------------------------------------------
# A plain Keras 3 project: only keras and tensorflow, repvgg_registry made unimportable.
KERAS_USER = (
    BLOCK_PACKAGE
    + """
from pathlib import Path

import keras
import numpy as np

root = Path(sys.argv[1])
images = np.load(root / "images.npy")
for task in ("feature_vector", "classification", "train"):
    model = keras.saving.load_model(root / f"{task}.keras")  # default safe_mode=True
    np.save(root / f"{task}.out.npy", keras.ops.convert_to_numpy(model(images, training=False)))

# The issue's snippet: a new head on the fused backbone, fine-tuned with Adam.
backbone = keras.saving.load_model(root / "feature_vector.keras")
before = [np.array(w) for w in backbone.trainable_weights]
model = keras.Sequential([keras.Input((64, 64, 3)), backbone, keras.layers.Dense(5)])
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
x = rng.random((4, 64, 64, 3), dtype=np.float32)
history = model.fit(x, rng.integers(0, 5, 4), batch_size=2, epochs=1, verbose=0)
assert np.isfinite(history.history["loss"]).all(), history.history
moved = sum(not np.array_equal(b, np.array(w)) for b, w in zip(before, backbone.trainable_weights))
assert moved == len(before), f"only {moved} of {len(before)} backbone weights changed"

# The train form fine-tuned in training mode: BatchNorm statistics move.
train = keras.saving.load_model(root / "train.keras")
bns = [layer for layer in train.layers if isinstance(layer, keras.layers.BatchNormalization)]
stats = [np.array(bn.moving_variance) for bn in bns]
train.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = train.fit(x, rng.integers(0, 1000, 4), batch_size=2, epochs=1, verbose=0)
assert np.isfinite(history.history["loss"]).all(), history.history
changed = sum(not np.array_equal(s, np.array(bn.moving_variance)) for s, bn in zip(stats, bns))
assert changed == len(bns), f"only {changed} of {len(bns)} BatchNorms updated their statistics"
train.save(root / "trained.keras")
np.save(root / "trained.out.npy", keras.ops.convert_to_numpy(train(images, training=False)))
print("keras user ok")
"""
)


def test_build_writes_four_portable_keras_files(built):
    tasks = ("feature_vector", "classification", "feature_maps", "train")
    assert sorted(p.name for p in built.out_dir.glob("*.keras")) == sorted(f"{t}.keras" for t in tasks)
    assert built.keras_files == {t: built.out_dir / f"{t}.keras" for t in tasks}
    for path in built.keras_files.values():
        objects = config_objects(path)
        assert_only_keras_classes(objects, path.name)
        assert {o["class_name"] for o in objects if o.get("module") == "keras.layers"} <= KERAS_LAYERS
        assert objects[0]["config"]["layers"][1]["class_name"] == "Normalization", "preprocessing comes first"
    rows = built.to_dict()["artifact_rows"]
    assert [r["path"].rsplit("/", 1)[-1] for r in rows][-4:] == [f"{t}.keras" for t in tasks]
    assert rows[-1]["params"] == count_params(get_variant("A0"), "train", include_top=True)


def test_keras_files_in_a_plain_keras_project(built, tmp_path):
    """The issue's downstream user: each .keras equals its SavedModel (1e-5), train.keras equals
    classification.keras (the fusion bound); a head on feature_vector.keras fine-tunes with Adam;
    train.keras fine-tunes in training mode and still fuses here to the same outputs."""
    for path in built.keras_files.values():
        shutil.copy(path, tmp_path / path.name)
    images = _images(72, 56, batch=2, seed=4)
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "user.py").write_text(KERAS_USER)
    result = run_script(tmp_path / "user.py", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0 and "keras user ok" in result.stdout, result.stderr[-3000:]

    for task, key in (("feature_vector", "feature_vector"), ("classification", "logits")):
        served = tf.saved_model.load(str(built.artifacts[task])).signatures["serving_default"]
        reference = served(images=tf.constant(images))[key].numpy()
        diff, _, tol = compare_outputs(reference, np.load(tmp_path / f"{task}.out.npy"), rtol=FORMAT_RTOL)
        assert diff <= tol, f"{task}.keras vs SavedModel: {diff} > {tol}"
    diff, _, tol = compare_outputs(np.load(tmp_path / "classification.out.npy"), np.load(tmp_path / "train.out.npy"))
    assert diff <= tol, f"train.keras vs classification.keras: {diff} > {tol}"

    trained = keras.saving.load_model(tmp_path / "trained.keras")
    reference = np.load(tmp_path / "trained.out.npy")
    assert not np.allclose(reference, np.load(tmp_path / "train.out.npy"), atol=1e-4), "fit changed nothing"
    fused = fuse(trained)
    diff, _, tol = compare_outputs(reference, np.asarray(fused(images)))
    assert diff <= tol, f"fused fine-tuned train.keras: {diff} > {tol}"


def test_a_keras_file_that_differs_from_its_savedmodel_fails_the_build(monkeypatch, tmp_path):
    """The build check compares each reloaded .keras with its SavedModel: a bound it cannot meet
    fails the build, naming the file, and leaves nothing behind."""
    monkeypatch.setattr(build_mod, "FORMAT_RTOL", -1.0)
    out = tmp_path / "a0"
    with pytest.raises(BuildError, match=r"feature_vector\.keras differs from the feature_vector SavedModel"):
        build_artifacts("A0", out, weights="random")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_train_keras_file_is_a_weights_source(built, tmp_path):
    """``--weights train.keras`` rebuilds the same artifacts: the file round-trips through build."""
    out = tmp_path / "again"
    result = CliRunner().invoke(app, ["build", "A0", "--weights", str(built.keras_files["train"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "classification" / "metadata.json").read_text())
    assert meta["weights"]["scheme"] == "keras" and meta["weights"]["form"] == "train"
    assert meta["weights"]["sha256"] == sha256_of(built.keras_files["train"])
    images = tf.constant(_images(64, 48, seed=9))
    first, second = (
        tf.saved_model.load(str(root / "classification")).signatures["serving_default"](images=images)["logits"]
        for root in (built.out_dir, out)
    )
    diff, _, tol = compare_outputs(first.numpy(), second.numpy(), rtol=FORMAT_RTOL)
    assert diff <= tol


def _not_repvgg(path: Path) -> Path:
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3, name="conv")])
    model.save(path)
    return path


def _other_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    return path


def _truncated(path: Path, source: Path) -> Path:
    path.write_bytes(source.read_bytes()[:4096])
    return path


def _nan_weights(path: Path, source: Path) -> Path:
    model = keras.saving.load_model(source)
    kernel = model.get_layer("stage2_block3.conv_kxk").kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    model.save(path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", r"bad\.keras is not a complete \.keras file \(not a readable zip archive: truncated\?\)"),
        ("a zip of something else", r"bad\.keras cannot be opened as a \.keras file \(.+\); it may be truncated"),
        ("not repvgg", r"bad\.keras: model .* is not a RepVGG graph: its first layer is 'conv'"),
        ("other variant", r"bad\.keras holds RepVGG-A0, not RepVGG-A1"),
        ("nan", r"bad\.keras: weight stage2_block3\.conv_kxk/kernel has NaN or Inf values"),
    ],
)
def test_a_bad_keras_weights_file_is_one_line_and_writes_nothing(built, tmp_path, case, message):
    bad = tmp_path / "in" / "bad.keras"
    bad.parent.mkdir()
    train = built.keras_files["train"]
    {
        "truncated": lambda: _truncated(bad, train),
        "a zip of something else": lambda: _other_zip(bad),
        "not repvgg": lambda: _not_repvgg(bad),
        "other variant": lambda: shutil.copy(train, bad),
        "nan": lambda: _nan_weights(bad, train),
    }[case]()
    variant = "A1" if case == "other variant" else "A0"
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["build", variant, "--weights", str(bad), "--out", str(out)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.output and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_inspect_weights_reads_a_keras_file(built, tmp_path):
    result = CliRunner().invoke(app, ["inspect-weights", str(built.keras_files["train"]), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert (facts["scheme"], facts["form"], facts["variant"], facts["num_classes"]) == ("keras", "train", "A0", 1000)
    assert facts["parameters"] == count_params(get_variant("A0"), "train", include_top=True)
    assert facts["sha256"] == sha256_of(built.keras_files["train"])
    truncated = _truncated(tmp_path / "cut.keras", built.keras_files["train"])
    result = CliRunner().invoke(app, ["inspect-weights", str(truncated)])
    assert result.exit_code == 2 and "cut.keras is not a complete .keras file" in result.stderr
