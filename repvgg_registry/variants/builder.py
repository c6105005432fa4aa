"""One builder for every variant and both forms (the way timm's ``byobnet`` builds from configs)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import keras
from keras import layers

from .blocks import RepVGGBlock, RepVGGDeployBlock
from .table import VariantSpec, get_variant

FORMS = ("train", "deploy")


@dataclass(frozen=True)
class BuildInfo:
    """How a model was built; kept on the model so that fusion can build its twin."""

    spec: VariantSpec
    form: str
    include_top: bool
    num_classes: int
    input_shape: tuple

    def with_form(self, form: str) -> BuildInfo:
        return replace(self, form=form)


def build_info(model: keras.Model) -> BuildInfo:
    """The :class:`BuildInfo` of a model made by :func:`build_model`."""
    info = getattr(model, "_repvgg_build_info", None)
    if info is None:
        raise ValueError(f"model {model.name!r} was not built by repvgg_registry.build_model")
    return info


def build_model(
    spec: VariantSpec | str,
    form: str = "train",
    *,
    include_top: bool = True,
    num_classes: int | None = None,
    input_shape: tuple = (None, None, 3),
    weights: str | None = None,
    name: str | None = None,
) -> keras.Model:
    """Build a RepVGG variant as a Keras 3 functional model.

    ``form="train"`` gives the multi-branch network (what checkpoints hold and what you fine-tune);
    ``form="deploy"`` the single-3x3-conv network that :func:`fuse` fills. The input is the
    normalised image (ImageNet mean/std), any height and width by default. With
    ``include_top=False`` the output is the globally pooled feature vector.
    ``weights`` is ``None``/``"random"``, ``"timm"`` or a checkpoint path (see ``load_weights``).
    """
    spec = get_variant(spec)
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, not {form!r}")
    classes = spec.num_classes if num_classes is None else int(num_classes)
    block_cls = RepVGGBlock if form == "train" else RepVGGDeployBlock

    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for plan in spec.layers():
        x = block_cls(
            plan.in_channels,
            plan.out_channels,
            stride=plan.stride,
            groups=plan.groups,
            se_channels=plan.se_channels,
            name=plan.name,
        )(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if include_top:
        x = layers.Dense(classes, name="head")(x)
    model = keras.Model(inputs, x, name=name or f"repvgg_{spec.hub_name}_{form}")
    model._repvgg_build_info = BuildInfo(spec, form, include_top, classes, tuple(input_shape))

    if weights not in (None, "random"):
        from .weights import load_weights

        load_weights(model, weights)
    return model
