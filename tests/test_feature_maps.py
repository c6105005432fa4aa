"""Dense-prediction backbones: the five feature maps and output strides 16 and 8.

Proven against timm: ``features_only=True`` (at ``output_stride`` 32, 16 and 8) with random weights
and randomised BN statistics, loaded from the same checkpoint as our train form and its fusion.
Then the artifact, with its real consumers: ``hub.KerasLayer`` in tf_keras feeding a small FPN that
trains through the dilated stages, ``feature_maps.keras`` doing the same in a Keras 3 project
without this package, and ``saved_model_cli``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow_hub as hub
import tf_keras
import torch_reference as ref
from consumer import BLOCK_PACKAGE, run_script
from typer.testing import CliRunner

from repvgg_registry.cli import app
from repvgg_registry.errors import UsageError
from repvgg_registry.variants import build_model, count_macs, describe_model, feature_maps_of, fuse, get_variant
from repvgg_registry.variants.equivalence import compare_outputs, randomize_batchnorm, sample_images
from repvgg_registry.variants.table import FEATURE_KEYS

runner = CliRunner()
#: A square input and a non-square one whose sides are no multiple of 32 (maps round up).
SIZES = [(64, 64), (72, 104)]


def _assert_map_close(ours, theirs, label):
    """Each map within 1e-4 x max(1, max |map|), and the reference not degenerate."""
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{label}: shape {ours.shape}, timm {theirs.shape}"
    diff, max_ref, tol = compare_outputs(theirs, ours)
    assert diff <= tol, f"{label}: max abs diff {diff:.3e} > {tol:.3e} (max |map| {max_ref:.3e})"
    assert np.abs(theirs[0] - theirs[-1]).max() > 10 * tol, f"{label}: degenerate reference"


@pytest.fixture
def floatx(request):
    """Keras' float type for the models a test builds (restored afterwards). Both settings: the
    global dtype policy is made from floatx once, by the first layer built in the process, and then
    wins over it."""
    before = keras.config.dtype_policy()
    keras.config.set_floatx(request.param)
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy(before)


# float64 on both sides: a random deep network with randomised BN statistics amplifies float32
# rounding block after block (D2se's 24-block stage 3 by ~1000x, so even timm's own train form and
# ours, unfused, differ by 1e-4 of a map there), which would hide a structural error behind noise
# or fail on it. In float64 both forms equal timm's maps to ~1e-13. A0 also runs in float32, the
# artifacts' dtype, with statistics calibrated on 8 images per size (well-posed, var >= the mean).
@pytest.mark.parametrize(
    ("name", "floatx"),
    [("A0", "float64"), ("B1g4", "float64"), ("D2se", "float64"), ("B0", "float64"), ("A0", "float32")],
    indirect=["floatx"],
)
def test_every_map_at_every_output_stride_equals_timm_features_only(name, floatx, tmp_path):
    spec = get_variant(name)
    precise = floatx == "float64"
    calibration = [sample_images(2 if precise else 8, h, w, seed=h + w) for h, w in SIZES]
    for output_stride in (32, 16, 8):
        for calibrate in [calibration] if precise else [[c] for c in calibration]:
            torch_model = ref.timm_model(
                spec, calibrate, seed=5, output_stride=output_stride, variance_floor=0.05 if precise else 1.0
            )
            checkpoint = ref.save_timm_safetensors(torch_model, tmp_path / f"{name}-os{output_stride}.safetensors")
            timm_features = ref.timm_features(spec, torch_model, output_stride)
            timm_features = timm_features.double() if precise else timm_features
            levels = spec.feature_levels(output_stride)
            assert [level.stride for level in levels] == timm_features.feature_info.reduction()
            assert [level.channels for level in levels] == timm_features.feature_info.channels()
            ours = build_model(spec, "train", feature_maps=True, output_stride=output_stride, weights=str(checkpoint))
            assert ours.get_layer("stem.conv_kxk").kernel.dtype == floatx
            fused = fuse(ours)
            for images in calibrate:
                x = images[:2].astype(floatx)
                expected = ref.feature_maps(timm_features, x)
                train_maps, fused_maps = ours(x, training=False), fused(x)
                assert list(train_maps) == list(FEATURE_KEYS) and list(fused_maps) == list(FEATURE_KEYS)
                for key, theirs in zip(FEATURE_KEYS, expected, strict=True):
                    label = f"{name} {floatx} os{output_stride} {x.shape[1]}x{x.shape[2]} {key}"
                    _assert_map_close(train_maps[key], theirs, f"{label} train")
                    _assert_map_close(fused_maps[key], theirs, f"{label} fused")
                    _assert_map_close(fused_maps[key], np.asarray(train_maps[key]), f"{label} fused vs train")


def test_dilation_follows_timms_rule():
    """Stage 4 of every variant has one block: at 16 it runs undilated at stride 1; at 8, stage 3
    takes dilations 1, 2, 2, ... and stage 4 dilation 2; the fused kernels do not change."""
    spec = get_variant("A0")

    def by_stage(output_stride):
        return {
            stage: [(p.stride, p.dilation) for p in spec.layers(output_stride) if p.stage == stage] for stage in (3, 4)
        }

    assert by_stage(16) == {3: [(2, 1)] + [(1, 1)] * 13, 4: [(1, 1)]}
    assert by_stage(8) == {3: [(1, 1)] + [(1, 2)] * 13, 4: [(1, 2)]}
    train = build_model(spec, "train", output_stride=8)
    randomize_batchnorm(train, images=sample_images(2, 48, 48))
    deploy = fuse(train)
    conv = deploy.get_layer("stage3_block1.reparam_conv")
    assert conv.dilation_rate == (2, 2) and conv.strides == (1, 1) and conv.padding == "same"
    plain = fuse(build_model(spec, "train", output_stride=32))
    plain.set_weights(deploy.get_weights())  # the same weights fit: only strides and dilations differ
    assert describe_model(deploy).output_stride == 8 and describe_model(plain).output_stride == 32
    assert count_macs(spec, 224, output_stride=8) > count_macs(spec, 224, output_stride=16) > count_macs(spec, 224)


def test_feature_maps_python_api():
    spec = get_variant("A0")
    some = build_model(spec, "deploy", feature_maps=["stride_32", "stride_8"])
    assert list(some.output) == ["stride_8", "stride_32"]  # network order
    info = describe_model(some)
    assert info.feature_maps == ("stride_8", "stride_32") and info.form == "deploy" and not info.include_top
    early = build_model(spec, "train", feature_maps=["stride_4"])
    assert not any(layer.name.startswith("stage2") for layer in early.layers), "stops at its deepest map"
    assert describe_model(fuse(early)).feature_maps == ("stride_4",) and describe_model(early).output_stride == 32
    mid = describe_model(build_model(spec, "deploy", feature_maps=["stride_16"], output_stride=8))
    assert (mid.feature_maps, mid.output_stride) == (("stride_16",), 8)

    classifier = build_model(spec, "train")
    maps = feature_maps_of(classifier)
    assert maps.get_layer("stem.conv_kxk") is classifier.get_layer("stem.conv_kxk"), "shares the weights"
    out = maps(sample_images(1, 64, 48))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stride_2": (1, 32, 24, 48),
        "stride_4": (1, 16, 12, 48),
        "stride_8": (1, 8, 6, 96),
        "stride_16": (1, 4, 3, 192),
        "stride_32": (1, 2, 2, 1280),
    }

    with pytest.raises(ValueError, match=r"no such feature map 'stride_64'; the valid keys are stride_2, stride_4"):
        build_model(spec, feature_maps=["stride_64"])
    with pytest.raises(ValueError, match="the model has no map 'stride_2'"):
        feature_maps_of(some, ["stride_2"])
    with pytest.raises(UsageError, match="invalid output_stride 12: use 32, 16 or 8"):
        build_model(spec, output_stride=12)


@pytest.mark.parametrize("command", ["build", "publish"])
def test_a_bad_output_stride_is_one_line_and_writes_nothing(command, tmp_path):
    where = ["--out", str(tmp_path / "out")] if command == "build" else ["--hub", str(tmp_path / "hub")]
    result = runner.invoke(app, [command, "A0", "--weights", "random", "--output-stride", "12", *where])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert (
        lines[-1]
        == "error: invalid --output-stride 12: use 32, 16 or 8 (16 and 8 dilate the last stages, as timm does)"
    )
    assert [line for line in lines if line.startswith("error")] == lines[-1:] and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


# ----- the published artifact at output stride 8, with its consumers ---------------------------------
@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """``publish A0 --output-stride 8`` into a fresh hub: its own model, ``a0-os8``."""
    hub_dir = tmp_path_factory.mktemp("hub")
    result = runner.invoke(
        app, ["publish", "A0", "--weights", "random", "--output-stride", "8", "--hub", str(hub_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    return hub_dir, json.loads(result.stdout)


def test_publish_at_output_stride_8_is_a_model_of_its_own(published):
    hub_dir, report = published
    handles = report[0]["handles"]
    assert handles == [
        f"repvgg/a0-os8/{task}/1" for task in ("feature_vector", "classification", "feature_maps", "train")
    ]
    folder = hub_dir / "repvgg/a0-os8/feature_maps/1"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["output_stride"] == 8 and meta["base_variant"] == "A0" and meta["top1"] is None
    assert meta["output"]["maps"] == [
        {"key": "stride_2", "stride": 2, "channels": 48},
        {"key": "stride_4", "stride": 4, "channels": 48},
        {"key": "stride_8", "stride": 8, "channels": 96},
        {"key": "stride_16", "stride": 8, "channels": 192},
        {"key": "stride_32", "stride": 8, "channels": 1280},
    ]
    assert meta["signature"]["serving_default"]["outputs"] == list(FEATURE_KEYS)
    card = (folder / "README.md").read_text()
    assert "| output stride | 8 (stages 3 and 4 at stride 1" in card
    assert "`stride_32`: float32 `[batch, ceil(height/8), ceil(width/8), 1280]` (stride 8)" in card
    result = runner.invoke(app, ["verify", "repvgg/a0-os8/feature_maps/1", "--hub", str(hub_dir)])
    assert result.exit_code == 0 and "stride_32 [1, 8, 6, 1280]" in " ".join(result.stdout.split()), result.output


def _masks(batch: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    return images, (rng.random((batch, size // 8, size // 8, 1)) > 0.5).astype(np.float32)


def _fpn(layers, maps):
    """1x1 laterals on stride 8/16/32, upsample to the finer one and add, a 1x1 mask head."""
    p3, p4, p5 = (layers.Conv2D(8, 1)(maps[k]) for k in ("stride_8", "stride_16", "stride_32"))

    def up(x, like):
        factor = like.shape[1] // x.shape[1]
        return layers.UpSampling2D(factor)(x) if factor > 1 else x

    p4 = layers.Add()([up(p5, p4), p4])
    p3 = layers.Add()([up(p4, p3), p3])
    return layers.Conv2D(1, 1)(p3)


def test_hub_keraslayer_feeds_an_fpn_that_trains_through_the_dilated_stages(published):
    hub_dir, _ = published
    backbone = hub.KerasLayer(str(hub_dir / "repvgg/a0-os8/feature_maps/1"), trainable=True)
    images = tf_keras.Input((64, 64, 3))
    maps = backbone(images)
    assert sorted(maps) == sorted(FEATURE_KEYS) and maps["stride_32"].shape[-1] == 1280
    model = tf_keras.Model(images, _fpn(tf_keras.layers, maps))
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-4), loss=tf_keras.losses.BinaryCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in backbone.trainable_weights]
    x, y = _masks(4, 64)
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    changed = sum(not np.array_equal(b, w.numpy()) for b, w in zip(before, backbone.trainable_weights, strict=True))
    assert changed == len(before), f"{changed} of {len(before)} backbone weights changed"


KERAS_USER = (
    BLOCK_PACKAGE
    + """
