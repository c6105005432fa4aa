"""Loading checkpoints into RepVGG graphs (any model :func:`graph.describe_model` recognises).

A train-form checkpoint loads into a train-form model branch by branch, or into a deploy-form
model through the same float64 fusion that :func:`fuse` uses. A deploy-form checkpoint loads
straight into a deploy-form model. Layouts: conv OIHW -> Keras HWIO is ``transpose(2, 3, 1, 0)``
(also right for grouped kernels); linear ``[out, in]`` -> Dense ``[in, out]`` is a transpose.

A ``.keras`` file (one of ours, or one a user trained from ours) is a source too: it is opened in
safe mode (no code in it runs), recognised from its graph, checked for NaN/Inf, and copied layer by
layer into a model of the same variant, head and form (a train-form file fills a deploy-form model
through :func:`fuse`).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import keras
import numpy as np

from ..errors import NotARepVGGError, first_line
from ..hashing import sha256_file
from .blocks import BN_EPSILON, HEAD, layer_name
from .checkpoints import (
    Checkpoint,
    CheckpointFacts,
    WeightsError,
    block_prefix,
    existing_file,
    resolve,
    validate,
)
from .folding import BatchNormStats, fuse_branches
from .fusion import fuse
from .graph import ModelDescription, build_graph, describe_model
from .table import LayerPlan, VariantSpec

__all__ = [
    "KERAS_SUFFIX",
    "LoadedWeights",
    "WeightsError",
    "inspect_keras",
    "load_checkpoint",
    "load_weights",
    "WeightsSource",
    "model_from_weights",
    "read_keras_model",
]

KERAS_SUFFIX = ".keras"


@dataclass(frozen=True)
class LoadedWeights:
    """What was loaded, for provenance in artifacts and for ``inspect-weights``."""

    source: str
    path: str
    scheme: str
    form: str
    sha256: str
    tensors: int


def _hwio(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (2, 3, 1, 0))


def _bn(ckpt: Checkpoint, prefix: str) -> list[np.ndarray]:
    t = ckpt.tensors
    return [t[f"{prefix}.weight"], t[f"{prefix}.bias"], t[f"{prefix}.running_mean"], t[f"{prefix}.running_var"]]


def _bn_stats(ckpt: Checkpoint, prefix: str, eps: float) -> BatchNormStats:
    gamma, beta, mean, var = (np.asarray(a, dtype=np.float64) for a in _bn(ckpt, prefix))
    return BatchNormStats(gamma, beta, mean, var, eps)


def _block_assignments(ckpt: Checkpoint, plan: LayerPlan, form: str) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weights for one block of a model in ``form``."""
    t, prefix = ckpt.tensors, block_prefix(plan)

    def n(part):
        return layer_name(plan.name, part)

    out: dict[str, list[np.ndarray]] = {}
    if form == "train":
        out[n("conv_kxk")] = [_hwio(t[f"{prefix}.conv_kxk.conv.weight"])]
        out[n("bn_kxk")] = _bn(ckpt, f"{prefix}.conv_kxk.bn")
        out[n("conv_1x1")] = [_hwio(t[f"{prefix}.conv_1x1.conv.weight"])]
        out[n("bn_1x1")] = _bn(ckpt, f"{prefix}.conv_1x1.bn")
        if plan.has_identity:
            out[n("bn_identity")] = _bn(ckpt, f"{prefix}.identity")
    else:
        if ckpt.form == "deploy":
            kernel, bias = _hwio(t[f"{prefix}.reparam_conv.weight"]), t[f"{prefix}.reparam_conv.bias"]
        else:
            identity = _bn_stats(ckpt, f"{prefix}.identity", BN_EPSILON) if plan.has_identity else None
            kernel, bias = fuse_branches(
                _hwio(t[f"{prefix}.conv_kxk.conv.weight"]),
                _bn_stats(ckpt, f"{prefix}.conv_kxk.bn", BN_EPSILON),
                _hwio(t[f"{prefix}.conv_1x1.conv.weight"]),
                _bn_stats(ckpt, f"{prefix}.conv_1x1.bn", BN_EPSILON),
                identity,
                plan.groups,
            )
        out[n("reparam_conv")] = [np.asarray(kernel, np.float32), np.asarray(bias, np.float32)]
    if plan.se_channels:
        # PyTorch's 1x1 conv [out, in, 1, 1] -> Keras' 1x1 Conv2D [1, 1, in, out].
        out[n("se_down")] = [_hwio(t[f"{prefix}.attn.fc1.weight"]), t[f"{prefix}.attn.fc1.bias"]]
        out[n("se_up")] = [_hwio(t[f"{prefix}.attn.fc2.weight"]), t[f"{prefix}.attn.fc2.bias"]]
    return out


