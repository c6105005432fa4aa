"""Proof that the deploy form computes what the train form computes.

Used by the CLI's ``check-fusion``, by ``build`` before it writes an artifact, and by the tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np

from .builder import build_model
from .fusion import fuse, randomize_batchnorm
from .table import VariantSpec, get_variant

#: Relative bound: max |train - deploy| <= RTOL * max(1, max |logit|).
RTOL = 1e-4


@dataclass(frozen=True)
class FusionCheck:
    variant: str
    height: int
    width: int
    batch: int
    weights: str
    max_abs_diff: float
    max_abs_logit: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float, float]:
    """(max abs diff, max abs reference value, tolerance) of two output arrays."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    max_ref = float(np.max(np.abs(reference)))
    diff = float(np.max(np.abs(reference - candidate)))
    return diff, max_ref, RTOL * max(1.0, max_ref)


def sample_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A reproducible batch of normalised-looking NHWC float32 images."""
    return np.random.default_rng(seed).standard_normal((batch, height, width, 3)).astype(np.float32)


def check_fusion(
    variant: VariantSpec | str,
    height: int = 64,
    width: int | None = None,
    *,
    batch: int = 2,
    weights: str | None = None,
    seed: int = 0,
    train_model: keras.Model | None = None,
) -> FusionCheck:
    """Build the train form (random weights and BN statistics unless ``weights`` is given),
    fuse it, and compare logits in inference mode on a ``height`` x ``width`` batch."""
    spec = get_variant(variant)
    width = height if width is None else width
    images = sample_images(batch, height, width, seed)
    if train_model is None:
        keras.utils.set_random_seed(seed)
        train_model = build_model(spec, "train", weights=weights)
        if weights in (None, "random"):
            randomize_batchnorm(train_model, seed, images=images)
    deploy_model = fuse(train_model)
    reference = keras.ops.convert_to_numpy(train_model(images, training=False))
    candidate = keras.ops.convert_to_numpy(deploy_model(images, training=False))
    diff, max_ref, tol = compare_outputs(reference, candidate)
    return FusionCheck(spec.name, height, width, batch, str(weights or "random"), diff, max_ref, tol)
