"""RepVGG graphs of Keras' own layers: build one from the table, or recognise one.

Nothing private rides on a model: :func:`describe_model` reads the variant, the form, the head and
its number of classes from the graph itself (layer names, classes, structural config, weight
shapes and wiring, checked against :func:`blocks.model_layers`), so a model that was saved to
``.keras``, reloaded without this package, fine-tuned and reloaded again is recognised like one
fresh from :func:`build_graph`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import keras

from .. import errors
from ..errors import NotARepVGGError
from .blocks import HEAD, NORMALIZE, POOL, LayerDef, feature_map_layers, layer_name, model_layers
from .table import VARIANTS, LayerPlan, VariantSpec, check_feature_keys, check_output_stride, get_variant

FORMS = ("train", "deploy")

# Config keys that do not change what a layer computes from its weights (or that fusion reads from
# the layer itself, like BatchNorm's epsilon).
_FREE_KEYS = {"name", "trainable", "dtype", "epsilon", "momentum", "activity_regularizer"}
_FREE_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# Layers whose inputs commute.
_COMMUTATIVE = (keras.layers.Add, keras.layers.Multiply)


class ModelDescription(NamedTuple):
    """What a RepVGG graph is: its variant, form, head, and for a feature-maps model the keys of
    its maps; read the fields by name."""

    spec: VariantSpec
    form: str
    include_top: bool
    num_classes: int | None  # None without a head
    feature_maps: tuple[str, ...] = ()  # the keys of its maps; () for a pooled or classifying model
    output_stride: int = 32

    def plans(self) -> list[LayerPlan]:
        """The blocks the model holds (a feature-maps model stops at its deepest map)."""
        return self.spec.layers(self.output_stride, feature_maps=self.feature_maps)


def build_graph(
    spec: VariantSpec | str,
    form: str = "train",
    *,
    include_top: bool = True,
    num_classes: int | None = None,
    input_shape: tuple = (None, None, 3),
    include_preprocessing: bool = False,
    feature_maps: bool | Sequence[str] = False,
    output_stride: int = 32,
    name: str | None = None,
) -> keras.Model:
    """The functional model of ``spec`` in ``form``, randomly initialised (see :mod:`.blocks`).

    With ``include_preprocessing`` the first layer normalises RGB in [0, 1] with the ImageNet
    statistics (layer ``normalize``), as every published artifact does; without it the model takes
    normalised images, as timm's and the official checkpoints' networks do.

    ``feature_maps=True`` gives a backbone for dense prediction (timm's ``features_only``): no pool
    and no head, the output a dict ``{"stride_2": ..., "stride_32": ...}`` of the stem's and each
    stage's output (NHWC); a list of those keys keeps only them. ``output_stride`` 16 or 8 runs the
    last stage, or the last two, at stride 1 with dilation, as timm's ``output_stride`` does."""
    spec = get_variant(spec)
    output_stride = check_output_stride(output_stride)
    keys = check_feature_keys(feature_maps) if feature_maps is not False else ()
    if form not in FORMS:
        raise errors.UsageError("form", form, "must be 'train' or 'deploy'")
    classes = spec.num_classes if num_classes is None else num_classes
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise errors.UsageError("num_classes", classes, "must be a positive integer")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] not in (None, 3):
        raise errors.UsageError("input_shape", input_shape, "must be (height, width, 3); height and width may be None")
    input_shape = (*input_shape[:2], 3)

    inputs = keras.Input(shape=input_shape, name="images")
    tensors = {None: inputs}
    defs = model_layers(
        spec,
        form,
        include_top=include_top,
        num_classes=classes,
        include_preprocessing=include_preprocessing,
        feature_maps=keys,
        output_stride=output_stride,
    )
    for d in defs:
        args = [tensors[i] for i in d.inputs]
        tensors[d.name] = d.make()(args if len(args) > 1 else args[0])
    outputs = (
        {key: tensors[layer] for key, layer in feature_map_layers(spec, keys, output_stride).items()}
        if keys
        else tensors[d.name]
    )
    return keras.Model(inputs, outputs, name=name or f"repvgg_{spec.hub_name}_{form}")


