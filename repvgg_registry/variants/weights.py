"""Loading checkpoints into Keras RepVGG models.

A train-form checkpoint loads into a train-form model branch by branch, or into a deploy-form
model through the same float64 fusion that :func:`fuse` uses. A deploy-form checkpoint loads
straight into a deploy-form model. Layouts: conv OIHW -> Keras HWIO is ``transpose(2, 3, 1, 0)``
(also right for grouped kernels); linear ``[out, in]`` -> Dense ``[in, out]`` is a transpose.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import keras
import numpy as np

from ..hashing import sha256_file
from .blocks import BN_EPSILON, RepVGGBlock, RepVGGDeployBlock, SqueezeExcite
from .builder import build_info
from .checkpoints import Checkpoint, WeightsError, block_prefix, resolve, validate
from .fusion import BatchNormStats, fuse_branches

__all__ = ["LoadedWeights", "WeightsError", "load_weights"]


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


def _load_se(se: SqueezeExcite, ckpt: Checkpoint, prefix: str) -> None:
    t = ckpt.tensors
    se.down.set_weights([t[f"{prefix}.attn.fc1.weight"][:, :, 0, 0].T, t[f"{prefix}.attn.fc1.bias"]])
    se.up.set_weights([t[f"{prefix}.attn.fc2.weight"][:, :, 0, 0].T, t[f"{prefix}.attn.fc2.bias"]])


def _load_train_block(block: RepVGGBlock, ckpt: Checkpoint, prefix: str) -> None:
    t = ckpt.tensors
    block.conv_kxk.set_weights([_hwio(t[f"{prefix}.conv_kxk.conv.weight"])])
    block.bn_kxk.set_weights(_bn(ckpt, f"{prefix}.conv_kxk.bn"))
    block.conv_1x1.set_weights([_hwio(t[f"{prefix}.conv_1x1.conv.weight"])])
    block.bn_1x1.set_weights(_bn(ckpt, f"{prefix}.conv_1x1.bn"))
    if block.bn_identity is not None:
        block.bn_identity.set_weights(_bn(ckpt, f"{prefix}.identity"))


def _load_deploy_block(block: RepVGGDeployBlock, ckpt: Checkpoint, prefix: str, eps: float) -> None:
    t = ckpt.tensors
    if ckpt.form == "deploy":
        kernel, bias = _hwio(t[f"{prefix}.reparam_conv.weight"]), t[f"{prefix}.reparam_conv.bias"]
    else:
        identity = _bn_stats(ckpt, f"{prefix}.identity", eps) if f"{prefix}.identity.weight" in t else None
        kernel, bias = fuse_branches(
            _hwio(t[f"{prefix}.conv_kxk.conv.weight"]),
            _bn_stats(ckpt, f"{prefix}.conv_kxk.bn", eps),
            _hwio(t[f"{prefix}.conv_1x1.conv.weight"]),
            _bn_stats(ckpt, f"{prefix}.conv_1x1.bn", eps),
            identity,
            block.groups,
        )
    block.reparam_conv.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])


def load_checkpoint(model: keras.Model, ckpt: Checkpoint) -> None:
    """Assign a validated checkpoint to a model made by ``build_model``."""
    info = build_info(model)
    if ckpt.form == "deploy" and info.form == "train":
        raise WeightsError(
            f"{ckpt.source} is a deploy-form (fused) checkpoint; it cannot fill the train form's branches: "
            "build the model with form='deploy'"
        )
    validate(ckpt, info.spec, include_top=info.include_top, num_classes=info.num_classes)
    for plan in info.spec.layers():
        block = model.get_layer(plan.name)
        prefix = block_prefix(plan)
        if isinstance(block, RepVGGBlock):
            _load_train_block(block, ckpt, prefix)
        else:
            _load_deploy_block(block, ckpt, prefix, BN_EPSILON)
        if block.se is not None:
            _load_se(block.se, ckpt, prefix)
    if info.include_top:
        model.get_layer("head").set_weights([ckpt.tensors["head.fc.weight"].T, ckpt.tensors["head.fc.bias"]])


def load_weights(model: keras.Model, source: str | os.PathLike) -> LoadedWeights:
    """Load ``"timm"`` or a checkpoint path (.safetensors, .pth, .pt, .bin) into ``model``.

    Scheme (official or timm) and form (train or deploy) are detected; anything that does not fit
    exactly raises :class:`WeightsError` before a single weight is assigned.
    """
    info = build_info(model)
    ckpt = resolve(source, info.spec)
    load_checkpoint(model, ckpt)
    return LoadedWeights(
        source=str(source),
        path=ckpt.source,
        scheme=ckpt.scheme,
        form=ckpt.form,
        sha256=sha256_file(ckpt.source),
        tensors=len(ckpt.tensors),
    )
