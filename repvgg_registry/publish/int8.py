"""Full-integer int8 LiteRT models on request (``--int8-calibration DIR``), with what they cost.

Post-training quantization needs images like the ones the model will see: a folder of JPEG/PNG
files, resized the way the card's preprocessing says (short side to ``resize_to``, centre crop to
the default size, RGB in [0, 1]). A quarter of them (at least :data:`MIN_HELD_OUT`) are held out of
calibration and used to measure the int8 model against the fp32 one: mean cosine similarity of
the outputs and, for a classifier, top-1 agreement. No bound is imposed (int8 never matches fp32 to
1e-5); the figures go into ``metadata.json`` and the card, with the warning that plain RepVGG is
known to lose accuracy under int8 PTQ (QARepVGG, arXiv 2212.01593: A0 72.4 -> 52.2 top-1).

The input and output stay float32 (the converter adds the quantize / dequantize ops), so the
contract is the fp32 model's: ``images`` in [0, 1], outputs named like the SavedModel's.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError, first_line

if TYPE_CHECKING:  # numpy only where images are read: the CLI imports this module to check a folder
    import numpy as np

#: A calibration folder needs at least this many images (PTQ on fewer gives unstable ranges).
MIN_IMAGES = 32
MIN_HELD_OUT = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
QUANTIZATION_WARNING = (
    "Plain RepVGG is known to lose accuracy under int8 post-training quantization (QARepVGG, "
    "arXiv 2212.01593, reports A0 72.4 -> 52.2 top-1 on ImageNet); these figures are only as good as "
    "the calibration images they were measured on."
)


def calibration_files(folder: str | os.PathLike) -> list[Path]:
    """The JPEG/PNG files of ``folder`` (sorted, so the split is reproducible), or a one-line
    :class:`UsageError` if it is not a folder or has fewer than :data:`MIN_IMAGES`."""
    path = Path(folder).expanduser()
    option = "--int8-calibration"
    if not path.is_dir():
        raise UsageError(option, str(folder), "not a folder; pass a folder of JPEG or PNG images")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < MIN_IMAGES:
        raise UsageError(
            option,
            str(folder),
            f"has {len(files)} JPEG/PNG images; int8 calibration needs at least {MIN_IMAGES}",
        )
    return files


def load_images(files: list[Path], size: int, resize_to: int) -> np.ndarray:
    """Each file decoded, its short side resized to ``resize_to`` (bilinear), centre-cropped to
    ``size`` x ``size``, RGB float32 in [0, 1]: ``[len(files), size, size, 3]``. An unreadable file
    is a one-line :class:`UsageError` naming it."""
    import numpy as np
    import tensorflow as tf

    out = np.empty((len(files), size, size, 3), np.float32)
    for i, path in enumerate(files):
        try:
            image = tf.io.decode_image(path.read_bytes(), channels=3, expand_animations=False)
        except (OSError, tf.errors.OpError, ValueError) as exc:
            reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", first_line(exc)).rstrip(".")
            raise UsageError(
                "--int8-calibration", str(path), f"not a readable JPEG or PNG image ({reason}); remove it"
            ) from None
        height, width = int(image.shape[0]), int(image.shape[1])
        scale = resize_to / min(height, width)
        resized = tf.image.resize(
            tf.image.convert_image_dtype(image, tf.float32),
            (max(size, round(height * scale)), max(size, round(width * scale))),
            antialias=True,
        )
        out[i] = tf.image.resize_with_crop_or_pad(resized, size, size).numpy().clip(0.0, 1.0)
    return out


def split(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, held out): every fourth image is held out, at least :data:`MIN_HELD_OUT`."""
    import numpy as np

    held = np.zeros(len(images), bool)
    held[::4] = True
    missing = MIN_HELD_OUT - int(held.sum())
    if missing > 0:
        held[np.flatnonzero(~held)[-missing:]] = True
    return images[~held], images[held]


def write_int8(folder: Path, target: Path, calibration: np.ndarray) -> None:
    """``target``: full-integer int8 LiteRT model of the SavedModel in ``folder``, float input and
    output kept, calibrated one image at a time on ``calibration``."""
    import tensorflow as tf

    from .deploy import conversion_failed, quiet_stderr

    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=["serving_default"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

    def representative():
        for image in calibration:
            yield {"images": image[None]}

    converter.representative_dataset = representative
    try:
        # the calibrator runs tf.lite.Interpreter, which warns; the quantizer logs its settings to fd 2
        with warnings.catch_warnings(), quiet_stderr():
            warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
            target.write_bytes(converter.convert())
    except Exception as exc:
        target.unlink(missing_ok=True)
        raise conversion_failed(target, "int8 LiteRT", exc) from None


def agreement(fp32: dict[str, np.ndarray], int8: dict[str, np.ndarray], *, classifier: bool) -> dict:
    """How the int8 outputs agree with the fp32 ones on the held-out images: the mean (over
    images and outputs) cosine similarity of each image's output, and for a classifier the share
    of images whose top-1 class is the same."""
    import numpy as np

    cosines = []
    for key, reference in fp32.items():
        a = reference.reshape(len(reference), -1).astype(np.float64)
        b = int8[key].reshape(len(reference), -1).astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosines.append(np.sum(a * b, axis=1) / np.maximum(norms, 1e-30))
    record = {"mean_cosine": round(float(np.mean(cosines)), 6), "images": int(len(next(iter(fp32.values()))))}
    if classifier:
        (key,) = fp32
        record["top1_agreement"] = round(float(np.mean(fp32[key].argmax(-1) == int8[key].argmax(-1))), 6)
    return record
