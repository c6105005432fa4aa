"""One builder for every variant and both forms (the way timm's ``byobnet`` builds from configs).

The graph itself (Keras' own layers only, named ``<block>.<part>``) is declared in :mod:`.blocks`
and wired in :mod:`.graph`; this adds the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from .graph import FORMS, ModelDescription, NotARepVGGError, build_graph, describe_model
from .table import VariantSpec
from .weights import load_weights

__all__ = ["FORMS", "ModelDescription", "NotARepVGGError", "build_model", "describe_model"]


def build_model(
    spec: VariantSpec | str,
    form: str = "train",
    *,
    include_top: bool = True,
    num_classes: int | None = None,
    input_shape: tuple = (None, None, 3),
    weights: str | None = None,
    include_preprocessing: bool = False,
    feature_maps: bool | Sequence[str] = False,
    output_stride: int = 32,
    name: str | None = None,
) -> keras.Model:
    """Build a RepVGG variant as a Keras 3 functional model of Keras' own layers.

    ``form="train"`` gives the multi-branch network (what checkpoints hold and what you fine-tune);
    ``form="deploy"`` the single-3x3-conv network that :func:`fuse` fills. The input is the
    normalised image (ImageNet mean/std), any height and width by default; with
    ``include_preprocessing=True`` it is RGB in [0, 1] and a ``Normalization`` layer comes first. With
    ``include_top=False`` the output is the globally pooled feature vector (layer ``pool``). With
    ``feature_maps=True`` it is a dict of the five feature maps, ``stride_2`` .. ``stride_32``, for
    detection and segmentation necks (a list of keys keeps only those), and ``output_stride`` 16 or
    8 dilates the last stages as timm's ``output_stride`` does (see ``build_graph``).
    ``weights`` is ``None``/``"random"`` (variance-preserving random initialisation: features and
    logits stay O(1)), ``"timm"`` or a checkpoint path (see ``load_weights``).
    """
    model = build_graph(
        spec,
        form,
        include_top=include_top,
        num_classes=num_classes,
        input_shape=input_shape,
        include_preprocessing=include_preprocessing,
        feature_maps=feature_maps,
        output_stride=output_stride,
        name=name,
    )
    if weights not in (None, "random"):
        load_weights(model, weights)
    return model
