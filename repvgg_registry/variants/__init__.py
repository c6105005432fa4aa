"""RepVGG variants: the declarative table, Keras builders, fusion and weight import.

The table is importable without TensorFlow; the Keras parts load on first use so that
``repvgg-registry list`` stays fast. Inside, dependencies run one way: ``table`` -> ``folding``
(float64 maths) -> ``blocks`` (the layers, declared) -> ``graph`` (build and recognise a model)
-> ``fusion`` (fuse a model) and ``weights`` (load a checkpoint) -> ``builder`` -> ``equivalence``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .complexity import count_macs, count_params, summary
from .table import VARIANTS, LayerPlan, UnknownVariantError, VariantSpec, get_variant, variant_names

_LAZY = {
    "build_model": ".builder",
    "build_graph": ".graph",
    "describe_model": ".graph",
    "feature_maps_of": ".graph",
    "is_repvgg_graph": ".graph",
    "ModelDescription": ".graph",
    "NotARepVGGError": ".graph",
    "fuse": ".fusion",
    "reparameterize_model": ".fusion",
    "randomize_batchnorm": ".equivalence",
    "check_fusion": ".equivalence",
    "FusionCheck": ".equivalence",
    "load_weights": ".weights",
}

__all__ = [
    "VARIANTS",
    "LayerPlan",
    "UnknownVariantError",
    "VariantSpec",
    "count_macs",
    "count_params",
    "get_variant",
    "summary",
    "variant_names",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
