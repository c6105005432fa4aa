"""Helpers for tests that play a downstream Keras 3 user: run a script in a child process (where
``import repvgg_registry`` is made to fail) and inspect what a ``.keras`` file's config names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

#: Every layer class a RepVGG graph uses (REFERENCE section 8), ``Normalization`` for the
#: preprocessing of the published files.
KERAS_LAYERS = {
    "InputLayer",
    "Normalization",
    "ZeroPadding2D",
    "Conv2D",
    "BatchNormalization",
    "MaxPooling2D",
    "Add",
    "ReLU",
    "GlobalAveragePooling2D",
    "Dense",
    "Multiply",
}

#: The first lines of every consumer script: from here on ``import repvgg_registry`` raises.
BLOCK_PACKAGE = """
import sys

sys.modules["repvgg_registry"] = None  # any import of the package now raises ImportError
try:
    import repvgg_registry  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("repvgg_registry is importable; the test proves nothing")
"""


def _child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.pop("PYTHONPATH", None)  # tests/ and the checkout stay out of the consumer's path
    return env


def run_script(script: Path, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def config_objects(path: Path) -> list[dict]:
    """Every serialised object in a .keras file's config.json."""
    with zipfile.ZipFile(path) as archive:
        return keras_objects(json.loads(archive.read("config.json")))


def keras_objects(config) -> list[dict]:
    """Every serialised object (a dict with a ``class_name``) in a Keras config."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "class_name" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def assert_only_keras_classes(objects: list[dict], label: str) -> None:
    for obj in objects:
        if obj["class_name"] == "__keras_tensor__":  # a reference to a layer's output, not a class
            continue
        module = obj.get("module") or ""
        registered = obj.get("registered_name") or ""
        assert module == "keras" or module.startswith("keras."), f"{label}: {obj['class_name']} from {module!r}"
        assert "repvgg" not in registered.lower() and "repvgg" not in module.lower(), f"{label}: {obj}"
        assert obj["class_name"] != "Lambda", label