def load_checkpoint(model: keras.Model, ckpt: Checkpoint, description: ModelDescription | None = None) -> None:
    """Assign a checkpoint to a RepVGG graph (``description``: its ``describe_model``), after
    validating it: nothing is assigned unless everything fits."""
    description = description or describe_model(model)
    spec, form, include_top, num_classes = description[:4]
    if ckpt.form == "deploy" and form == "train":
        raise WeightsError(
            f"{ckpt.source} is a deploy-form (fused) checkpoint; it cannot fill the train form's branches: "
            "build the model with form='deploy'"
        )
    validate(ckpt, spec, include_top=include_top, num_classes=num_classes)
    assignments: dict[str, list[np.ndarray]] = {}
    for plan in description.plans():
        assignments.update(_block_assignments(ckpt, plan, form))
    if include_top:
        assignments[HEAD] = [ckpt.tensors["head.fc.weight"].T, ckpt.tensors["head.fc.bias"]]
    for name, weights in assignments.items():
        model.get_layer(name).set_weights([np.asarray(w, np.float32) for w in weights])


def read_keras_model(path: str | os.PathLike) -> keras.Model:
    """A ``.keras`` file as a RepVGG graph: loaded with ``keras.saving.load_model`` in safe mode,
    recognised by :func:`describe_model`, every weight finite. Anything else is one WeightsError
    naming the file (a truncated file, another kind of model, NaN weights)."""
    path = existing_file(path)
    if not zipfile.is_zipfile(path):  # Keras itself would say "File not found" for a truncated zip
        raise WeightsError(
            f"{path} is not a complete .keras file (not a readable zip archive: truncated?); "
            "save it again with model.save(...) or download it again"
        )
    try:
        model = keras.saving.load_model(path)
    except Exception as exc:  # a truncated zip, a foreign config, code refused by safe mode: all unreadable
        raise WeightsError(
            f"{path} cannot be opened as a .keras file ({type(exc).__name__}: {first_line(exc)}); "
            "it may be truncated: save it again with model.save(...)"
        ) from None
    try:
        describe_model(model)
    except NotARepVGGError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    for layer in model.layers:
        for weight in layer.weights:
            if not np.all(np.isfinite(keras.ops.convert_to_numpy(weight))):
                raise WeightsError(
                    f"{path}: weight {layer.name}/{weight.name} has NaN or Inf values; "
                    "a diverged training run? save a model from before it diverged"
                )
    return model


def inspect_keras(path: str | os.PathLike) -> CheckpointFacts:
    """``inspect-weights`` for a ``.keras`` file: what :func:`read_keras_model` recognises in it."""
    model = read_keras_model(path)
    spec, form, include_top, num_classes = describe_model(model)[:4]
    return CheckpointFacts(
        path=str(path),
        sha256=sha256_file(path),
        scheme="keras",
        form=form,
        variant=spec.name,
        tensors=sum(len(layer.weights) for layer in model.layers),
        parameters=int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        num_classes=num_classes if include_top else None,
    )


def load_keras_weights(
    model: keras.Model, source: str | os.PathLike, *, loaded: keras.Model | None = None
) -> LoadedWeights:
    """Copy the weights of a ``.keras`` RepVGG of the same variant and head into ``model``; a
    train-form file fills a deploy-form model through :func:`fuse`. Nothing is assigned unless it
    fits. ``loaded``: the file's model, if :func:`read_keras_model` already opened it."""
    loaded = loaded if loaded is not None else read_keras_model(source)
    have, want = describe_model(loaded), describe_model(model)
    if have.spec != want.spec:
        raise WeightsError(
            f"{source} holds {have.spec.display_name}, not {want.spec.display_name}; "
            f"pass a .keras file of {want.spec.display_name} or choose the variant {have.spec.name}"
        )
    if (have.include_top, have.num_classes) != (want.include_top, want.num_classes):

        def head(d: ModelDescription) -> str:
            return f"a {d.num_classes}-class head" if d.include_top else "no head"

        raise WeightsError(f"{source} has {head(have)}, the model has {head(want)}")
    if have.form == "deploy" and want.form == "train":
        raise WeightsError(
            f"{source} is a deploy-form (fused) model; it cannot fill the train form's branches: "
            "build the model with form='deploy'"
        )
    if have.form == "train" and want.form == "deploy":
        loaded = fuse(loaded)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(loaded.get_layer(layer.name).get_weights())
    return LoadedWeights(
        source=str(source),
        path=str(source),
        scheme="keras",
        form=have.form,
        sha256=sha256_file(source),
        tensors=sum(len(layer.weights) for layer in loaded.layers),
    )


