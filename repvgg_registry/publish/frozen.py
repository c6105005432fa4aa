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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

# Public since TF 2.0 in spirit (TF's own guides use it), private in name: tested in test_artifacts.
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2


@dataclass(frozen=True)
class FrozenSignature:
    """A signature with every variable folded into a constant, called like the original:
    ``frozen(images=batch)`` (or positionally, in the signature's order) returns the same dict
    (``{"logits": ...}`` or ``{"feature_vector": ...}``) with the same values. Numpy arrays and lists
    work, as with ``serving_default`` (the frozen ConcreteFunction itself wants tensors)."""

    function: Any  #: the ConcreteFunction: no variable reads left in its graph
    structure: Any  #: the original's ``structured_outputs``
    inputs: dict[str, tf.TensorSpec]  #: the original's keyword inputs, in order

    @property
    def graph(self) -> tf.Graph:
        """For inspection: every conv filter in it is a constant."""
        return self.function.graph

    def __call__(self, *args, **kwargs) -> dict:
        kwargs.update(zip(self.inputs, args, strict=False))
        tensors = {name: tf.convert_to_tensor(value, dtype=self.inputs[name].dtype) for name, value in kwargs.items()}
        return tf.nest.pack_sequence_as(self.structure, self.function(**tensors))


def freeze_serving(model: str | Path | Any, *, signature: str = "serving_default") -> FrozenSignature:
    """Load ``model`` (a SavedModel folder, or an object from ``tf.saved_model.load``) and return
    its ``signature`` with every variable folded into a constant (:class:`FrozenSignature`)."""
    loaded = tf.saved_model.load(str(Path(model).expanduser())) if isinstance(model, (str, Path)) else model
    try:
        original = loaded.signatures[signature]
    except KeyError:
        names = ", ".join(sorted(loaded.signatures)) or "none"
        raise ValueError(f"no signature {signature!r} in the SavedModel (it has: {names})") from None
    return FrozenSignature(
        function=convert_variables_to_constants_v2(original),
        structure=original.structured_outputs,
        inputs=dict(original.structured_input_signature[1]),
    )
