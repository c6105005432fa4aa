"""Stand-ins for the ``.keras`` files of a staged release, for hub tests that move, serve and
checksum files but never load a model (tests that load one build a real release)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from repvgg_registry.publish.release import stage_release, staged_files
from repvgg_registry.publish.tasks import KERAS_TASKS, TASKS


def add_keras_stubs(release: Path, tag: object = "", payload: bytes = b"") -> None:
    """Write ``<task>.keras`` for every task of ``release``: distinct bytes per task and tag."""
    for task in KERAS_TASKS:
        staged_files(release, task).keras.write_bytes(f"keras stand-in {tag} {task}\n".encode() + payload)


def stage_stub_release(where: Path, tag: object = 0) -> Path:
    """A staged release (what publish_staged takes) with one small file per task."""
    release = where / f"release-{tag}-{time.monotonic_ns()}"
    for task in TASKS:
        folder = release / task
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(f"{tag} {task}".encode())
        meta = {
            "variant": "A0",
            "task": task,
            "created": "2024-01-01T00:00:00+00:00",
            "weights": {"source": "random"},
            "output": {"name": "x", "num_features": 3},
        }
        (folder / "metadata.json").write_text(json.dumps(meta))
    add_keras_stubs(release, tag)
    stage_release(release)
    return release
