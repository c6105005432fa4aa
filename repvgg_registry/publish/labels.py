"""The class names a classification artifact ships in ``assets/``: ImageNet-1k's (no background
class, with WordNet ids) for a 1000-class head, or the user's ``--labels`` file, one per line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import LabelsError

NUM_IMAGENET_CLASSES = 1000


def imagenet_classes() -> list[tuple[str, str]]:
    """(WordNet id, short name) for class 0..999, in timm's / torchvision's order."""
    text = resources.files(__package__).joinpath("imagenet1k_classes.tsv").read_text(encoding="utf-8")
    rows = [tuple(line.split("\t", 1)) for line in text.splitlines() if line]
    assert len(rows) == NUM_IMAGENET_CLASSES
    return rows  # type: ignore[return-value]


IMAGENET = "imagenet-1k"


@dataclass(frozen=True)
class ClassNames:
    """``labels[i]`` names logit ``i``; ``synsets`` only for ImageNet-1k; ``source`` is
    ``imagenet-1k`` or the labels file's name (for metadata and cards)."""

    labels: tuple[str, ...]
    source: str
    synsets: tuple[str, ...] | None = None

    def files(self) -> dict[str, str]:
        """``{file name in assets/: text}``."""
        out = {"labels.txt": "".join(f"{name}\n" for name in self.labels)}
        if self.synsets is not None:
            out["synsets.txt"] = "".join(f"{wnid}\n" for wnid in self.synsets)
        return out


def read_labels_file(path: str | os.PathLike) -> list[str]:
    """The labels of a UTF-8 file, one per line (a final newline and CRLF line ends are fine). A
    missing, non-UTF-8 or empty file, or a blank line, raises LabelsError naming it."""
    path = Path(path).expanduser()
    fix = "write one class name per line, in the order of the classifier's outputs"
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise LabelsError(path, "does not exist", "pass --labels PATH to an existing file") from None
    except IsADirectoryError:
        raise LabelsError(path, "is a folder", "pass --labels PATH to a text file") from None
    except UnicodeDecodeError as exc:
        raise LabelsError(
            path, f"is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})", fix
        ) from None
    except OSError as exc:
        raise LabelsError(path, f"cannot be read ({exc.strerror})", "fix its permissions") from None
    text = text.removeprefix("\ufeff")
    lines = text.splitlines()
    if not lines or not text.strip():
        raise LabelsError(path, "is empty", fix)
    blank = next((i for i, line in enumerate(lines, 1) if not line.strip()), None)
    if blank is not None:
        raise LabelsError(path, f"has an empty line {blank}", fix)
    return [line.strip() for line in lines]


def class_names(num_classes: int, labels: str | os.PathLike | None = None) -> ClassNames:
    """The names of a ``num_classes`` head: the ``labels`` file's (whose line count must match) or,
    without one, ImageNet-1k's for a 1000-class head; any other head without labels is refused."""
    if labels is None:
        if num_classes != NUM_IMAGENET_CLASSES:
            raise LabelsError(
                None,
                f"the classifier has {num_classes} outputs, not ImageNet-1k's {NUM_IMAGENET_CLASSES}, and no labels",
                f"pass --labels FILE with {num_classes} lines, one class name per line",
            )
        rows = imagenet_classes()
        return ClassNames(tuple(name for _, name in rows), IMAGENET, tuple(wnid for wnid, _ in rows))
    names = read_labels_file(labels)
    if len(names) != num_classes:
        raise LabelsError(
            labels,
            f"has {len(names)} labels but the classifier has {num_classes} outputs",
            f"give it exactly {num_classes} lines, one per class, in output order",
        )
    return ClassNames(tuple(names), Path(labels).name)