import numpy as np
import keras

backbone = keras.saving.load_model(sys.argv[1])
layers = keras.layers
images = keras.Input((64, 64, 3))
maps = backbone(images)
p3, p4, p5 = (layers.Conv2D(8, 1)(maps[k]) for k in ("stride_8", "stride_16", "stride_32"))
p4 = layers.Add()([p5, p4])  # at output stride 8 all three are 8x8
p3 = layers.Add()([p4, p3])
model = keras.Model(images, layers.Conv2D(1, 1)(p3))
model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True))
before = [np.array(w) for w in backbone.trainable_weights]
rng = np.random.default_rng(0)
x = rng.random((4, 64, 64, 3), dtype=np.float32)
y = (rng.random((4, 8, 8, 1)) > 0.5).astype(np.float32)
history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
assert all(np.isfinite(history.history["loss"])), history.history
changed = sum(not np.array_equal(b, np.array(w)) for b, w in zip(before, backbone.trainable_weights))
assert changed == len(before), (changed, len(before))
print("keras user ok")
"""
)


def test_feature_maps_keras_feeds_an_fpn_in_a_plain_keras_project(published, tmp_path):
    hub_dir, _ = published
    path = shutil.copy(hub_dir / "repvgg/a0-os8/feature_maps/1.keras", tmp_path / "feature_maps.keras")
    (tmp_path / "user.py").write_text(KERAS_USER)
    result = run_script(tmp_path / "user.py", str(path), cwd=tmp_path)
    assert result.returncode == 0 and "keras user ok" in result.stdout, result.stderr[-3000:]


def test_saved_model_cli_lists_the_five_maps(published):
    hub_dir, _ = published
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "saved_model_cli"), "show", "--all", "--dir"]
        + [str(hub_dir / "repvgg/a0-os8/feature_maps/1")],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    serving = proc.stdout.split("signature_def['serving_default']")[1]
    for key, channels in zip(FEATURE_KEYS, (48, 48, 96, 192, 1280), strict=True):
        assert f"outputs['{key}'] tensor_info:" in serving, key
        assert f"shape: (-1, -1, -1, {channels})" in serving.split(f"outputs['{key}']")[1].split("name:")[0], key
