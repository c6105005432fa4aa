"""Proof that the deploy form computes what the train form computes.

Used by the CLI's ``check-fusion``, by ``build`` before it writes an artifact, and by the tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np

from ..errors import NotARepVGGError
from .blocks import OUTPUT_PART, layer_name
from .fusion import fuse
from .graph import describe_model
from .table import VariantSpec, get_variant
from .weights import WeightsError, model_from_weights

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


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, *, rtol: float = RTOL) -> tuple[float, float, float]:
    """(max abs diff, max abs reference value, tolerance ``rtol * max(1, max abs reference)``) of
    two output arrays; the default is the fusion bound."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    max_ref = float(np.max(np.abs(reference)))
    diff = float(np.max(np.abs(reference - candidate)))
    return diff, max_ref, rtol * max(1.0, max_ref)


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
        train_model, _ = model_from_weights(spec, weights)  # the head the weights have
        if describe_model(train_model).form != "train":
            raise WeightsError(f"{weights} is a deploy-form (fused) source: there is no train form to fuse and check")
        if weights in (None, "random"):
            randomize_batchnorm(train_model, seed, images=images)
    deploy_model = fuse(train_model)
    reference = keras.ops.convert_to_numpy(train_model(images, training=False))
    candidate = keras.ops.convert_to_numpy(deploy_model(images, training=False))
    diff, max_ref, tol = compare_outputs(reference, candidate)
    return FusionCheck(spec.name, height, width, batch, str(weights or "random"), diff, max_ref, tol)


#: Calibration sees at least as many pixels as two 64x64 images (the default check) ...
MIN_CALIBRATION_PIXELS = 2 * 64 * 64
#: ... and, where the stage-3 maps (stride 16, most of the blocks) are a single pixel, this many
#: images: there every 3x3 conv sees only its centre and the network is a deep per-pixel MLP.
MIN_CALIBRATION_IMAGES_1PX = 128
MAX_CALIBRATION_IMAGES = 1024


def _stride16(size: int) -> int:
    for _ in range(4):
        size = (size - 1) // 2 + 1
    return size


def calibration_images(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``images``, topped up with random images of their size (see the constants above).

    On two tiny images the deepest maps are 1x1, and a variance over two values per channel makes
    the calibrated network degenerate: check-fusion reported a false mismatch at 8x8, 16x16 and
    3x1 although every fused block matched to 1e-6. Batches of two 64x64 images or more are used
    as they are.
    """
    batch, height, width = images.shape[:3]
    if batch * height * width >= MIN_CALIBRATION_PIXELS:
        return images
    wanted = -(-MIN_CALIBRATION_PIXELS // (height * width))
    if _stride16(height) == 1 or _stride16(width) == 1:
        wanted = max(wanted, MIN_CALIBRATION_IMAGES_1PX)
    wanted = min(wanted, MAX_CALIBRATION_IMAGES)
    if batch >= wanted:
        return images
    extra = rng.standard_normal((wanted - batch, height, width, images.shape[3])).astype(images.dtype)
    return np.concatenate([images, extra])


def randomize_batchnorm(
    model: keras.Model, seed: int = 0, *, images: np.ndarray | None = None, calibration_size: int = 64
) -> None:
    """Give every BatchNorm of a train-form RepVGG graph non-trivial statistics (gamma, beta,
    running mean and variance).

    With fresh BN (gamma 1, mean 0, var 1) a broken fusion can still look right. Purely random
    running statistics, on the other hand, make a deep random network chaotic: dead channels
    normalised by a near-zero variance amplify float32 rounding block after block (D2se's logits
    reach 1e7 and train and deploy forms then disagree by rounding alone). So, block by block in
    forward order, each BN's running mean and variance are set from its actual input on
    ``images`` (the batch you will compare on, topped up with random images of its size when it is
    too small for well-posed statistics, see :func:`calibration_images`; random 64x64 noise by
    default), the variance floored at the layer's mean variance, then perturbed (mean by up to 0.1
    std, variance by 0.8-1.2x) before the next block sees them. A random D2se is only
    well-conditioned on the batch it was calibrated on. Gamma is 0.8-1.2 on the identity branch
    and 0.05-0.2 on the conv branches, like a trained residual network, and beta is random: every
    term of the fold matters while a block's gain stays near 1.
    """
    info = describe_model(model)
    if info.form != "train":
        raise NotARepVGGError(f"randomize_batchnorm() takes a train-form model; {model.name!r} is in deploy form")
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.standard_normal((4, calibration_size, calibration_size, 3)).astype(np.float32)
    else:
        images = calibration_images(np.asarray(images, np.float32), rng)

    def calibrate(bn: keras.layers.BatchNormalization, inputs, gamma_range: tuple[float, float]) -> None:
        values = np.asarray(keras.ops.convert_to_numpy(inputs), dtype=np.float64)
        mean = values.mean(axis=(0, 1, 2))
        var = values.var(axis=(0, 1, 2))
        var = np.maximum(var, var.mean() + 1e-6)
        n = mean.shape[0]
        mean = mean + rng.uniform(-0.1, 0.1, n) * np.sqrt(var)
        var = var * rng.uniform(0.8, 1.2, n)
        bn.set_weights(
            [
                rng.uniform(*gamma_range, n).astype(np.float32),
                rng.normal(0.0, 0.2, n).astype(np.float32),
                mean.astype(np.float32),
                var.astype(np.float32),
            ]
        )

    x = keras.ops.convert_to_tensor(images)
    block_input = model.inputs[0]
    for plan in info.plans():

        def get(part, plan=plan):
            return model.get_layer(layer_name(plan.name, part))

        output = get(OUTPUT_PART).output
        probe = keras.Model(block_input, [get("conv_kxk").output, get("conv_1x1").output, output])
        kxk, one, _ = probe(x, training=False)
        calibrate(get("bn_kxk"), kxk, (0.05, 0.2))
        calibrate(get("bn_1x1"), one, (0.05, 0.2))
        if plan.has_identity:
            calibrate(get("bn_identity"), x, (0.8, 1.2))
        x = probe(x, training=False)[2]
        block_input = output