def load_weights(model: keras.Model, source: str | os.PathLike) -> LoadedWeights:
    """Load ``"timm"``, a checkpoint path (.safetensors, .pth, .pt, .bin) or a ``.keras`` file
    into ``model``.

    Scheme (official or timm) and form (train or deploy) are detected; anything that does not fit
    exactly raises :class:`WeightsError` before a single weight is assigned.
    """
    if str(source).lower().endswith(KERAS_SUFFIX):
        return load_keras_weights(model, source)
    description = describe_model(model)
    ckpt = resolve(source, description.spec)
    load_checkpoint(model, ckpt, description)
    return _provenance(source, ckpt)


def _provenance(source: str | os.PathLike, ckpt: Checkpoint) -> LoadedWeights:
    return LoadedWeights(
        source=str(source),
        path=ckpt.source,
        scheme=ckpt.scheme,
        form=ckpt.form,
        sha256=sha256_file(ckpt.source),
        tensors=len(ckpt.tensors),
    )


def _head_of(ckpt: Checkpoint) -> int | None:
    head = ckpt.tensors.get("head.fc.weight")
    return int(head.shape[0]) if head is not None else None


@dataclass
class WeightsSource:
    """A weights source opened once (a checkpoint read, a ``.keras`` loaded), with the form and the
    head it holds: a deploy-form checkpoint or ``.keras`` gives the deploy form (there is no train
    form to rebuild), a 10-class classifier gives 10 logits. ``random``: the train form with the
    variant's head. A source without a classifier head is refused: every release has a
    classification artifact."""

    spec: VariantSpec
    source: str | None
    form: str
    num_classes: int
    _checkpoint: Checkpoint | None = None
    _keras_model: keras.Model | None = None

    @classmethod
    def open(cls, spec: VariantSpec, source: str | os.PathLike | None) -> WeightsSource:
        if source in (None, "random"):
            return cls(spec, None, "train", spec.num_classes)
        if str(source).lower().endswith(KERAS_SUFFIX):
            loaded = read_keras_model(source)
            have = describe_model(loaded)
            found = cls(spec, str(source), have.form, have.num_classes or 0, _keras_model=loaded)
            classes = have.num_classes if have.include_top else None
        else:
            ckpt = resolve(source, spec)
            classes = _head_of(ckpt)
            found = cls(spec, str(source), ckpt.form, classes or 0, _checkpoint=ckpt)
        if classes is None:
            raise WeightsError(
                f"{source} has no classifier head; a release needs one for its classification artifact: "
                "save the model with its head (any number of classes)"
            )
        return found

    def build(
        self, *, include_preprocessing: bool = False, output_stride: int = 32, name: str | None = None
    ) -> keras.Model:
        """An empty graph of this source's variant, form and head (at ``output_stride``: the same
        weights, the last stages dilated)."""
        return build_graph(
            self.spec,
            self.form,
            num_classes=self.num_classes,
            include_preprocessing=include_preprocessing,
            output_stride=output_stride,
            name=name,
        )

    def fill(self, model: keras.Model) -> LoadedWeights | None:
        """Load the source into ``model`` (None for random weights, which it already has)."""
        if self._keras_model is not None:
            return load_keras_weights(model, self.source, loaded=self._keras_model)
        if self._checkpoint is not None:
            load_checkpoint(model, self._checkpoint)
            return _provenance(self.source, self._checkpoint)
        return None


def model_from_weights(
    spec: VariantSpec, source: str | os.PathLike | None, *, include_preprocessing: bool = False, name: str | None = None
) -> tuple[keras.Model, LoadedWeights | None]:
    """The model a weights source holds (its form, its head), filled with it: see :class:`WeightsSource`."""
    opened = WeightsSource.open(spec, source)
    model = opened.build(include_preprocessing=include_preprocessing, name=name)
    return model, opened.fill(model)
