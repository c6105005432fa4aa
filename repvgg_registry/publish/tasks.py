"""The tasks of a release and their outputs (no TensorFlow here).

``TASKS`` are the three TF Hub image tasks, each a SavedModel folder (with its archive) and the
same fused network as a ``.keras`` file: ``feature_vector`` (pooled), ``classification`` (logits)
and ``feature_maps`` (the five multi-scale maps a detection or segmentation neck takes); beside
them the deployment files a build converted from the SavedModel (``.tflite``, ``.onnx``).
``train`` is the multi-branch train form with its head, shipped only as ``train.keras`` (what you
fine-tune before fusing). ``SERVING_TASKS`` (``classification-serving``...) are the inference-only
SavedModels of the three, weights as constants, for TF Serving. ``RELEASE_TASKS`` are all of them:
the handles one published version can have.
"""

from __future__ import annotations

import math

from ..variants.table import FEATURE_KEYS

FEATURE_MAPS = "feature_maps"
TASKS = ("feature_vector", "classification", FEATURE_MAPS)
TRAIN = "train"
#: ``<task>-serving``: the inference-only SavedModel of a task (publish/deploy.py's ``serving`` format).
SERVING_SUFFIX = "-serving"


def serving_task(task: str) -> str:
    """The inference-only task of ``task``: ``classification-serving`` for ``classification``; its
    folder in a build and its handle's task in a hub (the one owner of that naming)."""
    return f"{task}{SERVING_SUFFIX}"


SERVING_TASKS = tuple(serving_task(task) for task in TASKS)
#: The tasks with a ``.keras`` file: the fused three and the train form.
KERAS_TASKS = (*TASKS, TRAIN)
RELEASE_TASKS = (*KERAS_TASKS, *SERVING_TASKS)
#: Tasks an older version may lack, and why: it was published before they existed (or, for
#: ``train``, from a deploy-form source). Reading such a version is no error; its handle is absent.
ABSENT_IN_OLDER_VERSIONS: dict[str, str] = {
    FEATURE_MAPS: "published before feature maps existed",
    TRAIN: "published before .keras files or from a deploy-form source",
    **dict.fromkeys(SERVING_TASKS, "published before serving SavedModels or built without the serving format"),
}
#: The keys of each task's ``serving_default`` outputs (and of its ``__call__`` dict for feature_maps).
OUTPUT_KEYS: dict[str, tuple[str, ...]] = {
    "feature_vector": ("feature_vector",),
    "classification": ("logits",),
    FEATURE_MAPS: FEATURE_KEYS,
}
OUTPUT_KEYS.update({serving_task(task): OUTPUT_KEYS[task] for task in TASKS})


def base_task(task: str) -> str:
    """The task whose network ``task`` holds: ``classification`` for ``classification-serving``."""
    return task.removesuffix(SERVING_SUFFIX)


def is_serving(task: str) -> bool:
    """Whether ``task`` is an inference-only SavedModel (no ``.keras``, no deployment files)."""
    return task in SERVING_TASKS


def has_savedmodel(task: str) -> bool:
    """Whether ``task`` ships a SavedModel folder and its archive (``train`` does not)."""
    return task in TASKS or task in SERVING_TASKS


def describe_output(output: dict) -> str:
    """``logits [batch, 1000]``, ``feature_vector [batch, 1280]`` or ``feature_maps
    stride_2..stride_32 [batch, h/s, w/s, 48..1280]`` from metadata.json's ``output``: how pages, cards and the CLI
    show an output, instead of a Python dict."""
    maps = output.get("maps")
    if maps:
        channels = f"{maps[0]['channels']}..{maps[-1]['channels']}"
        return f"{output.get('name', '?')} {maps[0]['key']}..{maps[-1]['key']} [batch, h/s, w/s, {channels}]"
    width = output.get("num_classes", output.get("num_features", "?"))
    return f"{output.get('name', '?')} [batch, {width}]"


def output_width(output: dict) -> int | None:
    """The last dimension of a vector output (logits, feature vector) from metadata.json's (or a
    manifest's) ``output``; feature maps have one per map (:func:`output_shapes`)."""
    return output.get("num_classes") or output.get("num_features")


def output_shapes(output: dict, height: int, width: int, batch: int = 1) -> dict[str, tuple[int, ...]]:
    """``{output key: shape}`` that metadata.json's ``output`` promises for a ``height`` x ``width``
    batch: a stride-s map is ``ceil(height / s)`` high (each stride-2 block pads 1 and runs a 3x3)."""
    maps = output.get("maps")
    if maps:
        return {
            m["key"]: (batch, math.ceil(height / m["stride"]), math.ceil(width / m["stride"]), m["channels"])
            for m in maps
        }
    return {output.get("name", "?"): (batch, output_width(output))}
