"""Train form vs deploy form on every variant, with randomised weights and BN statistics."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from repvgg_registry.variants import VARIANTS, build_model, count_params, fuse, randomize_batchnorm
from repvgg_registry.variants.blocks import RepVGGBlock, RepVGGDeployBlock
from repvgg_registry.variants.equivalence import check_fusion, compare_outputs, sample_images

# Square and non-square inputs; the big variants use small ones to keep CI fast.
SMALL = {"A0", "A1", "A2", "B0"}


@pytest.fixture(scope="module", params=[v.name for v in VARIANTS])
def pair(request):
    """(train model with randomised BN, its fused deploy model), built once per variant."""
    keras.utils.set_random_seed(1)
    train = build_model(request.param, "train")
    randomize_batchnorm(train, seed=1)
    return train, fuse(train)


def _sizes(name):
    return [(96, 96), (64, 96)] if name in SMALL else [(64, 64), (48, 80)]


def test_fused_logits_equal_train_logits(pair):
    train, _ = pair
    name = train._repvgg_build_info.spec.name
    for height, width in _sizes(name):
        images = sample_images(2, height, width, seed=height + width)
        randomize_batchnorm(train, seed=height, images=images)
        deploy = fuse(train)
        reference = np.asarray(train(images, training=False))
        fused = np.asarray(deploy(images, training=False))
        diff, max_ref, tol = compare_outputs(reference, fused)
        assert diff <= tol, f"{name} {height}x{width}: {diff} > {tol}"
        # The signal must survive the depth, or a wrong kernel would hide behind the biases.
        assert np.abs(reference[0] - reference[1]).max() > 100 * tol


def test_keras_parameter_counts_equal_the_table(pair):
    train, deploy = pair
    spec = train._repvgg_build_info.spec
    trainable = sum(int(np.prod(w.shape)) for w in train.trainable_weights)
    assert trainable == count_params(spec, "train")
    assert deploy.count_params() == count_params(spec, "deploy")
    assert not deploy.non_trainable_weights, "the deploy form has no BatchNorm left"


def test_deploy_form_is_one_biased_conv_per_block(pair):
    _, deploy = pair
    blocks = [layer for layer in deploy.layers if isinstance(layer, RepVGGDeployBlock)]
    spec = deploy._repvgg_build_info.spec
    assert [b.name for b in blocks] == [p.name for p in spec.layers()]
    for block, plan in zip(blocks, spec.layers(), strict=False):
        convs = [s for s in block._flatten_layers(include_self=False) if isinstance(s, keras.layers.Conv2D)]
        assert [c.name for c in convs] == ["reparam_conv"]
        assert convs[0].use_bias and convs[0].kernel_size == (3, 3) and convs[0].groups == plan.groups


def test_broken_fusion_is_detected():
    """The check is sharp: dropping the identity branch's contribution must fail it."""
    keras.utils.set_random_seed(0)
    train = build_model("A0", "train")
    randomize_batchnorm(train, seed=0)
    deploy = fuse(train)
    block = deploy.get_layer("stage2_block1")
    kernel, bias = block.reparam_conv.get_weights()
    kernel[1, 1] -= np.eye(kernel.shape[2], dtype=np.float32) * 0.05
    block.reparam_conv.set_weights([kernel, bias])
    result = check_fusion("A0", 64, 96, train_model=train)
    assert result.ok
    images = sample_images(2, 64, 96)
    diff, _, tol = compare_outputs(train(images, training=False), deploy(images))
    assert diff > tol


def test_train_block_layout_and_batchnorm_settings():
    train = build_model("B1g4", "train", input_shape=(64, 64, 3))
    stem = train.get_layer("stem")
    assert isinstance(stem, RepVGGBlock) and stem.bn_identity is None and stem.stride == 2
    grouped = train.get_layer("stage1_block1")
    assert grouped.groups == 4 and grouped.bn_identity is not None
    assert grouped.conv_kxk.kernel.shape == (3, 3, 128 // 4, 128)
    assert grouped.conv_1x1.kernel.shape == (1, 1, 128 // 4, 128)
    assert train.get_layer("stage1_block2").groups == 1
    for bn in (grouped.bn_kxk, grouped.bn_1x1, grouped.bn_identity):
        assert bn.epsilon == pytest.approx(1e-5) and bn.momentum == pytest.approx(0.9)
    paths = {w.path for w in train.weights}
    assert "stage1_block1/bn_identity/moving_variance" in paths
    assert "stage4_block0/conv_kxk/kernel" in paths


def test_headless_and_custom_head_and_fixed_size():
    features = build_model("A0", "deploy", include_top=False)
    assert features.output.shape == (None, 1280)
    assert features(sample_images(1, 50, 70)).shape == (1, 1280)
    ten = build_model("A0", "train", num_classes=10, input_shape=(64, 64, 3))
    assert ten.output.shape == (None, 10)
    fused = fuse(ten)
    assert fused.input.shape == (None, 64, 64, 3) and fused.output.shape == (None, 10)


def test_stride_two_blocks_sample_the_same_pixels_as_pytorch():
    """With TF's 'same' padding a stride-2 3x3 centres on 2i+1 but the 1x1 on 2i; ours pads 1 on
    every side. A 3x3 kernel that is a pure centre tap must equal the 1x1 branch exactly."""
    block = RepVGGBlock(3, 8, stride=2, name="probe")
    x = sample_images(1, 8, 8)
    block(x)
    center = np.zeros((3, 3, 3, 8), np.float32)
    center[1, 1] = np.random.default_rng(0).standard_normal((3, 8))
    block.conv_kxk.set_weights([center])
    block.conv_1x1.set_weights([center[1:2, 1:2]])
    y3 = block.bn_kxk(block.conv_kxk(keras.ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])), training=False)
    y1 = block.bn_1x1(block.conv_1x1(x), training=False)
    np.testing.assert_allclose(np.asarray(y3), np.asarray(y1), atol=1e-6)
    assert y3.shape == (1, 4, 4, 8)


def test_fuse_refuses_a_deploy_model():
    with pytest.raises(ValueError, match="train-form"):
        fuse(build_model("A0", "deploy"))