def _plain(value):
    """Config values as JSON would give them back (tuples -> lists), for comparison."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _structure(layer: keras.layers.Layer) -> dict:
    config = layer.get_config()
    return {
        k: _plain(v)
        for k, v in config.items()
        if k not in _FREE_KEYS and not k.endswith(_FREE_SUFFIXES) and not (k == "units" and layer.name == HEAD)
    }


def _source(tensor) -> str | None:
    """Name of the layer that produced ``tensor``; None for a model input."""
    operation = tensor._keras_history.operation
    return None if isinstance(operation, keras.layers.InputLayer) else operation.name


def _inputs_of(layer: keras.layers.Layer) -> list[str | None]:
    return [_source(t) for t in keras.tree.flatten(layer.input)]


def _show(names) -> str:
    return "[" + ", ".join("the model input" if n is None else repr(n) for n in names) + "]"


def _first_misfit(
    model: keras.Model, by_name: dict, defs: list[LayerDef], outputs: list[str]
) -> tuple[int, str | None, str | None]:
    """(index in ``defs`` of the first layer that ``model`` does not match, the problem, that layer's name)."""
    for index, d in enumerate(defs):
        layer = by_name.get(d.name)
        if layer is None:
            return index, f"it has no layer '{d.name}'", d.name
        expected = d.make()
        if type(layer) is not type(expected):
            return index, f"layer '{d.name}' is a {type(layer).__name__}, expected {type(expected).__name__}", d.name
        have, want = _structure(layer), _structure(expected)
        for key in sorted(set(have) | set(want)):
            if have.get(key) != want.get(key):
                return index, f"layer '{d.name}' has {key}={have.get(key)!r}, expected {want.get(key)!r}", d.name
        shapes = [tuple(int(s) for s in w.shape) for w in layer.weights]
        if shapes != [tuple(s) for s in d.shapes]:
            return index, f"layer '{d.name}' has weight shapes {shapes}, expected {list(d.shapes)}", d.name
        try:
            sources = _inputs_of(layer)
        except (AttributeError, ValueError) as exc:
            return index, f"layer '{d.name}' has no single input node ({errors.first_line(exc)})", d.name
        wanted = list(d.inputs)
        if isinstance(layer, _COMMUTATIVE):
            sources, wanted = sorted(sources, key=str), sorted(wanted, key=str)
        if sources != wanted:
            return index, f"layer '{d.name}' takes {_show(sources)}, expected {_show(wanted)}", d.name
    names = {d.name for d in defs}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.InputLayer) and layer.name not in names:
            return len(defs), f"layer '{layer.name}' is not part of the graph", layer.name
    have = sorted(_source(t) for t in model.outputs)
    if have != sorted(outputs):
        return len(defs), f"its outputs come from {_show(have)}, expected {_show(sorted(outputs))}", None
    if len(model.inputs) != 1:
        return len(defs), f"it has {len(model.inputs)} inputs, expected 1", None
    return len(defs), None, None


