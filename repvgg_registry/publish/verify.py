"""Check a published artifact against its manifest, byte by byte, then load and call it: the
SavedModel with TensorFlow, the ``.keras`` file with ``keras.saving.load_model`` as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..hashing import sha256_file
from .archive import archive_members, walk_files
from .release import CONVERTED_ROLES, ArtifactFiles
from .tasks import output_shapes

#: The input every check runs: small, non-square, mid-grey.
_PROBE_SHAPE = (1, 64, 48, 3)


def _check_file(path: Path, record: dict, problems: list[str]) -> bool:
    """Size and sha256 of one file against its manifest record; False (and a problem) if off."""
    if not path.is_file():
        problems.append(f"{path.name}: missing")
    elif path.stat().st_size != record.get("size", path.stat().st_size):
        problems.append(f"{path.name}: size {path.stat().st_size} != {record['size']} in the manifest")
    elif sha256_file(path) != record["sha256"]:
        problems.append(f"{path.name}: sha256 differs from the manifest")
    else:
        return True
    return False


def _check_folder(folder: Path, manifest: dict, problems: list[str]) -> None:
    listed = {entry["path"]: entry for entry in manifest["files"]}
    try:
        present = (
            {p.relative_to(folder).as_posix(): p for p in walk_files(folder, follow_links=True)}
            if folder.is_dir()
            else {}
        )
    except ValueError as exc:  # a symlinked folder inside a version: never followed (loops)
        problems.append(str(exc))
        return
    for rel, entry in listed.items():
        path = present.get(rel)
        if path is None:
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{rel}: size {path.stat().st_size} != {entry['size']} in the manifest")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
    problems += [f"{rel}: not in the manifest" for rel in present if rel not in listed]


def _check_archive(archive: Path, manifest: dict, problems: list[str]) -> None:
    if not _check_file(archive, manifest["archive"], problems):
        return
    try:
        members = archive_members(archive)
    except Exception as exc:  # a corrupt archive can fail in many ways
        problems.append(f"{archive.name}: unreadable ({exc.__class__.__name__})")
        return
    if members != {entry["path"]: entry["sha256"] for entry in manifest["files"]}:
        problems.append(f"{archive.name}: contents differ from the manifest")


def verify_artifact(files: ArtifactFiles) -> tuple[list[str], dict]:
    """Check every file of one published artifact against its manifest, byte by byte, then load
    and run what it holds (the SavedModel, and the ``.keras``). Returns (problems, signature info);
    each problem is one line naming the file."""
    problems: list[str] = []
    try:
        manifest = json.loads(files.manifest.read_text())
        task = manifest["task"]
        if files.folder is not None:
            _check_folder(files.folder, manifest, problems)
            _check_archive(files.archive, manifest, problems)
        converted = {role: files.roles()[role] for role in CONVERTED_ROLES if role in manifest}
        for role, path in {"keras": files.keras, **converted}.items():
            if role in manifest:
                _check_file(path, manifest[role], problems)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{files.manifest.name}: unreadable manifest ({exc.__class__.__name__})"], {}
    signature: dict = {}
    if not problems and files.folder is not None:
        problems, signature = verify_savedmodel(files.folder, task)
    if not problems and "keras" in manifest:
        problems, keras_signature = verify_keras(files.keras, manifest["output"])
        signature = signature or keras_signature
    for role, path in converted.items():
        if not problems:
            problems = verify_converted(path, role, manifest["output"])
    return problems, signature


def describe_signature(signature: dict) -> str:
    """``serving_default: images -> logits [1, 1000]``: what ``verify`` found, for people."""
    if not signature:
        return "no signature checked"

    def dims(shape) -> str:
        return ", ".join(str(d) for d in shape)

    if "shapes" in signature:  # feature maps: each key with its shape
        shown = ", ".join(f"{key} [{dims(shape)}]" for key, shape in signature["shapes"].items())
        return f"{signature['name']}: {signature['input']} -> {shown}"
    return f"{signature['name']}: {signature['input']} -> {signature['output']} [{dims(signature.get('shape', []))}]"


def verify_savedmodel(folder: Path, task: str) -> tuple[list[str], dict]:
    """Load the SavedModel, check its serving signature and the output shape on a small batch
    against its metadata.json. Returns (problems, signature)."""
    import tensorflow as tf

    try:
        meta = json.loads((folder / "metadata.json").read_text())
        expected = output_shapes(meta["output"], *_PROBE_SHAPE[1:3])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"metadata.json: unreadable ({exc.__class__.__name__})"], {}
    try:
        obj = tf.saved_model.load(str(folder))
        sig = obj.signatures["serving_default"]
        outputs = {k: v.numpy() for k, v in sig(images=tf.constant(np.full(_PROBE_SHAPE, 0.5, np.float32))).items()}
    except Exception as exc:
        return [f"saved_model.pb: does not load or run ({exc.__class__.__name__})"], {}
    problem = _shape_problem(outputs, expected)
    if problem:
        return [f"saved_model.pb: serving_default {problem}"], {}
    return [], _signature("serving_default", {key: outputs[key] for key in expected})  # in network order


def verify_converted(path: Path, role: str, output: dict) -> list[str]:
    """Load a ``.tflite`` or ``.onnx`` file in its runtime (``ai-edge-litert``, onnxruntime) and
    run it on a small batch: the outputs ``output`` promises, finite."""
    from .deploy import RUNNERS
    from .formats import onnx_available

    if role == "onnx" and not onnx_available():
        return []  # checksummed above; running it needs the onnx extra, which verify does not require
    try:
        outputs = RUNNERS[role](path)(np.full(_PROBE_SHAPE, 0.5, np.float32))
    except Exception as exc:
        return [f"{path.name}: does not load or run in its runtime ({exc.__class__.__name__})"]
    problem = _shape_problem(outputs, output_shapes(output, *_PROBE_SHAPE[1:3]))
    return [f"{path.name}: {problem}"] if problem else []


def _shape_problem(outputs: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]]) -> str | None:
    """What is wrong with a probe's outputs against the shapes the metadata promises, or None."""
    if set(outputs) != set(expected):
        return f"gives outputs {sorted(outputs)}, expected {sorted(expected)}"
    for key, shape in expected.items():
        if outputs[key].shape != shape or not np.all(np.isfinite(outputs[key])):
            return f"gives {key} of shape {list(outputs[key].shape)}, expected {list(shape)} and finite values"
    return None


