"""sha256 of files, streamed: used for checkpoints, artifacts, archives and manifests."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

_CHUNK = 1 << 20


def sha256_stream(stream: BinaryIO) -> str:
    """sha256 of everything left in a binary stream (a file, a tar member), in 1 MiB chunks."""
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)
