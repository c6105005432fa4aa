"""Stand-ins for the ``.keras`` files of a staged release, for hub tests that move, serve and
checksum files but never load a model (tests that load one build a real release)."""

from __future__ import annotations

from pathlib import Path

from repvgg_registry.publish.release import staged_files
from repvgg_registry.publish.tasks import KERAS_TASKS


def add_keras_stubs(release: Path, tag: object = "", payload: bytes = b"") -> None:
    """Write ``<task>.keras`` for every task of ``release``: distinct bytes per task and tag."""
    for task in KERAS_TASKS:
        staged_files(release, task).keras.write_bytes(f"keras stand-in {tag} {task}\n".encode() + payload)
