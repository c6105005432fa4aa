"""Keras 3 layers for the two forms of a RepVGG block.

Train form (``RepVGGBlock``): ``ReLU(SE(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x)))``.
Deploy form (``RepVGGDeployBlock``): ``ReLU(SE(conv3x3_with_bias(x)))``.

Sub-layer names (``conv_kxk``, ``bn_kxk``, ``conv_1x1``, ``bn_1x1``, ``bn_identity``, ``se``,
``reparam_conv``) are stable: fusion and weight import address weights through them.

Two traps are handled here rather than left to the caller (REFERENCE section 2):
* stride-2 blocks pad 1 pixel on every side explicitly and run the 3x3 ``valid``, while the 1x1
  branch runs ``valid`` on the unpadded input, so both branches sample the same pixels as PyTorch;
  TF's ``same`` padding would pad only bottom/right and make the branches disagree.
* BatchNorm uses PyTorch's eps (1e-5) and momentum (0.1, Keras ``momentum=0.9``).
"""

from __future__ import annotations

import keras
from keras import layers, ops

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

_PACKAGE = "repvgg_registry"


def _batch_norm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _conv(filters: int, kernel: int, stride: int, groups: int, *, use_bias: bool, name: str) -> layers.Conv2D:
    # stride 1: "same" pads 1 on every side for an odd kernel, identical to PyTorch's padding=1.
    # stride 2: the block pads explicitly and asks for "valid".
    padding = "same" if stride == 1 else "valid"
    return layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        groups=groups,
        use_bias=use_bias,
        name=name,
    )


def _pad_for_stride(x, stride: int):
    """Symmetric 1-pixel padding for the stride-2 3x3 convolution (PyTorch's ``padding=1``)."""
    if stride == 1:
        return x
    return ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SqueezeExcite(layers.Layer):
    """SE of RepVGG-D2se: global mean, 1x1 down + ReLU, 1x1 up + sigmoid, channel gate.

    The official code pools with a window equal to the width, which breaks on non-square inputs;
    a global mean is identical on square inputs and works on any shape.
    """

    def __init__(self, channels: int, reduced: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.channels = channels
        self.reduced = reduced
        self.down = layers.Dense(reduced, activation="relu", name="down")
        self.up = layers.Dense(channels, activation="sigmoid", name="up")

    def build(self, input_shape) -> None:
        pooled = (input_shape[0], 1, 1, self.channels)
        self.down.build(pooled)
        self.up.build((input_shape[0], 1, 1, self.reduced))

    def call(self, x):
        gate = self.up(self.down(ops.mean(x, axis=(1, 2), keepdims=True)))
        return x * gate

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "reduced": self.reduced}


class _BlockBase(layers.Layer):
    """Shared config of both forms, so that ``get_config`` round-trips either."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        groups: int = 1,
        se_channels: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.groups = groups
        self.se_channels = se_channels
        self.se = SqueezeExcite(out_channels, se_channels, name="se") if se_channels else None

    def _finish(self, x):
        if self.se is not None:
            x = self.se(x)
        return ops.relu(x)

    def _output_shape(self, input_shape) -> tuple:
        def scale(size):
            return None if size is None else (size + 2 - 3) // self.stride + 1

        return (input_shape[0], scale(input_shape[1]), scale(input_shape[2]), self.out_channels)

    def compute_output_shape(self, input_shape) -> tuple:
        return self._output_shape(input_shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "stride": self.stride,
            "groups": self.groups,
            "se_channels": self.se_channels,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RepVGGBlock(_BlockBase):
    """Train-time multi-branch block."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__(in_channels, out_channels, **kwargs)
        s, g = self.stride, self.groups
        self.conv_kxk = _conv(out_channels, 3, s, g, use_bias=False, name="conv_kxk")
        self.bn_kxk = _batch_norm("bn_kxk")
        self.conv_1x1 = layers.Conv2D(
            out_channels, 1, strides=s, padding="valid", groups=g, use_bias=False, name="conv_1x1"
        )
        self.bn_1x1 = _batch_norm("bn_1x1")
        self.has_identity = in_channels == out_channels and s == 1
        self.bn_identity = _batch_norm("bn_identity") if self.has_identity else None

    def build(self, input_shape) -> None:
        padded = input_shape if self.stride == 1 else (input_shape[0], None, None, input_shape[3])
        self.conv_kxk.build(padded)
        self.conv_1x1.build(input_shape)
        out_shape = self._output_shape(input_shape)
        self.bn_kxk.build(out_shape)
        self.bn_1x1.build(out_shape)
        if self.bn_identity is not None:
            self.bn_identity.build(input_shape)
        if self.se is not None:
            self.se.build(out_shape)

    def call(self, x, training=None):
        y = self.bn_kxk(self.conv_kxk(_pad_for_stride(x, self.stride)), training=training)
        y = y + self.bn_1x1(self.conv_1x1(x), training=training)
        if self.bn_identity is not None:
            y = y + self.bn_identity(x, training=training)
        return self._finish(y)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RepVGGDeployBlock(_BlockBase):
    """Inference block after structural re-parameterization: one biased 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__(in_channels, out_channels, **kwargs)
        self.reparam_conv = _conv(out_channels, 3, self.stride, self.groups, use_bias=True, name="reparam_conv")

    def build(self, input_shape) -> None:
        padded = input_shape if self.stride == 1 else (input_shape[0], None, None, input_shape[3])
        self.reparam_conv.build(padded)
        if self.se is not None:
            self.se.build(self._output_shape(input_shape))

    def call(self, x, training=None):
        return self._finish(self.reparam_conv(_pad_for_stride(x, self.stride)))
