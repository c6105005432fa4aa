"""Inference-only fast path: a published SavedModel's serving signature with its variables turned
into graph constants, in memory.

Why: TensorFlow's oneDNN convolution keeps its weights in the blocked layout its fastest kernels
want (and reorders them once) only when the filter is a graph constant; for a variable it must
use the weights as they are, in TF's plain HWIO layout, on every call. For wide layers at batch 1
that is up to 2-3x slower per conv (``benchmarks/kernels.py`` shows it layer by layer). The
process-wide switch ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`` treats *every* variable as constant and
silently breaks training; the artifacts themselves keep their weights as variables, stored once,
so that ``hub.KerasLayer(..., trainable=True)`` can fine-tune them.

A process that only serves can instead take a frozen copy of the signature. Only that copy sees
constants: the loaded model, its variables, fine-tuning and every other model in the process are
unaffected. The copy is a snapshot: later changes to the variables do not reach it (freeze again),
and it holds a second copy of the weights in memory.

Serve the frozen copy from a process that does not also run the unfrozen graph: TF's oneDNN
primitive cache is shared by the whole process and keyed by shapes, not by the weights' layout,
so a plain and a frozen graph with the same conv shapes pick up each other's primitives and the
speed-up comes and goes (measured: B1g4 at batch 1 was 1.76x faster alone, 1.0-1.6x side by side).
Results are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

# Public since TF 2.0 in spirit (TF's own guides use it), private in name: tested in test_artifacts.
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2


def freeze_serving(model: str | Path | Any, *, signature: str = "serving_default") -> Callable[..., dict]:
    """Load ``model`` (a SavedModel folder, or an object from ``tf.saved_model.load``) and return
    its ``signature`` with every variable folded into a constant.

    The result is called like the signature, ``frozen(images=batch)``, and returns the same dict
    (``{"logits": ...}`` or ``{"feature_vector": ...}``) with the same values.
    """
    loaded = tf.saved_model.load(str(Path(model).expanduser())) if isinstance(model, (str, Path)) else model
    try:
        original = loaded.signatures[signature]
    except KeyError:
        names = ", ".join(sorted(loaded.signatures)) or "none"
        raise ValueError(f"no signature {signature!r} in the SavedModel (it has: {names})") from None
    frozen = convert_variables_to_constants_v2(original)
    structure = original.structured_outputs
    input_names = [spec.name for spec in original.structured_input_signature[1].values()]

    dtypes = {name: spec.dtype for name, spec in original.structured_input_signature[1].items()}

    def call(*args, **kwargs) -> dict:
        if args:  # positional, in the signature's order, like the original accepts
            kwargs.update(zip(input_names, args, strict=False))
        # numpy arrays and lists work, as with serving_default (a frozen ConcreteFunction wants tensors)
        kwargs = {name: tf.convert_to_tensor(value, dtype=dtypes.get(name)) for name, value in kwargs.items()}
        outputs = frozen(**kwargs)
        return tf.nest.pack_sequence_as(structure, outputs)

    call.graph = frozen.graph  # for inspection: no variable reads left in it
    return call
