"""The parts of a model card every hosted hub's card shares (the Hugging Face repo card, the Kaggle
model description): the title, the custom-model section, the sha256 rows, the class names of a
staged release."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from ..publish.card import custom_model_text, is_custom, markdown_text
from ..publish.labels import IMAGENET, NUM_IMAGENET_CLASSES
from ..publish.release import CONVERTED_ROLES
from ..publish.tasks import RELEASE_TASKS, SERVING_TASKS, TASKS
from .hub import variant_named

_SHA256 = re.compile(r"[0-9a-f]{64}")


def staged_labels(staged: Path) -> tuple[str, ...]:
    """The class names of a staged release (``classification/assets/labels.txt``, one a line), for
    the card of a custom model; () when the file is missing or unreadable (the card then names none)."""
    try:
        text = (staged / "classification" / "assets" / "labels.txt").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ()
    return tuple(line for line in text.splitlines() if line.strip())


def markdown_digest(value: object) -> str:
    """A sha256 as code, anything else (or nothing) as inert text."""
    if value is None or value == "":
        return "-"
    text = str(value)
    return f"`{text}`" if _SHA256.fullmatch(text) else markdown_text(text)


def digest_rows(manifests: dict[str, dict]) -> str:
    """The card's sha256 rows: the ``.keras`` files first (the Keras 3 route), then the
    TF Hub archives, the LiteRT and ONNX files and the serving SavedModels' archives, each as its
    manifest records it."""

    def row(record: dict) -> str:
        return f"| {record['name']} sha256 | {markdown_digest(record['sha256'])} |"

    present = [task for task in RELEASE_TASKS if task in manifests]
    rows = [row(manifests[task]["keras"]) for task in present if "keras" in manifests[task]]
    rows += [row(manifests[task]["archive"]) for task in present if task in TASKS]
    rows += [row(manifests[task][role]) for role in CONVERTED_ROLES for task in present if role in manifests[task]]
    rows += [row(manifests[task]["archive"]) for task in present if task in SERVING_TASKS]
    return "\n".join(rows)


def base_variant_of(model: str, manifest: dict) -> str:
    """The table's variant a release is built on: its manifest's ``variant`` (every staged manifest
    has one), else the variant whose own name ``model`` is, else ``?`` (unknown, so never taken for
    the variant's own release)."""
    return manifest.get("variant") or variant_named(model) or "?"


def imagenet_head(output: dict) -> bool:
    """Whether a classification output is ImageNet-1k's head (1000 classes named by ImageNet-1k)."""
    return (
        output.get("labels_source", IMAGENET) == IMAGENET
        and output.get("num_classes", NUM_IMAGENET_CLASSES) == NUM_IMAGENET_CLASSES
    )


def card_meta(model: str, manifests: dict[str, dict]) -> dict:
    """The classification manifest in the shape :func:`is_custom` and :func:`custom_model_text`
    read (``name``, ``variant``, ``base_variant``), so the repo card and the SavedModel cards share
    one rule for what a custom model is and one wording of what it is."""
    manifest = manifests["classification"]
    base = base_variant_of(model, manifest)
    return {**manifest, "name": model, "variant": base, "base_variant": base, "output": manifest.get("output") or {}}


def model_title(model: str, manifests: dict[str, dict], text: Callable[[object], str] = str) -> str:
    """``RepVGG-A0`` for a variant's own release, ``digits (RepVGG-A0)`` for a custom model; ``text``
    renders the names (:func:`markdown_text` on the card, where the brackets stay plain)."""
    meta = card_meta(model, manifests)
    base = f"RepVGG-{text(meta['base_variant'])}"
    return f"{text(model)} ({base})" if is_custom(meta) else base


def custom_section(meta: dict, labels: Sequence[str]) -> str:
    """ "What this model is" for a custom model (:func:`is_custom`), else nothing."""
    if not is_custom(meta):
        return ""
    return f"\n## What this model is\n\n{custom_model_text(meta, tuple(labels))}"
