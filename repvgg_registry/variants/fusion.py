"""Structural re-parameterization: fold a train-form RepVGG into its deploy form.

Per branch, with ``std = sqrt(running_var + eps)``: kernel ``W * gamma / std`` and bias
``beta - running_mean * gamma / std``. The 1x1 kernel is zero-padded to 3x3 (weight at the
centre); the identity branch is a 3x3 kernel with 1 at ``[1, 1, i % (C / groups), i]``. The three
are summed. Everything is folded in float64 and cast once at the end, so that fusion adds no
rounding beyond float32's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from .blocks import RepVGGBlock, RepVGGDeployBlock
from .builder import build_info, build_model


@dataclass(frozen=True)
class BatchNormStats:
    """BatchNorm parameters in float64, independent of Keras or PyTorch."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    @classmethod
    def from_layer(cls, bn: keras.layers.BatchNormalization) -> BatchNormStats:
        def f64(v):
            return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)

        return cls(f64(bn.gamma), f64(bn.beta), f64(bn.moving_mean), f64(bn.moving_variance), float(bn.epsilon))

    def fold(self, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fold BN into an HWIO kernel: returns (kernel, bias), both float64."""
        scale = self.gamma / np.sqrt(self.var + self.eps)
        return kernel * scale, self.beta - self.mean * scale


def pad_1x1_to_3x3(kernel: np.ndarray) -> np.ndarray:
    """Zero-pad an HWIO 1x1 kernel to 3x3 with the weight at the centre."""
    out = np.zeros((3, 3) + kernel.shape[2:], dtype=np.float64)
    out[1, 1] = kernel[0, 0]
    return out


def identity_kernel(channels: int, groups: int) -> np.ndarray:
    """The identity as a (grouped) 3x3 HWIO kernel: 1 at ``[1, 1, i % (C/groups), i]``."""
    per_group = channels // groups
    kernel = np.zeros((3, 3, per_group, channels), dtype=np.float64)
    for i in range(channels):
        kernel[1, 1, i % per_group, i] = 1.0
    return kernel


def fuse_branches(
    kernel_3x3: np.ndarray,
    bn_3x3: BatchNormStats,
    kernel_1x1: np.ndarray,
    bn_1x1: BatchNormStats,
    bn_identity: BatchNormStats | None,
    groups: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum the folded branches of one block into a single 3x3 (kernel, bias) in float64."""
    k3, b3 = bn_3x3.fold(np.asarray(kernel_3x3, dtype=np.float64))
    k1, b1 = bn_1x1.fold(pad_1x1_to_3x3(np.asarray(kernel_1x1, dtype=np.float64)))
    kernel, bias = k3 + k1, b3 + b1
    if bn_identity is not None:
        ki, bi = bn_identity.fold(identity_kernel(kernel.shape[-1], groups))
        kernel, bias = kernel + ki, bias + bi
    return kernel, bias


def fuse_block(block: RepVGGBlock) -> tuple[np.ndarray, np.ndarray]:
    """Fused float64 (kernel, bias) of one train-form Keras block."""
    identity = BatchNormStats.from_layer(block.bn_identity) if block.bn_identity is not None else None
    return fuse_branches(
        keras.ops.convert_to_numpy(block.conv_kxk.kernel),
        BatchNormStats.from_layer(block.bn_kxk),
        keras.ops.convert_to_numpy(block.conv_1x1.kernel),
        BatchNormStats.from_layer(block.bn_1x1),
        identity,
        block.groups,
    )


def fuse(train_model: keras.Model) -> keras.Model:
    """Return the deploy-form twin of a train-form model, with the same outputs in inference mode."""
    info = build_info(train_model)
    if info.form != "train":
        raise ValueError(f"fuse() takes a train-form model; {train_model.name!r} is {info.form}")
    deploy = build_model(
        info.spec,
        "deploy",
        include_top=info.include_top,
        num_classes=info.num_classes,
        input_shape=info.input_shape,
    )
    for layer in train_model.layers:
        target = deploy.get_layer(layer.name)
        if isinstance(layer, RepVGGBlock):
            assert isinstance(target, RepVGGDeployBlock)
            kernel, bias = fuse_block(layer)
            target.reparam_conv.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
            if layer.se is not None:
                target.se.set_weights(layer.se.get_weights())
        elif layer.weights:
            target.set_weights(layer.get_weights())
    return deploy


def randomize_batchnorm(
    model: keras.Model, seed: int = 0, *, images: np.ndarray | None = None, calibration_size: int = 64
) -> None:
    """Give every BatchNorm non-trivial statistics (gamma, beta, running mean and variance).

    With fresh BN (gamma 1, mean 0, var 1) a broken fusion can still look right. Purely random
    running statistics, on the other hand, make a deep random network chaotic: dead channels
    normalised by a near-zero variance amplify float32 rounding block after block (D2se's logits
    reach 1e7 and train and deploy forms then disagree by rounding alone). So, block by block in
    forward order, each BN's running mean and variance are set from its actual input on
    ``images`` (the batch you will compare on; random 64x64 noise by default), the variance
    floored at the layer's mean variance, then perturbed (mean by up to 0.1 std, variance by
    0.8-1.2x) before the next block sees them. A random D2se is only well-conditioned on the batch
    it was calibrated on. Gamma is 0.8-1.2 on the identity branch
    and 0.05-0.2 on the conv branches, like a trained residual network, and beta is random: every
    term of the fold matters while a block's gain stays near 1.
    """
    from .blocks import RepVGGBlock

    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.standard_normal((4, calibration_size, calibration_size, 3)).astype(np.float32)
    x = keras.ops.convert_to_tensor(images)

    def calibrate(bn: keras.layers.BatchNormalization, inputs, gamma_range: tuple[float, float]) -> None:
        values = np.asarray(keras.ops.convert_to_numpy(inputs), dtype=np.float64)
        mean = values.mean(axis=(0, 1, 2))
        var = values.var(axis=(0, 1, 2))
        var = np.maximum(var, var.mean() + 1e-6)
        n = mean.shape[0]
        mean = mean + rng.uniform(-0.1, 0.1, n) * np.sqrt(var)
        var = var * rng.uniform(0.8, 1.2, n)
        bn.set_weights(
            [
                rng.uniform(*gamma_range, n).astype(np.float32),
                rng.normal(0.0, 0.2, n).astype(np.float32),
                mean.astype(np.float32),
                var.astype(np.float32),
            ]
        )

    for layer in model.layers:
        if isinstance(layer, RepVGGBlock):
            padded = x if layer.stride == 1 else keras.ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
            calibrate(layer.bn_kxk, layer.conv_kxk(padded), (0.05, 0.2))
            calibrate(layer.bn_1x1, layer.conv_1x1(x), (0.05, 0.2))
            if layer.bn_identity is not None:
                calibrate(layer.bn_identity, x, (0.8, 1.2))
            x = layer(x, training=False)
