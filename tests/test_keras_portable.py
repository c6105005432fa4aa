"""Keras 3 first-class: both forms are graphs of Keras' own layers, so a ``.keras`` file loads with
plain ``keras.saving.load_model`` (default safe_mode) in a process where this package cannot be
imported; a model trained there and saved again is recognised and fused back here; and fitting the
train form does not crash under oneDNN."""

from __future__ import annotations

import textwrap

import keras
import numpy as np
import pytest
from consumer import BLOCK_PACKAGE, KERAS_LAYERS, assert_only_keras_classes, config_objects, keras_objects, run_script

from repvgg_registry.variants import build_model, describe_model, fuse, randomize_batchnorm
from repvgg_registry.variants.equivalence import compare_outputs, sample_images

# Runs in a child process where `import repvgg_registry` fails.
CONSUMER = BLOCK_PACKAGE + textwrap.dedent(
    """
    from pathlib import Path

    import keras
    import numpy as np

    root = Path(sys.argv[1])
    images = np.load(root / "images.npy")
    for name in ("train", "deploy", "features"):
        model = keras.saving.load_model(root / f"{name}.keras")  # default safe_mode=True
        np.save(root / f"{name}.out.npy", keras.ops.convert_to_numpy(model(images, training=False)))

    model = keras.saving.load_model(root / "train.keras")
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [np.array(bn.moving_mean) for bn in bns]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64, 64, 3)).astype(np.float32)
    y = rng.integers(0, 1000, 4)
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all(), history.history
    changed = sum(not np.array_equal(b, np.array(bn.moving_mean)) for b, bn in zip(before, bns))
    assert changed == len(bns), f"only {changed} of {len(bns)} BatchNorms updated their statistics"
    model.save(root / "trained.keras")
    np.save(root / "trained.out.npy", keras.ops.convert_to_numpy(model(images, training=False)))
    assert sys.modules["repvgg_registry"] is None
    print("consumer ok")
    """
)

# Fits the train form with Adam; before the MaxPooling2D(1, 2) 1x1 branch this died with SIGSEGV
# or "double free or corruption" in 3 of 3 runs here (REFERENCE section 8).
FIT = textwrap.dedent(
    """
    import sys

    import keras
    import numpy as np

    from repvgg_registry.variants import build_model

    seed = int(sys.argv[1])
    keras.utils.set_random_seed(seed)
    model = build_model("A0", "train", num_classes=10, input_shape=(96, 96, 3))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, 96, 96, 3)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all(), history.history
    print("fit ok", history.history["loss"])
    """
)


def _close(reference, candidate, rtol: float) -> None:
    reference = np.asarray(reference, np.float64)
    diff = float(np.max(np.abs(reference - np.asarray(candidate, np.float64))))
    assert diff <= rtol * max(1.0, float(np.max(np.abs(reference)))), diff


def test_keras_files_load_train_and_fuse_without_the_package(tmp_path):
    keras.utils.set_random_seed(0)
    train = build_model("A0", "train")
    randomize_batchnorm(train, seed=1)
    headless = build_model("A0", "train", include_top=False)
    randomize_batchnorm(headless, seed=2)
    models = {"train": train, "deploy": fuse(train), "features": fuse(headless)}
    images = sample_images(2, 64, 96, seed=5)
    np.save(tmp_path / "images.npy", images)
    expected = {}
    for name, model in models.items():
        path = tmp_path / f"{name}.keras"
        model.save(path)
        objects = config_objects(path)
        assert_only_keras_classes(objects, name)
        layers = {o["class_name"] for o in objects if o.get("module") == "keras.layers"}
        assert layers <= KERAS_LAYERS, layers - KERAS_LAYERS
        expected[name] = np.asarray(model(images, training=False))
    assert expected["features"].shape == (2, 1280) and expected["deploy"].shape == (2, 1000)

    (tmp_path / "consumer.py").write_text(CONSUMER)
    result = run_script(tmp_path / "consumer.py", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0 and "consumer ok" in result.stdout, result.stderr[-3000:]
    for name in models:
        _close(expected[name], np.load(tmp_path / f"{name}.out.npy"), 1e-5)

    # Trained elsewhere, saved, and fused back here from the graph alone.
    trained = keras.saving.load_model(tmp_path / "trained.keras")
    assert describe_model(trained) == (describe_model(train).spec, "train", True, 1000, (), 32)
    reference = np.asarray(trained(images, training=False))
    _close(np.load(tmp_path / "trained.out.npy"), reference, 1e-5)
    assert not np.allclose(reference, expected["train"], atol=1e-4), "fit changed nothing"
    deployed = fuse(trained)
    diff, _, tol = compare_outputs(reference, np.asarray(deployed(images)))
    assert diff <= tol, f"{diff} > {tol}"


def test_se_variant_config_names_only_keras_layers():
    """D2se's SE is GlobalAveragePooling2D(keepdims) + two 1x1 Conv2D + Multiply, not a custom layer
    or Dense on a 4-D tensor."""
    model = build_model("D2se", "train", input_shape=(64, 64, 3))
    objects = keras_objects(keras.saving.serialize_keras_object(model))
    assert_only_keras_classes(objects, "D2se")
    classes = {o["class_name"] for o in objects if o.get("module") == "keras.layers"}
    assert classes <= KERAS_LAYERS and {"Multiply", "GlobalAveragePooling2D"} <= classes
    se = [model.get_layer(f"stage1_block0.{part}") for part in ("se_pool", "se_down", "se_up", "se_gate")]
    assert se[0].keepdims and se[1].kernel.shape == (1, 1, 160, 10) and se[2].kernel.shape == (1, 1, 10, 160)
    assert (se[1].activation.__name__, se[2].activation.__name__) == ("relu", "sigmoid")


@pytest.mark.slow
def test_fitting_the_train_form_stays_up(tmp_path):
    """Three fits, each in its own process (heap corruption kills a process, not a call)."""
    script = tmp_path / "fit.py"
    script.write_text(FIT)
    for seed in range(3):
        result = run_script(script, str(seed), cwd=tmp_path)
        assert result.returncode == 0 and "fit ok" in result.stdout, (
            f"fit {seed} exited {result.returncode}: {result.stderr[-2000:]}"
        )
