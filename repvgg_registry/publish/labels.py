"""ImageNet-1k class names shipped with the classification artifact (no background class)."""

from __future__ import annotations

from importlib import resources

NUM_IMAGENET_CLASSES = 1000


def imagenet_classes() -> list[tuple[str, str]]:
    """(WordNet id, short name) for class 0..999, in timm's / torchvision's order."""
    text = resources.files(__package__).joinpath("imagenet1k_classes.tsv").read_text(encoding="utf-8")
    rows = [tuple(line.split("\t", 1)) for line in text.splitlines() if line]
    assert len(rows) == NUM_IMAGENET_CLASSES
    return rows  # type: ignore[return-value]


def labels_text() -> str:
    """``labels.txt``: line i is the name of class i."""
    return "".join(f"{name}\n" for _, name in imagenet_classes())


def synsets_text() -> str:
    """``synsets.txt``: line i is the WordNet id of class i."""
    return "".join(f"{wnid}\n" for wnid, _ in imagenet_classes())
