"""The layers of a RepVGG network, declared once: the builder wires them, recognition checks them.

Every layer is one of Keras' own (``ZeroPadding2D``, ``Conv2D``, ``BatchNormalization``,
``MaxPooling2D``, ``Add``, ``GlobalAveragePooling2D``, ``Multiply``, ``ReLU``, ``Dense``): no custom
class, no ``Lambda``, nothing registered with ``keras.saving``, so a ``.keras`` file of either form
loads with plain ``keras.saving.load_model`` (default ``safe_mode``) where this package is not
installed.

Layer names are ``<block>.<part>``, with ``<block>`` from :attr:`LayerPlan.name` (``stem``,
``stage1_block0``, ...; Keras accepts ``.`` in layer names, not ``/``), so a weight's path is
``<block>.<part>/<weight>``, e.g. ``stage1_block1.bn_identity/moving_variance``:

==================  ======================================  ========================================
part                layer                                   when
==================  ======================================  ========================================
``pad``             ``ZeroPadding2D(1)``                    stride-2 blocks, before the 3x3 conv
``conv_kxk``        ``Conv2D(c, 3, use_bias=False)``        train form
``bn_kxk``          ``BatchNormalization``                  train form
``subsample``       ``MaxPooling2D(pool_size=1, strides=2)`` train form, stride-2 blocks
``conv_1x1``        ``Conv2D(c, 1, use_bias=False)``        train form
``bn_1x1``          ``BatchNormalization``                  train form
``bn_identity``     ``BatchNormalization``                  train form, stride 1 and in == out
``add``             ``Add``                                 train form
``reparam_conv``    ``Conv2D(c, 3, use_bias=True)``         deploy form
``se_pool``         ``GlobalAveragePooling2D(keepdims)``    SE (D2se)
``se_down``         ``Conv2D(c // 16, 1, "relu")``          SE
``se_up``           ``Conv2D(c, 1, "sigmoid")``             SE
``se_gate``         ``Multiply``                            SE
``relu``            ``ReLU``                                every block: the block's output
==================  ======================================  ========================================

Below output stride 32 (:meth:`VariantSpec.layers`) a dilated block's 3x3 convs carry
``dilation_rate`` d and run ``same`` at stride 1: Keras then pads d on every side, which is
PyTorch's ``padding=d``. The 1x1 branch and the identity are not dilated (a 1x1 has no taps to
spread), so the fused kernel is the same and only its dilation follows.

A feature-maps model (``feature_maps``) ends at the deepest map asked for and outputs each map's
``relu``. After the last block: ``pool`` (``GlobalAveragePooling2D``, the feature vector) and, with a head,
``head`` (``Dense``, the logits). With ``include_preprocessing`` the first layer is ``normalize``
(``Normalization`` with the ImageNet mean and ``variance = std**2``): the model then takes RGB in
[0, 1], the contract of every artifact, instead of normalised images. Every ``groups`` > 1 is on
the convs of the grouped blocks.

The numerics follow PyTorch (REFERENCE section 2):

* stride-2 blocks pad 1 pixel on every side explicitly and run the 3x3 ``valid``; stride-1 blocks
  run it ``same`` (1 on every side for a 3x3). TF's ``same`` at stride 2 would pad only
  bottom/right and make the branches disagree.
* the 1x1 branch runs on the unpadded input. At stride 2 it is ``MaxPooling2D(1, strides=2)`` (which
  keeps pixel ``2i``, exactly what a stride-2 1x1 conv samples) then a stride-1 1x1 conv: the
  same values, and it avoids the gradient of a stride-2 1x1 ``Conv2D``, which corrupts the heap
  under oneDNN on the CPU (REFERENCE section 8).
* BatchNorm uses PyTorch's eps 1e-5 and momentum 0.1 (Keras ``momentum=0.9``).
* SE pools with a global mean (any input shape) and gates with two 1x1 convs, not ``Dense`` on a
  4-D tensor (a rank-4 matmul corrupts the heap under oneDNN, tensorflow/tensorflow#117700).

Random initialisation is variance-preserving (see :func:`branch_gammas`): He-normal conv kernels,
BN gamma 1/sqrt(2) on the two conv branches and 0 on the identity branch (so the sum of the
branches keeps unit variance in training mode, and the inference-mode scale stays put over any
depth), SE blocks compensated for the gate's initial 0.5, and a small normal head (std 0.01), so a
random network's features and logits stay O(1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from keras import initializers, layers

from .table import IMAGENET_MEAN, IMAGENET_STD, LayerPlan, VariantSpec

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
#: Separator between a block's name and its part's name.
SEP = "."
POOL = "pool"
HEAD = "head"
#: The optional first layer: ImageNet normalisation, so the model takes RGB in [0, 1].
NORMALIZE = "normalize"
#: Standard deviation of the random head's kernel.
HEAD_INIT_STD = 0.01

TRAIN_PARTS = ("pad", "conv_kxk", "bn_kxk", "subsample", "conv_1x1", "bn_1x1", "bn_identity", "add")
DEPLOY_PARTS = ("pad", "reparam_conv")
SE_PARTS = ("se_pool", "se_down", "se_up", "se_gate")
OUTPUT_PART = "relu"


def layer_name(block: str, part: str) -> str:
    """``layer_name("stage1_block0", "bn_kxk")`` -> ``"stage1_block0.bn_kxk"``."""
    return f"{block}{SEP}{part}"


@dataclass(frozen=True)
class LayerDef:
    """One layer of the graph: how to make it, what feeds it, and the shapes of its weights.

    ``inputs`` names the layers whose outputs feed it, in order; ``None`` is the model's input.
    """

    name: str
    make: Callable[[], layers.Layer] = field(repr=False)
    inputs: tuple[str | None, ...]
    shapes: tuple[tuple[int, ...], ...] = ()


def _bn(name: str, channels: int, inputs: str | None, gamma: float) -> LayerDef:
    def make():
        return layers.BatchNormalization(
            epsilon=BN_EPSILON,
            momentum=BN_MOMENTUM,
            gamma_initializer=initializers.Constant(gamma),
            name=name,
        )

    return LayerDef(name, make, (inputs,), ((channels,),) * 4)


def _conv(
    name: str,
    inputs: str | None,
    cin: int,
    cout: int,
    kernel: int,
    *,
    strides: int = 1,
    padding: str = "valid",
    dilation: int = 1,
    groups: int = 1,
    use_bias: bool = False,
    activation: str | None = None,
    init_scale: float = 2.0,
    init_std: float | None = None,
) -> LayerDef:
    """``init_scale``: variance scale of the (fan-in, truncated normal) kernel init, 2 = He-normal;
    ``init_std``: a plain normal with that std instead."""

    def kernel_init():
        if init_std is not None:
            return initializers.RandomNormal(stddev=init_std)
        if init_scale == 2.0:
            return initializers.HeNormal()
        return initializers.VarianceScaling(init_scale, mode="fan_in", distribution="truncated_normal")

    def make():
        return layers.Conv2D(
            cout,
            kernel,
            strides=strides,
            padding=padding,
            dilation_rate=dilation,
            groups=groups,
            use_bias=use_bias,
            activation=activation,
            kernel_initializer=kernel_init(),
            name=name,
        )

    shapes = ((kernel, kernel, cin // groups, cout),) + (((cout,),) if use_bias else ())
    return LayerDef(name, make, (inputs,), shapes)


def _simple(name: str, inputs: tuple[str | None, ...], make: Callable[[], layers.Layer]) -> LayerDef:
    return LayerDef(name, make, inputs)


#: Initial gamma of the identity branch's BN: zero ("zero-gamma" residual init, as timm's
#: ``zero_init_last``); see :func:`branch_gammas`.
IDENTITY_GAMMA = 0.0
#: 1 / sigmoid(0): an SE gate starts at 0.5 (``se_up`` starts near zero), so its block's gains double.
SE_GAIN = 2.0
SE_UP_INIT_STD = 0.01


def branch_gammas(plan: LayerPlan) -> tuple[float, float]:
    """Initial BN gammas (each conv branch, the identity branch) of a random block.

    In training mode each BN outputs unit variance, so the sum of the branches has variance
    ``2 * conv**2 + identity**2`` = 1 (conv = 1/sqrt(2)). In inference mode with fresh statistics
    a BN is ``gamma * x``: the He-normal conv branches then keep a ReLU network's scale (as the
    deploy form does), while an identity branch passes its post-ReLU, positive input on and that
    drift compounds block after block (at gamma 1/sqrt(3) the features of B3 grew 10x, of D2se
    1e7x; at 0.1 still 7x for D2se), so it starts at zero and learns its gamma from there. In SE
    blocks both double, for the gate's 0.5.
    """
    gain = SE_GAIN if plan.se_channels else 1.0
    identity = IDENTITY_GAMMA if plan.has_identity else 0.0
    return gain * math.sqrt((1 - identity**2) / 2), gain * identity


def block_layers(plan: LayerPlan, form: str, block_input: str | None) -> list[LayerDef]:
    """The layers of one block in ``form``, fed by the layer named ``block_input`` (None: the model input)."""
    p, c, g, s = plan.name, plan.out_channels, plan.groups, plan.stride

    def n(part):
        return layer_name(p, part)

    defs: list[LayerDef] = []
    padded, padding = block_input, "same"
    if s == 2:
        defs.append(_simple(n("pad"), (block_input,), lambda: layers.ZeroPadding2D(1, name=n("pad"))))
        padded, padding = n("pad"), "valid"

    if form == "deploy":
        # He-normal, times the SE gain for the gate's 0.5 (see branch_gammas)
        gain = SE_GAIN if plan.se_channels else 1.0
        conv = _conv(
            n("reparam_conv"),
            padded,
            plan.in_channels,
            c,
            3,
            strides=s,
            padding=padding,
            dilation=plan.dilation,
            groups=g,
            use_bias=True,
            init_scale=2.0 * gain**2,
        )
        defs.append(conv)
        last = conv.name
    else:
        gamma, identity_gamma = branch_gammas(plan)
        kxk = _conv(
            n("conv_kxk"), padded, plan.in_channels, c, 3, strides=s, padding=padding, dilation=plan.dilation, groups=g
        )
        defs += [kxk, _bn(n("bn_kxk"), c, kxk.name, gamma)]
        one_in = block_input
        if s == 2:
            defs.append(
                _simple(
                    n("subsample"),
                    (block_input,),
                    lambda: layers.MaxPooling2D(pool_size=1, strides=2, padding="valid", name=n("subsample")),
                )
            )
            one_in = n("subsample")
        one = _conv(n("conv_1x1"), one_in, plan.in_channels, c, 1, groups=g)
        defs += [one, _bn(n("bn_1x1"), c, one.name, gamma)]
        summed = [n("bn_kxk"), n("bn_1x1")]
        if plan.has_identity:
            defs.append(_bn(n("bn_identity"), c, block_input, identity_gamma))
            summed.append(n("bn_identity"))
        defs.append(_simple(n("add"), tuple(summed), lambda: layers.Add(name=n("add"))))
        last = n("add")
    if plan.se_channels:
        r = plan.se_channels
        defs += [
            _simple(n("se_pool"), (last,), lambda: layers.GlobalAveragePooling2D(keepdims=True, name=n("se_pool"))),
            _conv(n("se_down"), n("se_pool"), c, r, 1, use_bias=True, activation="relu"),
            _conv(n("se_up"), n("se_down"), r, c, 1, use_bias=True, activation="sigmoid", init_std=SE_UP_INIT_STD),
            _simple(n("se_gate"), (last, n("se_up")), lambda: layers.Multiply(name=n("se_gate"))),
        ]
        last = n("se_gate")
    defs.append(_simple(n(OUTPUT_PART), (last,), lambda: layers.ReLU(name=n(OUTPUT_PART))))
    return defs


def normalize_layer() -> LayerDef:
    """``Normalization`` with the ImageNet statistics as constants (no weights, nothing to adapt)."""

    def make():
        return layers.Normalization(
            mean=list(IMAGENET_MEAN), variance=[s * s for s in IMAGENET_STD], axis=-1, name=NORMALIZE
        )

    return LayerDef(NORMALIZE, make, (None,))


def model_layers(
    spec: VariantSpec,
    form: str,
    *,
    include_top: bool,
    num_classes: int,
    include_preprocessing: bool = False,
    feature_maps: tuple[str, ...] = (),
    output_stride: int = 32,
) -> list[LayerDef]:
    """Every layer of ``spec`` in ``form``, in the order the builder creates them. With
    ``feature_maps`` (keys of :meth:`VariantSpec.feature_levels`) the network stops at the deepest
    of those maps: no pool, no head (its outputs are :func:`feature_map_layers`)."""
    defs: list[LayerDef] = [normalize_layer()] if include_preprocessing else []
    previous: str | None = NORMALIZE if include_preprocessing else None
    for plan in spec.layers(output_stride, feature_maps=feature_maps):
        defs += block_layers(plan, form, previous)
        previous = layer_name(plan.name, OUTPUT_PART)
    if feature_maps:
        return defs
    defs.append(_simple(POOL, (previous,), lambda: layers.GlobalAveragePooling2D(name=POOL)))
    if include_top:

        def head():
            return layers.Dense(
                num_classes,
                kernel_initializer=initializers.RandomNormal(stddev=HEAD_INIT_STD),
                name=HEAD,
            )

        defs.append(LayerDef(HEAD, head, (POOL,), ((spec.num_features, num_classes), (num_classes,))))
    return defs


def feature_map_layers(spec: VariantSpec, feature_maps: tuple[str, ...], output_stride: int = 32) -> dict[str, str]:
    """``{key: layer name}`` of the feature maps asked for: each is a block's ``relu`` (after SE)."""
    return {
        level.key: layer_name(level.block, OUTPUT_PART)
        for level in spec.feature_levels(output_stride)
        if level.key in feature_maps
    }
