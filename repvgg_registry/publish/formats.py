"""The deployment formats a build can add (no TensorFlow here, so the CLI checks ``--formats``
before minutes of work). The converters live in :mod:`.deploy`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable

from ..errors import UsageError

SERVING = "serving"
TFLITE = "tflite"
ONNX = "onnx"
#: ``<task>.int8.tflite``: made only with ``--int8-calibration`` (it needs the user's images).
INT8 = "tflite_int8"
#: What ``--formats`` selects, in build order.
DEPLOY_FORMATS = (SERVING, TFLITE, ONNX)
#: The default of ``--formats`` where it is not given (a comma list, or ``none``): a pipeline that
#: only ever needs the SavedModels sets it once.
FORMATS_ENV = "REPVGG_REGISTRY_FORMATS"
#: What adds the ONNX converter and runtime (tf2onnx, onnxruntime).
ONNX_EXTRA = "pip install 'repvgg-registry[onnx]'"


def onnx_available() -> bool:
    """Whether the ``onnx`` extra (tf2onnx and onnxruntime) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("tf2onnx", "onnxruntime"))


def parse_formats(text: str | None) -> tuple[str, ...] | None:
    """``--formats serving,tflite`` as a tuple; ``none`` (or empty) as ``()``; no option as None."""
    if text is None:
        return None
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def resolve_formats(formats: Iterable[str] | None, *, warn: Callable[[str], None] | None = None) -> tuple[str, ...]:
    """The deployment formats a build makes, in :data:`DEPLOY_FORMATS` order. ``None`` means
    ``$REPVGG_REGISTRY_FORMATS`` if set, else all of them, ONNX only where its extra is installed
    (``warn`` is told, in one line, which extra adds it). Asking for ``onnx`` without the extra, or
    for an unknown format, is a :class:`UsageError`."""
    option = "--formats"
    if formats is None and os.environ.get(FORMATS_ENV, "").strip():
        formats, option = parse_formats(os.environ[FORMATS_ENV]), FORMATS_ENV
    if formats is None:
        chosen = set(DEPLOY_FORMATS)
        if not onnx_available():
            chosen.discard(ONNX)
            if warn is not None:
                warn(f"no .onnx files: the onnx extra is not installed ({ONNX_EXTRA} adds them)")
    else:
        if isinstance(formats, str):
            formats = parse_formats(formats)
        chosen = {f.strip().lower() for f in formats if f.strip()} - {"none"}
        unknown = sorted(chosen - set(DEPLOY_FORMATS))
        if unknown:
            raise UsageError(option, ",".join(unknown), f"use {', '.join(DEPLOY_FORMATS)} or none")
        if ONNX in chosen and not onnx_available():
            raise UsageError(option, ONNX, f"the onnx extra is not installed; {ONNX_EXTRA}, or leave onnx out")
    return tuple(f for f in DEPLOY_FORMATS if f in chosen)
