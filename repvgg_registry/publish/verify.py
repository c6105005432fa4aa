"""Check a published artifact against its manifest, byte by byte, then load and call it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..hashing import sha256_file
from .archive import archive_members, walk_files
from .tasks import OUTPUT_KEYS


def verify_artifact(folder: Path, archive: Path, manifest_file: Path) -> tuple[list[str], dict]:
    """Return (problems, signature info). Each problem is one line naming the file."""
    problems: list[str] = []
    try:
        manifest = json.loads(manifest_file.read_text())
        listed = {entry["path"]: entry for entry in manifest["files"]}
        task = manifest["task"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{manifest_file.name}: unreadable manifest ({exc.__class__.__name__})"], {}

    try:
        present = (
            {p.relative_to(folder).as_posix(): p for p in walk_files(folder, follow_links=True)}
            if folder.is_dir()
            else {}
        )
    except ValueError as exc:  # a symlinked folder inside a version: never followed (loops)
        return [str(exc)], {}
    for rel, entry in listed.items():
        path = present.get(rel)
        if path is None:
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{rel}: size {path.stat().st_size} != {entry['size']} in the manifest")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
    problems += [f"{rel}: not in the manifest" for rel in present if rel not in listed]

    if not archive.is_file():
        problems.append(f"{archive.name}: missing")
    elif sha256_file(archive) != manifest["archive"]["sha256"]:
        problems.append(f"{archive.name}: sha256 differs from the manifest")
    else:
        try:
            members = archive_members(archive)
        except Exception as exc:  # a corrupt archive can fail in many ways
            problems.append(f"{archive.name}: unreadable ({exc.__class__.__name__})")
        else:
            if members != {rel: entry["sha256"] for rel, entry in listed.items()}:
                problems.append(f"{archive.name}: contents differ from the manifest")

    signature: dict = {}
    if not problems:
        more, signature = verify_savedmodel(folder, task)
        problems += more
    return problems, signature


def describe_signature(signature: dict) -> str:
    """``serving_default: images -> logits [1, 1000]``: what ``verify`` found, for people."""
    if not signature:
        return "no signature checked"
    shape = ", ".join(str(d) for d in signature.get("shape", []))
    return f"{signature['name']}: {signature['input']} -> {signature['output']} [{shape}]"


def verify_savedmodel(folder: Path, task: str) -> tuple[list[str], dict]:
    """Load the SavedModel, check its serving signature and the output shape on a small batch
    against its metadata.json. Returns (problems, signature)."""
    import tensorflow as tf

    problems: list[str] = []
    try:
        meta = json.loads((folder / "metadata.json").read_text())
        width = meta["output"].get("num_classes") or meta["output"].get("num_features")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"metadata.json: unreadable ({exc.__class__.__name__})"], {}
    try:
        obj = tf.saved_model.load(str(folder))
        sig = obj.signatures["serving_default"]
        out = sig(images=tf.constant(np.full((1, 64, 48, 3), 0.5, np.float32)))[OUTPUT_KEYS[task]].numpy()
    except Exception as exc:
        problems.append(f"saved_model.pb: does not load or run ({exc.__class__.__name__})")
        return problems, {}
    if out.shape != (1, width) or not np.all(np.isfinite(out)):
        problems.append(f"saved_model.pb: serving_default gives shape {list(out.shape)}, expected [1, {width}]")
    return problems, {
        "name": "serving_default",
        "input": "images",
        "output": OUTPUT_KEYS[task],
        "shape": list(out.shape),
    }