def describe_model(model: keras.Model) -> ModelDescription:
    """Recognise a RepVGG graph: which variant of the table, which form, head or not, how many classes.

    Raises :data:`NotARepVGGError` (a ValueError), one line naming the first layer that does not
    fit the closest variant, for anything else.
    """
    label = f"model {getattr(model, 'name', type(model).__name__)!r}"
    if not isinstance(model, keras.Model):
        raise NotARepVGGError(f"{label} is not a Keras model but a {type(model).__name__}")
    by_name = {layer.name: layer for layer in model.layers}
    if layer_name("stem", "conv_kxk") in by_name:
        form = "train"
    elif layer_name("stem", "reparam_conv") in by_name:
        form = "deploy"
    else:
        first = next((la.name for la in model.layers if not isinstance(la, keras.layers.InputLayer)), None)
        found = f"its first layer is {first!r}" if first else "it has no layers"
        raise NotARepVGGError(
            f"{label} is not a RepVGG graph: {found}, not 'stem.conv_kxk' (train form) or 'stem.reparam_conv' "
            "(deploy form); build it with repvgg_registry.variants.build_model",
            layer=first,
        )
    head = by_name.get(HEAD)
    include_top = head is not None
    num_classes = int(head.units) if isinstance(head, keras.layers.Dense) else None
    output_stride = _output_stride(by_name)
    best: tuple[int, VariantSpec, str, str | None] | None = None
    for spec in VARIANTS:
        keys = _feature_keys(model, spec, output_stride) if POOL not in by_name else ()
        defs = model_layers(
            spec,
            form,
            include_top=include_top,
            num_classes=num_classes or spec.num_classes,
            include_preprocessing=NORMALIZE in by_name,
            feature_maps=keys,
            output_stride=output_stride,
        )
        outputs = list(feature_map_layers(spec, keys, output_stride).values()) if keys else [defs[-1].name]
        index, problem, culprit = _first_misfit(model, by_name, defs, outputs)
        if problem is None:
            return ModelDescription(spec, form, include_top, num_classes, keys, output_stride)
        if best is None or index > best[0]:
            best = (index, spec, problem, culprit)
    _, spec, problem, culprit = best
    raise NotARepVGGError(
        f"{label} is not a RepVGG graph: {problem} (closest: {spec.display_name}, {form} form)", layer=culprit
    )


def _output_stride(by_name: dict) -> int:
    """Read from the graph: a stage that strides pads first (``stageN_block0.pad``). A feature-maps
    model that stops before a stage cannot tell its stride: 32, the plain network, for it."""
    stages = {name.split("_block")[0] for name in by_name if name.startswith("stage")}

    def strides(stage: int) -> bool:
        return f"stage{stage}" not in stages or layer_name(f"stage{stage}_block0", "pad") in by_name

    if strides(3) and strides(4):
        return 32
    return 16 if strides(3) else 8


def _feature_keys(model: keras.Model, spec: VariantSpec, output_stride: int) -> tuple[str, ...]:
    """The feature-map keys whose layers a model without ``pool`` outputs (all five if it outputs
    none of them, so that the mismatch is reported against the full backbone)."""
    by_layer = {layer: key for key, layer in feature_map_layers(spec, check_feature_keys(True), output_stride).items()}
    outputs = {_source(t) for t in model.outputs}
    keys = tuple(key for layer, key in by_layer.items() if layer in outputs)
    return keys or check_feature_keys(True)


def feature_maps_of(
    model: keras.Model, feature_maps: bool | Sequence[str] = True, *, name: str | None = None
) -> keras.Model:
    """The feature maps of a RepVGG graph (a classifier, a pooled backbone, either form) as a model
    that shares its layers and weights: the output is ``{"stride_2": ..., "stride_32": ...}`` (or
    the keys asked for), like ``build_graph(..., feature_maps=...)``. Training one trains the other."""
    info = describe_model(model)
    keys = check_feature_keys(feature_maps)
    missing = [k for k in keys if info.feature_maps and k not in info.feature_maps]
    if missing:
        raise errors.UsageError("feature_maps", list(keys), f"the model has no map {missing[0]!r}")
    layers = feature_map_layers(info.spec, keys, info.output_stride)
    outputs = {key: model.get_layer(layer).output for key, layer in layers.items()}
    return keras.Model(model.inputs[0], outputs, name=name or f"{model.name}_feature_maps")


def has_preprocessing(model: keras.Model) -> bool:
    """Whether a RepVGG graph starts with the ``normalize`` layer (takes RGB in [0, 1]); not part
    of :class:`ModelDescription`, whose four fields callers unpack."""
    return any(layer.name == NORMALIZE for layer in model.layers)


def is_repvgg_graph(model) -> bool:
    """Whether :func:`describe_model` recognises ``model``."""
    try:
        describe_model(model)
    except NotARepVGGError:
        return False
    return True


__all__ = [
    "FORMS",
    "ModelDescription",
    "NotARepVGGError",
    "build_graph",
    "describe_model",
    "feature_maps_of",
    "has_preprocessing",
    "is_repvgg_graph",
]
