"""The fused network as a TF Hub Reusable SavedModel.

Why not ``keras.Model.export``: Keras 3's export has no ``__call__`` (so ``hub.KerasLayer`` cannot
fine-tune it) and stores every weight twice. This module instead copies the deploy model's weights
into its own ``tf.Variable``s once and writes the forward pass with plain ``tf.nn`` ops:

* the root has ``__call__(images, training=False)`` traced for both values of ``training``,
* ``variables``, ``trainable_variables`` and ``regularization_losses`` are saved attributes
  (tf.Module's own are read-only properties that are not saved, so they are shadowed here),
* a ``serving_default`` signature takes ``images`` and returns a dict.

Input: float32 ``[batch, height, width, 3]`` RGB in [0, 1], any size; ImageNet normalisation is
inside the graph. 3x3 convolutions use explicit symmetric padding (PyTorch's ``padding=1``); the
dilated blocks below output stride 32 run at stride 1, ``SAME`` (``padding=d`` for dilation d).

``feature_maps`` returns a dict from ``__call__`` as well as from ``serving_default``:
``{"stride_2": ..., "stride_32": ...}``, the outputs of the stem and of each stage (after ReLU), NHWC
float32 with a static channel dimension; ``hub.KerasLayer`` passes such a dict on as it is.

Normalisation is half folded into the stem: ``conv(W, pad0((x - mean) / std))`` equals
``conv(W / std, pad0(x - mean))`` in exact arithmetic (zero padding stays zero under a per-channel scale), so
the stem's kernel variable holds ``W / std`` and the graph only subtracts the mean: one elementwise
pass over the input instead of two (3-5% faster for A0, see the README). The mean cannot be folded
the same way: zero padding of ``x - mean`` is not zero padding of ``x``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ..variants.blocks import HEAD, layer_name
from ..variants.graph import describe_model
from ..variants.table import IMAGENET_MEAN, IMAGENET_STD
from .tasks import FEATURE_MAPS, OUTPUT_KEYS, TASKS

_PAD = [[0, 0], [1, 1], [1, 1], [0, 0]]


@dataclass(frozen=True)
class _BlockOps:
    """Static description of one block's ops; indices point into the module's variable list."""

    kernel: int
    bias: int
    stride: int
    dilation: int
    se: tuple[int, int, int, int] | None  # down kernel, down bias, up kernel, up bias
    feature_key: str | None  # the feature map this block's output is, for feature_maps


class RepVGGHubModule(tf.Module):
    """A Reusable SavedModel of a fused RepVGG for one task."""

    # Shadow tf.Module's read-only properties with plain, saved attributes.
    variables = None
    trainable_variables = None
    regularization_losses = None

    def __init__(self, deploy_model: keras.Model, task: str, *, assets: Sequence[Path] = ()) -> None:
        info = describe_model(deploy_model)
        super().__init__(name=f"repvgg_{info.spec.hub_name}_{task}")
        if info.form != "deploy":
            raise ValueError("RepVGGHubModule wraps the fused (deploy) model; call fuse() first")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        if task == "classification" and not info.include_top:
            raise ValueError("the classification task needs a model with its classifier head")
        self.task = task
        params: list[tf.Variable] = []

        def add(value, name: str) -> int:
            params.append(tf.Variable(np.asarray(value, np.float32), name=name, trainable=True))
            return len(params) - 1

        blocks = []

        def weights(plan, part):
            return deploy_model.get_layer(layer_name(plan.name, part)).get_weights()

        maps = {level.index: level.key for level in info.spec.feature_levels(info.output_stride)}
        for plan in info.spec.layers(info.output_stride):
            kernel, bias = weights(plan, "reparam_conv")
            if plan.index == 0:  # the stem sees mean-subtracted input: fold 1/std into its kernel
                kernel = kernel.astype(np.float64) / np.asarray(IMAGENET_STD, np.float64)[None, None, :, None]
            k = add(kernel, f"{plan.name}_kernel")
            b = add(bias, f"{plan.name}_bias")
            se = None
            if plan.se_channels:
                # 1x1 Conv2D kernels [1, 1, in, out] -> matmul [in, out]
                dk, db = weights(plan, "se_down")
                uk, ub = weights(plan, "se_up")
                dk, uk = dk[0, 0], uk[0, 0]
                se = (
                    add(dk, f"{plan.name}_se_down_kernel"),
                    add(db, f"{plan.name}_se_down_bias"),
                    add(uk, f"{plan.name}_se_up_kernel"),
                    add(ub, f"{plan.name}_se_up_bias"),
                )
            key = maps.get(plan.index) if task == FEATURE_MAPS else None
            blocks.append(_BlockOps(k, b, plan.stride, plan.dilation, se, key))
        head = None
        if task == "classification":
            hk, hb = deploy_model.get_layer(HEAD).get_weights()
            head = (add(hk, "head_kernel"), add(hb, "head_bias"))

        self.variables = list(params)
        self.trainable_variables = list(params)
        self.regularization_losses = []
        # Files copied into assets/ under their own names (labels.txt, synsets.txt).
        self.assets = [tf.saved_model.Asset(str(path)) for path in assets]
        self._blocks = tuple(blocks)  # plain data, not trackable
        self._head = head
        self._mean = tf.constant(IMAGENET_MEAN, tf.float32)

        self.__call__ = tf.function(self._forward)
        spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
        for training in (False, True):
            self.__call__.get_concrete_function(spec, training)
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _forward(self, images, training=False):
        """Subtract the mean (1/std lives in the stem kernel), run the fused blocks, then return the
        feature maps, or pool and for classification apply the head."""
        del training  # the fused network has no BatchNorm or dropout: same graph either way
        p = self.variables
        x = tf.convert_to_tensor(images, tf.float32) - self._mean
        maps = {}
        for block in self._blocks:
            if block.dilation == 1:
                x = tf.nn.conv2d(x, p[block.kernel], strides=block.stride, padding=_PAD)
            else:
                # Dilated blocks run at stride 1, where SAME pads d on every side, PyTorch's
                # padding=d. tf.nn.convolution runs them through space-to-batch: a dilated
                # Conv2D's filter gradient has no CPU kernel ("Current CPU implementations do not
                # yet support dilation rates larger than 1"), so hub.KerasLayer could not train it.
                x = tf.nn.convolution(x, p[block.kernel], padding="SAME", dilations=block.dilation)
            x = tf.nn.bias_add(x, p[block.bias])
            if block.se is not None:
                dk, db, uk, ub = (p[i] for i in block.se)
                gate = tf.reduce_mean(x, axis=[1, 2])
                gate = tf.nn.relu(tf.matmul(gate, dk) + db)
                gate = tf.sigmoid(tf.matmul(gate, uk) + ub)
                x = x * gate[:, None, None, :]
            x = tf.nn.relu(x)
            if block.feature_key is not None:
                maps[block.feature_key] = x
        if self.task == FEATURE_MAPS:
            return maps
        x = tf.reduce_mean(x, axis=[1, 2])
        if self._head is not None:
            x = tf.matmul(x, p[self._head[0]]) + p[self._head[1]]
        return x

    def _serve(self, images):
        out = self.__call__(images, training=False)
        return dict(out) if self.task == FEATURE_MAPS else {OUTPUT_KEYS[self.task][0]: out}

    def save(self, path: str | Path) -> None:
        tf.saved_model.save(
            self,
            str(path),
            signatures={"serving_default": self.serve.get_concrete_function()},
        )
