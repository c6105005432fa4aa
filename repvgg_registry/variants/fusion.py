"""Structural re-parameterization of a Keras model: fold a train-form RepVGG into its deploy form.

Works on any model that :func:`graph.describe_model` recognises (one from ``build_model``, or one
loaded from a ``.keras`` file after training): everything it needs is in the graph. The maths is
in :mod:`.folding` (float64, cast once).
"""

from __future__ import annotations

import keras
import numpy as np

from ..errors import NotARepVGGError
from .blocks import HEAD, layer_name
from .folding import BatchNormStats, fuse_branches, identity_kernel, pad_1x1_to_3x3
from .graph import build_graph, describe_model, has_preprocessing, is_repvgg_graph
from .table import LayerPlan

__all__ = [
    "BatchNormStats",
    "fuse",
    "fuse_block",
    "fuse_branches",
    "identity_kernel",
    "pad_1x1_to_3x3",
    "reparameterize_model",
]

_SE_PARTS = ("se_down", "se_up")


def fuse_block(model: keras.Model, plan: LayerPlan) -> tuple[np.ndarray, np.ndarray]:
    """Fused float64 (kernel, bias) of one block of a train-form model."""

    def get(part):
        return model.get_layer(layer_name(plan.name, part))

    identity = BatchNormStats.from_layer(get("bn_identity")) if plan.has_identity else None
    return fuse_branches(
        keras.ops.convert_to_numpy(get("conv_kxk").kernel),
        BatchNormStats.from_layer(get("bn_kxk")),
        keras.ops.convert_to_numpy(get("conv_1x1").kernel),
        BatchNormStats.from_layer(get("bn_1x1")),
        identity,
        plan.groups,
    )


def fuse(train_model: keras.Model, *, name: str | None = None) -> keras.Model:
    """The deploy-form twin of a train-form model: same input shape, same head (or none), the
    same outputs in inference mode (the same feature maps, at the same output stride), one biased
    3x3 conv per block (and the ``normalize`` layer first if the train form has it)."""
    info = describe_model(train_model)
    if info.form != "train":
        raise NotARepVGGError(f"fuse() takes a train-form model; {train_model.name!r} is already in deploy form")
    include_top = info.include_top
    deploy = build_graph(
        info.spec,
        "deploy",
        include_top=include_top,
        num_classes=info.num_classes,
        input_shape=tuple(train_model.inputs[0].shape[1:]),
        include_preprocessing=has_preprocessing(train_model),
        feature_maps=info.feature_maps or False,
        output_stride=info.output_stride,
        name=name,
    )
    for plan in info.plans():
        kernel, bias = fuse_block(train_model, plan)
        # float64 in, cast once by Keras to the model's own dtype (float32, or float64 for a
        # float64 model, whose fused kernel then carries no float32 rounding)
        deploy.get_layer(layer_name(plan.name, "reparam_conv")).set_weights([kernel, bias])
        if plan.se_channels:
            for part in _SE_PARTS:
                name_ = layer_name(plan.name, part)
                deploy.get_layer(name_).set_weights(train_model.get_layer(name_).get_weights())
    if include_top:
        deploy.get_layer(HEAD).set_weights(train_model.get_layer(HEAD).get_weights())
    return deploy


def reparameterize_model(model: keras.Model) -> keras.Model:
    """Like timm's ``reparameterize_model``: the model with every RepVGG train graph it is or
    holds fused, the rest unchanged (weights copied).

    A train-form RepVGG graph gives :func:`fuse`; a deploy-form one comes back as it is; a model
    holding RepVGG graphs as layers (e.g. ``keras.Sequential([backbone, Dense(5)])``) is cloned
    with each of them fused in place (keeping its layer name). Anything else raises.
    """
    if is_repvgg_graph(model):
        return fuse(model) if describe_model(model).form == "train" else model
    fused: dict[str, keras.Model] = {}

    def clone(layer):
        if isinstance(layer, keras.Model) and is_repvgg_graph(layer):
            if describe_model(layer).form == "train":
                fused[layer.name] = fuse(layer, name=layer.name)
                return fused[layer.name]
            return layer
        return layer.__class__.from_config(layer.get_config())

    if not any(isinstance(la, keras.Model) and is_repvgg_graph(la) for la in model.layers):
        describe_model(model)  # raises, naming the first layer that does not fit
    new = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name not in fused and layer.weights:
            target = new.get_layer(layer.name)
            if target is not layer:
                target.set_weights(layer.get_weights())
    return new