def _signature(name: str, outputs: dict[str, np.ndarray]) -> dict:
    """What ``verify`` reports of a signature: its output (``logits``, or the maps' keys) and shape(s)."""
    keys = list(outputs)
    record = {"name": name, "input": "images", "output": ", ".join(keys), "shape": list(outputs[keys[-1]].shape)}
    if len(keys) > 1:
        record["shapes"] = {key: list(value.shape) for key, value in outputs.items()}
    return record


def _foreign_classes(config: object) -> list[str]:
    """Classes in a ``.keras`` config that are not Keras' own (they would need custom code)."""
    found = []
    if isinstance(config, dict):
        module = config.get("module")
        if "class_name" in config and isinstance(module, str) and module.split(".")[0] != "keras":
            found.append(f"{module}.{config['class_name']}")
        for value in config.values():
            found += _foreign_classes(value)
    elif isinstance(config, list):
        for value in config:
            found += _foreign_classes(value)
    return found


def read_keras_config(path: Path) -> dict:
    """The model config inside a ``.keras`` file (a zip holding ``config.json``), without loading it."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


def verify_keras(path: Path, output: dict) -> tuple[list[str], dict]:
    """Open a ``.keras`` the way a user does (``keras.saving.load_model``, default safe mode), check
    that its config names only Keras' own classes, and run it on a small batch: one finite output
    of the width ``output`` (metadata.json's or the manifest's) promises. Returns (problems, signature)."""
    import keras

    try:
        foreign = _foreign_classes(read_keras_config(path))
    except Exception as exc:  # not a zip, no config.json, not JSON: a truncated or foreign file
        return [f"{path.name}: not a .keras file ({exc.__class__.__name__})"], {}
    if foreign:
        return [f"{path.name}: needs custom code to load ({foreign[0]})"], {}
    expected = output_shapes(output, *_PROBE_SHAPE[1:3])
    try:
        model = keras.saving.load_model(path)
        result = model(np.full(_PROBE_SHAPE, 0.5, np.float32), training=False)
    except Exception as exc:
        return [f"{path.name}: does not load or run with keras.saving.load_model ({exc.__class__.__name__})"], {}
    if isinstance(result, dict):
        outputs = {key: np.asarray(value) for key, value in result.items()}
    else:
        outputs = {next(iter(expected)): np.asarray(result)}
    problem = _shape_problem(outputs, expected)
    if problem:
        return [f"{path.name}: {problem}"], {}
    return [], _signature("keras", outputs)
